"""The docker provider: the lab's servers as containers on a Docker engine, via testcontainers.

Each server is the class it is under ``native`` (the same accessors: ``leader.dsn()``,
``host_port``, ``broker_url``, ``connect()``, ``set_delay``, ``lag``), with its lifecycle
replaced by ``DockerService``, a mixin placed before it (as ``external.py`` does): ``start``
creates the container from the lab's image (``labkit.providers.images``; built at the first
``up`` if missing) with testcontainers-python's ``DockerContainer``, publishes its port on
the host's 127.0.0.1 only, at the port the lab allocated (so addresses look as native ones),
and waits for the same readiness check over the real protocol; ``stop``/``start`` are
``docker stop``/``docker start`` (the container, and its data, stay), ``pause``/``resume``
are ``docker pause``/``unpause``. PostgreSQL's leader and followers share one image and meet
on the lab's private network (``labkit-<lab id>``) by container name; a follower's delay is
set over SQL as natively. The leader's heartbeat writer stays a host process (it only needs
the leader's published port).

The lab is its own janitor (Ryuk, testcontainers' reaper, cannot be pulled where no registry
answers, so it is disabled): every container and the network carry the label
``labkit.lab=<lab id>`` (the id of the lab directory's marker), and before anything is
created the lab directory records that it uses Docker (``docker.json``). ``labkit down``
then removes whatever carries the label, also after ``kill -9`` of the process that started
them (the state file may not list them; the label does). Nothing unlabelled is touched, and
no image is ever removed.

Cassandra's nodes (``labkit.providers.docker_cassandra``) run one image too; each publishes
its CQL port on its own loopback address (127.0.0.N, as natively), and gossips with the
others of its cluster on the lab's network.

Why testcontainers and the Docker SDK rather than the ``docker`` CLI: the brief's choice
(testcontainers creates the containers), and the SDK comes with it; reattaching from another
process (``labkit status``, ``down``) looks containers up by name with the SDK.

>>> lab = lk.up(provider="docker", followers=1)      # doctest: +SKIP
>>> lab.leader.container_name, lab.leader.address    # doctest: +SKIP
('labkit-3f2a9c1d7e4b-leader', '127.0.0.1:40001')
>>> lab.memcached[0].pause()                         # docker pause      # doctest: +SKIP
>>> lk.down()                             # removes containers and network  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from functools import cached_property
from pathlib import Path
from typing import Any

from labkit._labdir import read_marker, record
from labkit._proc import ServiceError, wait_ready
from labkit.config import LabConfig
from labkit.providers.base import Provider, Verdict
from labkit.providers.engine import INSTALL, engine_version
from labkit.services.memcached import Memcached
from labkit.services.postgres import Postgres, PostgresServer
from labkit.services.rabbitmq import RabbitMQ

LABEL = "labkit.lab"          # the lab id, on every container and network the lab makes
LABEL_DIR = "labkit.lab_dir"  # the lab directory, for whoever lists them
RECORD = "docker.json"        # in the lab directory: this lab made containers (down sweeps)
STOP_TIMEOUT_S = 10
# The servers of one `up` start in parallel threads: one makes the network, one at a time
# builds a missing image (the base is shared, and two builds on 2 cores gain nothing).
_PREPARE = threading.Lock()


def client(docker_host: str) -> Any:
    """A Docker SDK client for the engine at ``docker_host``."""
    try:
        import docker
    except ImportError:
        raise ServiceError("the docker provider needs the Docker SDK and testcontainers: "
                           "`pip install -e .` in the lab's .venv (bash containers/bootstrap.sh)"
                           ) from None
    try:
        c = docker.DockerClient(base_url=docker_host, timeout=120)
        c.ping()
    except Exception as e:
        raise ServiceError(f"no Docker engine answers at {docker_host} ({e}): {INSTALL}") from None
    return c


class DockerLab:
    """One lab on one engine: its client, its id (the label), its private network."""

    def __init__(self, config: LabConfig) -> None:
        marker = read_marker(config.lab_dir)
        if marker is None:
            raise ServiceError(f"{config.lab_dir} is no lab directory yet; `labkit up` makes it one")
        self.config, self.lab_id = config, marker.lab_id
        self.docker_host = config.docker_host
        self.network = f"labkit-{self.lab_id[:12]}"

    @cached_property
    def client(self) -> Any:
        return client(self.docker_host)

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL: self.lab_id, LABEL_DIR: str(self.config.lab_dir)}

    def container_name(self, server: str) -> str:
        return f"{self.network}-{server}"

    def prepare(self) -> None:
        """Before the first container: record that this lab uses Docker, make its network."""
        import docker.errors
        with _PREPARE:
            path = self.config.lab_dir / RECORD
            if not path.exists():
                record(path)
                path.write_text(json.dumps({"docker_host": self.docker_host,
                                            "network": self.network, "lab_id": self.lab_id}))
            try:
                self.client.networks.get(self.network)
            except docker.errors.NotFound:
                self.client.networks.create(self.network, driver="bridge", labels=self.labels,
                                            check_duplicate=True)

    def image(self, service: str) -> str:
        from labkit.providers import images
        with _PREPARE:
            return images.image_for(self.client, service, say=_say, config=self.config)

    def run(self, image_service: str, name: str, *, command: list[str] | None,
            env: dict[str, str], ports: dict[str, tuple[str, int]] | None = None,
            mounts: dict[str, tuple[str, str]] | None = None, **kwargs: Any) -> Any:
        """Start container ``name`` of the lab from ``image_service``'s image (built if missing)
        with testcontainers, labelled with the lab; the Docker SDK's container.

        ``ports``: {port inside: (host address, host port)}; ``mounts``: {host path: (path
        inside, "ro" or "rw")}; ``kwargs`` go to the engine as they are (network, hostname, ...).
        """
        from testcontainers.core.config import testcontainers_config
        from testcontainers.core.container import DockerContainer
        # Ryuk (the reaper) is an image to pull; the lab removes its containers itself.
        testcontainers_config.ryuk_disabled = True
        self.prepare()
        image = self.image(image_service)
        engine = {"environment": {"DOCKER_HOST": self.docker_host}}  # docker.from_env's
        tc = DockerContainer(image, docker_client_kw=engine, name=name, env=env, command=command)
        # with_bind_ports takes no host address; the Docker SDK's ports do: loopback only.
        tc.ports.update(ports or {})  # type: ignore[arg-type]
        for host, (inside, mode) in (mounts or {}).items():
            tc.with_volume_mapping(host, inside, mode)  # type: ignore[arg-type]
        return tc.with_kwargs(labels=self.labels, **kwargs).start().get_wrapped_container()


def _say(line: str) -> None:
    import sys
    print(f"[docker] {line}", file=sys.stderr, flush=True)


class DockerService:
    """Mixin, placed before a server class: the server runs in a container of the lab's.

    A subclass says its ``image_service`` (``containers/<it>/Dockerfile``), the port it listens
    on inside (``container_port``), and its ``container_env``/``container_command``.
    """

    image_service: str
    container_port: int
    docker: DockerLab

    def container_env(self) -> dict[str, str]:
        return {}

    def container_command(self) -> list[str] | None:
        return None

    def published(self) -> dict[str, tuple[str, int]]:
        """{port inside: (host address, host port)}: the lab's port, on the host's loopback only."""
        return {f"{self.container_port}/tcp": ("127.0.0.1", self.port)}  # type: ignore[attr-defined]

    @property
    def container_name(self) -> str:
        return self.docker.container_name(self.name)

    def container(self) -> Any | None:
        import docker.errors
        try:
            return self.docker.client.containers.get(self.container_name)
        except docker.errors.NotFound:
            return None

    def _status(self) -> str:
        c = self.container()
        return c.status if c is not None else "missing"

    def start(self) -> Any:
        """Create (or restart) the container; return once it answers over its protocol."""
        t0 = time.monotonic()
        c = self.container()
        if c is None:
            self._create()
        elif c.status == "paused":
            c.unpause()
        elif c.status != "running":
            c.start()
        try:
            wait_ready(f"{self.name} (container {self.container_name})", self._ready_or_dead,
                       timeout_s=self.timeout_s)
        except ServiceError as e:
            raise ServiceError(f"{e}{self.log_tail()}") from None
        self.startup_s = time.monotonic() - t0
        return self

    def _create(self) -> None:
        self.docker.run(self.image_service, self.container_name, command=self.container_command(),
                        env=self.container_env(), ports=self.published(),
                        network=self.docker.network, hostname=self.name)

    def _ready_or_dead(self) -> bool:
        status = self._status()
        if status in ("exited", "dead", "missing"):
            raise ServiceError(f"container {self.container_name} is {status}")
        return self.ready()

    def run_inside(self, cmd: list[str], *, what: str, user: str = "",
                   error: type[ServiceError] = ServiceError) -> str:
        """Run ``cmd`` in the running container (``docker exec``); its stdout.

        Fails, naming ``what`` and the command's output, when the container is not running or
        the command exits non-zero (raised as ``error``).
        """
        c = self.container()
        if c is None or c.status != "running":
            raise error(f"{self.name} is not running ({self._status()}): start it first "
                        "(`labkit up`)")
        code, out = c.exec_run(cmd, user=user, demux=True)
        stdout, stderr = (b.decode(errors="replace") if b else "" for b in out)
        if code != 0:
            raise error(f"{what} on {self.name} failed (exit {code}): "
                        f"{(stderr or stdout).strip()[-2000:]}")
        return stdout

    def stop(self) -> None:
        """``docker stop``: the container and its data stay (``labkit down`` removes them)."""
        c = self.container()
        if c is not None and c.status in ("running", "paused", "restarting"):
            if c.status == "paused":
                c.unpause()
            c.stop(timeout=STOP_TIMEOUT_S)

    def running(self) -> bool:
        return self._status() in ("running", "paused")

    def pause(self) -> None:
        """``docker pause``: every process of the server frozen (the cgroup freezer)."""
        c = self.container()
        if c is None or c.status != "running":
            raise ServiceError(f"{self.name} is not running ({self._status()}); start it first")
        c.pause()

    def resume(self) -> None:
        """``docker unpause``."""
        c = self.container()
        if c is not None and c.status == "paused":
            c.unpause()

    @property
    def procs(self) -> list[Any]:
        return []  # no process of the host's: the container is the server

    @procs.setter
    def procs(self, value: Any) -> None:
        pass

    def log_tail(self, lines: int = 15) -> str:
        c = self.container()
        if c is None:
            return ""
        tail = c.logs(tail=lines).decode(errors="replace").rstrip()
        return f"\nLast lines of `docker logs {self.container_name}`:\n  " + tail.replace(
            "\n", "\n  ") if tail else ""

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "provider": "docker", "container": self.container_name,
                "host": self.host, **self._state()}

    def restore(self, state: dict[str, Any]) -> Any:
        self._restore(state)
        return self

    def __repr__(self) -> str:
        return f"<docker {type(self).__mro__[2].__name__} {self.name} {self.address} {self._status()}>"


# ------------------------------------------------------------------------------ PostgreSQL

class DockerPostgresServer(DockerService, PostgresServer):
    """A PostgreSQL leader or follower in a container (one image; entrypoint.sh tells them apart)."""

    image_service, container_port = "postgres", 5432

    @property
    def initialized(self) -> bool:
        return self.container() is not None

    def container_env(self) -> dict[str, str]:
        env = {"LABKIT_PG_PASSWORD": self.password}
        if self.is_follower:
            assert isinstance(self.leader, DockerPostgresServer)
            env.update(LABKIT_LEADER_HOST=self.leader.container_name, LABKIT_NAME=self.name)
        return env

    def _create(self) -> None:
        if self.is_follower:
            assert self.leader is not None
            self.leader.drop_idle_slot(self.name)
        super()._create()

    def discard(self) -> None:
        """Throw this server's data away: its container goes (the data lives in it)."""
        c = self.container()
        if c is not None:
            c.remove(force=True)


