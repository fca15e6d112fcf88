"""The lab's own Python processes in containers (docker provider): the ``app`` image and its launcher.

Under the docker provider, ``Backend`` (notebook 12, ``labkit up --backend``) runs its web
tier, Celery workers and invalidation service in containers of ``containers/app/Dockerfile``,
as the servers run in theirs. The image is Debian bookworm's Python 3.11 with the Python
packages those processes import, copied into the build context from the environment labkit runs
in (``site_packages``): the exact versions the lab is tested with, and a build that needs no
package index (where the machine reaches PyPI only through a proxy whose certificate authority
the host alone trusts, ``pip`` inside a build cannot). labkit itself is mounted read-only from
the host, so the processes run the code of the lab that starts them and an edit to labkit needs
no new image.

A container runs one process (``AppContainers``, a drop-in for ``labkit._proc.spawn``): host
network (the lab's servers at the addresses the host uses), host pid namespace (the process's
pid is the one the host sees: ``Proc``, ``labkit status``, ``stop``, the nemesis's ``kill -9``
and ``labkit down``'s sweep act on it unchanged), the lab directory at its own path, the lab's
labels, removed by the engine when its process ends.

>>> launcher = AppContainers(DockerLab(lab.config))                         # doctest: +SKIP
>>> launcher("celery-0", [sys.executable, "-m", "labkit.backend.workers", cfg],
...          cwd=workdir, log_path=workdir / "worker-0.log", user=None)  # doctest: +SKIP
Proc(name='celery-0', pid=81234, create_time=...)
"""

from __future__ import annotations

import importlib.metadata as md
import itertools
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from labkit._proc import Proc, ServiceError, process_env

#: Python inside the image (Debian bookworm's): the copied packages' binaries are built for it.
PYTHON = (3, 11)
#: Where the host's labkit package is mounted (``PYTHONPATH`` in the Dockerfile names it).
SOURCE = "/opt/labkit/src/labkit"
#: Dependencies of labkit and its ``backend`` extra that only the host's experiments import
#: (plots, statistics, profiling, the report): left out of the image, which they would double.
HOST_ONLY = frozenset({"matplotlib", "scipy", "numpy", "py-spy", "mistune"})


