"""The docker provider's images: built once from ``containers/<service>/Dockerfile``, then reused.

Each image is tagged ``labkit/<service>:<hash>``, the hash being that of its build context
(the service's template directory: Dockerfile, entrypoint, config files) and of the base
image's id, so an edited Dockerfile or a new base builds anew and anything else is reused
as it is (``labkit images build`` twice: the second does nothing). Every image carries the
label ``labkit.image=<service>``; nothing here ever removes an image.

The base, ``debian:bookworm``, is used if the engine has it (pulled where Docker Hub answers,
or made earlier); where it is missing it is made from Debian's own packages, as no registry
may answer: ``debootstrap --variant=minbase bookworm`` into a temporary directory, then
``docker import`` of that tree (about 80 s, once per engine). Builds run with
``network_mode="host"`` so ``apt-get`` inside reaches the same mirrors as the machine.

>>> build_all(docker.from_env(), ["memcached"])            # doctest: +SKIP
{'memcached': 'labkit/memcached:3f1a...'}
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from labkit._proc import ServiceError
from labkit.services.templates import template_dir

BASE = "debian:bookworm"
#: The images the provider runs: the servers', and ``app``, the lab's own Python processes
#: (``labkit.providers.app_image``).
SERVICES = ("postgres", "memcached", "rabbitmq", "cassandra", "app")
LABEL = "labkit.image"
DEBIAN_MIRROR = "http://deb.debian.org/debian"


def context_hash(service: str, base_id: str) -> str:
    """The hash naming ``service``'s image: every file of its template directory, and the base.

    Cassandra's jars are not hashed: its ``pom.xml`` (in the directory) names the version they
    are resolved for. The app image's Python packages are, by name and version.
    """
    h = hashlib.sha256(base_id.encode())
    if service == "app":
        from labkit.providers import app_image
        h.update("\n".join(app_image.pins()).encode())
    root = template_dir(service)
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def tag(service: str, base_id: str, repo: str = "labkit") -> str:
    return f"{repo}/{service}:{context_hash(service, base_id)}"


def base_image(client: Any, say: Callable[[str], None] = print) -> str:
    """The id of ``debian:bookworm`` on this engine, made with debootstrap when it is missing."""
    import docker.errors
    try:
        return client.images.get(BASE).id
    except docker.errors.ImageNotFound:
        return make_base(client, BASE, say)


def make_base(client: Any, name: str, say: Callable[[str], None] = print) -> str:
    """Make image ``name`` (``repo:tag``) from ``debootstrap --variant=minbase bookworm``; its id."""
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise ServiceError(f"the engine has no {BASE} image and debootstrap is not installed to "
                           f"make one: `apt-get install debootstrap` (or `docker pull {BASE}` "
                           "where Docker Hub answers), then `labkit images build`")
    t0 = time.monotonic()
    say(f"making {name} with debootstrap (once per engine; about a minute or two)")
    with tempfile.TemporaryDirectory(prefix="labkit-debootstrap-") as tmp:
        root = f"{tmp}/root"
        run = subprocess.run([debootstrap, "--variant=minbase", "bookworm", root, DEBIAN_MIRROR],
                             capture_output=True, text=True)
        if run.returncode != 0:
            raise ServiceError(f"debootstrap failed ({run.returncode}): "
                               f"{(run.stderr or run.stdout)[-800:]}; it needs root and "
                               f"{DEBIAN_MIRROR} reachable")
        image_id = import_tree(client, root, name)
    say(f"made {name} in {time.monotonic() - t0:.0f} s")
    return image_id


def import_tree(client: Any, root: str, name: str) -> str:
    """``tar -C root -c . | docker import - name``: the tree as an image's one layer; its id.

    Through a tar file beside ``root``, not a pipe: the SDK's import_image_from_stream sends
    a raw body labelled chunked, which the engine refuses ("invalid byte in chunk length").
    """
    tarball = f"{root}.tar"
    try:
        subprocess.run(["tar", "-C", root, "-cf", tarball, "."], check=True)
        repo, _, version = name.partition(":")
        client.api.import_image_from_file(tarball, repository=repo, tag=version,
                                          changes=['CMD ["bash"]'])
    finally:
        Path(tarball).unlink(missing_ok=True)
    return client.images.get(name).id


@contextlib.contextmanager
def build_context(service: str, config: Any) -> Iterator[Path]:
    """The directory ``service``'s image is built from: its template directory, for Cassandra
    a copy of it with the jars beside it (``lib/``), for the app one with the Python packages
    (``site/``, ``app_image.site_packages``).

    The jars are the ones the native provider runs, resolved by Maven into the lab's cache
    (``config.cache_dir``; once per version): a build needs no Maven of its own, and none that
    trusts whatever certificate authority the machine's way to Maven Central needs. The same
    holds for the app's packages and PyPI.
    """
    if service not in ("cassandra", "app"):
        yield template_dir(service)
        return
    with tempfile.TemporaryDirectory(prefix=f"labkit-image-{service}-") as tmp:
        ctx = Path(tmp) / "context"
        shutil.copytree(template_dir(service), ctx,
                        ignore=shutil.ignore_patterns("__pycache__"))
        if service == "cassandra":
            from labkit.services.cassandra.jars import resolve_jars
            shutil.copytree(resolve_jars(config.cache_dir, mvn=config.mvn_bin), ctx / "lib")
        else:
            from labkit.providers import app_image
            app_image.site_packages(ctx / "site")
        yield ctx


def build(client: Any, service: str, base_id: str, say: Callable[[str], None] = print, *,
          config: Any = None, repo: str = "labkit", nocache: bool = False) -> str:
    """The tag of ``service``'s image, built now unless one with its context hash exists.

    ``config`` (a LabConfig; the default one if None) says where Cassandra's jars are cached.
    ``repo`` and ``nocache`` are for benchmarks/startup.py's cold builds (a tag of its own,
    every layer built again); the lab's images are ``labkit/<service>``.
    """
    import docker.errors
    name = tag(service, base_id, repo)
    try:
        client.images.get(name)
        if not nocache:
            return name
    except docker.errors.ImageNotFound:
        pass
    t0 = time.monotonic()
    say(f"building {name} from {template_dir(service) / 'Dockerfile'}")
    if config is None:
        from labkit.config import LabConfig
        config = LabConfig.load()
    try:
        with build_context(service, config) as path:
            client.images.build(path=str(path), tag=name, network_mode="host",
                                labels={LABEL: service}, rm=True, forcerm=True, nocache=nocache)
    except docker.errors.BuildError as e:
        log = "".join(str(c.get("stream", c.get("error", ""))) for c in e.build_log)[-1500:]
        raise ServiceError(f"building {name} failed: {e.msg}\n{log}\nFix "
                           f"containers/{service}/Dockerfile, then `labkit images build`") from None
    say(f"built {name} in {time.monotonic() - t0:.0f} s")
    return name


def build_all(client: Any, services: tuple[str, ...] | list[str] = SERVICES,
              say: Callable[[str], None] = print, *, config: Any = None) -> dict[str, str]:
    """Every image asked for (the base first): ``{service: tag}``."""
    unknown = [s for s in services if s not in SERVICES]
    if unknown:
        raise ServiceError(f"no image for {', '.join(unknown)}: the docker provider has images "
                           f"for {', '.join(SERVICES)}")
    base_id = base_image(client, say)
    return {s: build(client, s, base_id, say, config=config) for s in services}


def image_for(client: Any, service: str, say: Callable[[str], None] = print, *,
              config: Any = None) -> str:
    """The tag of ``service``'s image, building it (and the base) when missing."""
    return build_all(client, [service], say, config=config)[service]


def built(client: Any) -> dict[str, list[str]]:
    """The lab's images on this engine, by service (``labkit doctor``)."""
    out: dict[str, list[str]] = {}
    for img in client.images.list(filters={"label": LABEL}):
        out.setdefault(img.labels.get(LABEL, "?"), []).extend(img.tags)
    return out