class DockerPostgres(Postgres):
    """A leader and its followers in containers on the lab's network."""

    server_class = DockerPostgresServer

    def __init__(self, workdir: Path, *, docker: DockerLab, **kwargs: Any) -> None:
        super().__init__(workdir, **kwargs)
        for s in self.servers:
            s.docker = docker  # type: ignore[attr-defined]


# --------------------------------------------------------------------- Memcached, RabbitMQ

class DockerMemcached(DockerService, Memcached):
    """One memcached in a container."""

    image_service, container_port = "memcached", 11211

    def container_command(self) -> list[str]:
        return ["-m", str(self.memory_mb), "-t", str(self.threads)]


class DockerRabbitMQ(DockerService, RabbitMQ):
    """One RabbitMQ node in a container, with the lab's user and vhost."""

    image_service, container_port = "rabbitmq", 5672

    def container_env(self) -> dict[str, str]:
        return {"LABKIT_RABBITMQ_CONF": self.render_conf("0.0.0.0", self.container_port)}

    def ctl(self, *args: str, timeout_s: float = 60.0) -> str:
        """``rabbitmqctl ARGS`` inside the container (its node name and cookie are there)."""
        return self.run_inside(["rabbitmqctl", "--timeout", str(int(timeout_s)), *args],
                               what=f"rabbitmqctl {' '.join(args)}", user="rabbitmq")