def _key(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def distributions() -> list[md.Distribution]:
    """The installed distributions the image needs: labkit's dependencies and its ``backend``
    extra, without ``HOST_ONLY``, and everything they depend on (markers evaluated here)."""
    from packaging.requirements import Requirement
    found: dict[str, md.Distribution] = {}
    extras_seen: dict[str, set[str]] = {}

    def visit(spec: str) -> None:
        req = Requirement(spec)
        key = _key(req.name)
        if key in HOST_ONLY:
            return
        new = set(req.extras) - extras_seen.get(key, set())
        if key in found and not new:
            return
        try:
            dist = found.get(key) or md.distribution(req.name)
        except md.PackageNotFoundError:
            raise ServiceError(f"{req.name} (needed by the app image) is not installed where "
                               f"labkit runs ({sys.prefix}): install labkit with its backend "
                               "extra (`bash containers/bootstrap.sh`)") from None
        found[key] = dist
        extras_seen.setdefault(key, set()).update(req.extras)
        for dep in dist.requires or []:
            sub = Requirement(dep)
            envs = [{"extra": e} for e in (req.extras or {""})]
            if sub.marker is None or any(sub.marker.evaluate(e) for e in envs):
                visit(dep)

    visit("labkit[backend]")
    found.pop("labkit")  # mounted from the host, not copied
    return sorted(found.values(), key=lambda d: _key(d.metadata["Name"]))


def pins() -> list[str]:
    """``name==version`` of every distribution the image holds (part of the image's hash)."""
    return [f"{d.metadata['Name']}=={d.version}" for d in distributions()]


def check_python() -> None:
    if sys.version_info[:2] != PYTHON:
        raise ServiceError(
            f"the app image runs Debian bookworm's Python {PYTHON[0]}.{PYTHON[1]}, and its packages "
            f"are copied from the environment labkit runs in, which is Python "
            f"{sys.version_info[0]}.{sys.version_info[1]}: their compiled parts would not load. "
            "Run labkit on Python 3.11 for the backend in containers, or run the backend's "
            "processes on the host (Backend(lab, containers=False))")


def site_packages(dest: Path) -> Path:
    """Copy every file of ``distributions()`` that lives in site-packages into ``dest``.

    Files a distribution installs elsewhere (its console scripts in ``bin/``) are left out:
    the processes run as ``python3 -m ...``.
    """
    check_python()
    for dist in distributions():
        for f in dist.files or []:
            if f.parts and f.parts[0] == "..":
                continue
            src = Path(dist.locate_file(f))
            if not src.is_file() or "__pycache__" in f.parts:
                continue
            target = dest / f
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    (dest / "labkit-pins.txt").write_text("\n".join(pins()) + "\n")
    return dest


def labkit_source() -> Path:
    """The host's labkit package directory (an editable checkout's, or site-packages')."""
    import labkit
    return Path(labkit.__file__).resolve().parent


class AppContainers:
    """Starts a lab's Python process in a container of the app image; same call as ``spawn``.

    ``cmd[0]`` must be a Python interpreter (``sys.executable``): it becomes the image's
    ``python3``; anything else is no process of the lab's own and is refused.
    """

    _count = itertools.count()

    def __init__(self, docker: Any) -> None:
        self.docker = docker  # a labkit.providers.docker.DockerLab

    def __call__(self, name: str, cmd: list[str], *, cwd: Path, log_path: Path,
                 user: str | None, env: Mapping[str, str] | None = None) -> Proc:
        if user is not None:
            raise ServiceError(f"{name}: the app image runs the lab's processes as the user "
                               f"that starts them, not as {user}")
        if not Path(cmd[0]).name.startswith("python"):
            raise ServiceError(f"{name}: only the lab's Python processes run in the app image, "
                               f"not {cmd[0]}")
        cwd, log_path = Path(cwd).resolve(), Path(log_path).resolve()
        lab_dir = Path(self.docker.config.lab_dir).resolve()
        mounts = {str(lab_dir): lab_dir}
        for path in (cwd, log_path.parent):  # a helper's directory outside the lab's
            if not path.is_relative_to(lab_dir):
                mounts[str(path)] = path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.touch()
        # `sh -c 'exec "$@" >> log'`: the log file as spawn's; exec keeps the one pid.
        command = ["sh", "-c", 'exec "$@" >>"$LABKIT_LOG" 2>&1', "sh", "python3", *cmd[1:]]
        environment = {**process_env(name, cwd, env), "LABKIT_LOG": str(log_path)}
        del environment["PATH"]  # the image's own
        container_name = self.docker.container_name(
            f"{name}-{os.getpid()}-{next(self._count)}")
        container = self.docker.run(
            "app", container_name, command=command, env=environment,
            mounts={**{host: (host, "rw") for host in mounts},
                    str(labkit_source()): (SOURCE, "ro")},
            network_mode="host", pid_mode="host", working_dir=str(cwd),
            user=f"{os.getuid()}:{os.getgid()}", auto_remove=True)
        return _host_proc(name, container, log_path)


def _host_proc(name: str, container: Any, log_path: Path) -> Proc:
    """The container's process as the host sees it (its pid in the host's namespace)."""
    import docker.errors
    import psutil
    for _ in range(50):
        try:
            container.reload()
        except docker.errors.NotFound:  # ended at once, and the engine removed it
            break
        pid = container.attrs["State"]["Pid"]
        if pid:
            try:
                return Proc(name, pid, psutil.Process(pid).create_time())
            except psutil.Error:
                break
        if container.status in ("exited", "dead"):
            break
        time.sleep(0.1)
    tail = log_path.read_text(errors="replace").splitlines()[-10:] if log_path.exists() else []
    raise ServiceError(f"{name}: its container {container.name} ended as it started:\n  "
                       + "\n  ".join(tail))