# ------------------------------------------------------------------------------- builders

def postgres(ctx: Any, saved: dict[str, Any] | None, followers: int) -> DockerPostgres:
    cfg = ctx.config
    pg = DockerPostgres(cfg.lab_dir / "postgres", docker=DockerLab(cfg),
                        password=ctx.secrets["pg_password"], followers=followers,
                        synchronous_commit=cfg.synchronous_commit, ports=ctx.ports,
                        timeout_s=cfg.startup_timeout_s, host="127.0.0.1")
    if saved is not None:
        pg.restore(saved)
    return pg


def memcached(ctx: Any, saved: list[dict[str, Any]] | None, n: int) -> list[DockerMemcached]:
    cfg, lab = ctx.config, DockerLab(ctx.config)
    servers = [DockerMemcached(cfg.lab_dir / f"memcached-{i}", index=i, port=ctx.ports.take(),
                               memory_mb=cfg.memcached_memory_mb, host="127.0.0.1",
                               timeout_s=cfg.startup_timeout_s)
               for i in range(n)]
    for m in servers:  # every one, also those the state file does not list yet
        m.docker = lab
    for m, s in zip(servers, saved or []):
        m.restore(s)
    return servers


def rabbitmq(ctx: Any, saved: dict[str, Any] | None) -> DockerRabbitMQ:
    cfg, creds = ctx.config, ctx.secrets
    mq = DockerRabbitMQ(cfg.lab_dir / "rabbitmq", username=creds["mq_user"],
                        password=creds["mq_password"], vhost=creds["mq_vhost"],
                        port=ctx.ports.take(), host="127.0.0.1",
                        timeout_s=cfg.startup_timeout_s)
    mq.docker = DockerLab(cfg)
    if saved is not None:
        mq.restore(saved)
    return mq


# ------------------------------------------------------------------------------- janitor

def sweep(config: LabConfig) -> list[str]:
    """Remove every container and network labelled with this lab's id; their names.

    Only for a lab directory that records Docker use (``docker.json``), so a native lab's
    ``down`` never asks an engine. Containers first (a network in use cannot go).
    """
    path = config.lab_dir / RECORD
    marker = read_marker(config.lab_dir)
    if not path.exists() or marker is None:
        return []
    import docker.errors
    saved = json.loads(path.read_text())
    api = client(saved.get("docker_host", config.docker_host)).api
    gone = []
    flt = {"label": f"{LABEL}={marker.lab_id}"}
    # The low-level lists: the high-level ones inspect what they list, and fail on one that
    # goes in between. One already gone is as good as removed.
    for ctr in api.containers(all=True, filters=flt):
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_container(ctr["Id"], force=True, v=True)
        gone.append(ctr["Names"][0].lstrip("/"))
    for net in api.networks(filters=flt):
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_network(net["Id"])
        gone.append(f"network {net['Name']}")
    path.unlink()
    return gone


class DockerProvider(Provider):
    """Containers on a Docker engine, from images built here (see the module docstring)."""

    name = "docker"
    manages = True

    def check(self, config: LabConfig) -> Verdict:
        try:
            version = engine_version(config.docker_host)
        except (OSError, ValueError) as e:
            return Verdict(self.name, False, f"no Docker engine answers at {config.docker_host} "
                                             f"({e}): {INSTALL}")
        try:
            import testcontainers  # noqa: F401
        except ImportError:
            return Verdict(self.name, False, f"Docker engine {version} answers, but "
                           "testcontainers is not installed: `pip install -e .` in the lab's "
                           ".venv (bash containers/bootstrap.sh)")
        from labkit.providers import images
        try:
            have = ", ".join(sorted(images.built(client(config.docker_host)))) or "none yet"
        except Exception as e:  # an engine that answers /_ping but not the image list
            have = f"could not list them ({type(e).__name__})"
        return Verdict(self.name, True, f"Docker engine {version} answers at "
                                        f"{config.docker_host}; images built: {have} "
                                        "(`labkit images build` makes the rest)")

    def launcher(self, config: LabConfig) -> Any:
        """The lab's own processes in containers too: the app image (``app_image``)."""
        from labkit.providers.app_image import AppContainers
        return AppContainers(DockerLab(config))

    def sweep(self, config: LabConfig) -> list[str]:
        return sweep(config)
