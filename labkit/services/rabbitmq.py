"""RabbitMQ, one node, started from the installed package with a per-lab user and vhost.

Where the start-up time goes (measured on 2 cores, Debian's 3.10 package): the Erlang VM boot
and Mnesia schema creation take ~5 s; plugins would add more, so none are enabled. The data
directory is kept between ``up``s, which turns later starts into a reopen of the schema.
The node gets its own epmd on a private port, bound to loopback, so two labs never share one
and ``down`` can stop it (epmd ignores SIGTERM and would otherwise outlive the broker).

>>> from pathlib import Path
>>> with RabbitMQ(Path("/tmp/lab/rabbitmq"), username="u", password="p") as mq:  # doctest: +SKIP
...     print(mq.broker_url)
amqp://u:p@127.0.0.1:41234/lab
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from labkit._proc import PortAllocator, Proc, ServiceError, listening, run, spawn, wait_ready
from labkit.services.base import NativeService
from labkit.services.templates import template_dir

# A fixed node name: the data directory is named after it and reused across `up`s.
NODENAME = "labkit@localhost"


class RabbitMQ(NativeService):
    """One RabbitMQ node on loopback with its own user and vhost (no guest account).

    >>> mq = RabbitMQ(Path("/tmp/lab/rabbitmq"), username="lab", password="secret")  # doctest: +SKIP
    >>> mq.start().broker_url                                                        # doctest: +SKIP
    'amqp://lab:secret@127.0.0.1:40001/lab'
    """

    kind = "rabbitmq"

    def __init__(self, workdir: Path, *, username: str, password: str, vhost: str = "lab",
                 port: int = 0, dist_port: int = 0, epmd_port: int = 0,
                 server_bin: str = "rabbitmq-server", epmd_bin: str = "epmd",
                 host: str = "127.0.0.1", user: str | None = None, timeout_s: float = 120.0) -> None:
        super().__init__(workdir, host=host, user=user, timeout_s=timeout_s)
        self.username, self.password, self.vhost = username, password, vhost
        self.port, self.dist_port, self.epmd_port = port, dist_port, epmd_port
        self.server_bin, self.epmd_bin = server_bin, epmd_bin

    @property
    def host_port(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def broker_url(self) -> str:
        """An AMQP URL with the lab's credentials, usable as Celery's ``broker_url``."""
        return (f"amqp://{quote(self.username, safe='')}:{quote(self.password, safe='')}"
                f"@{self.host}:{self.port}/{quote(self.vhost, safe='')}")

    @property
    def log_path(self) -> Path:
        return self.workdir / "log" / "rabbit.log"

    def _prepare(self) -> None:
        ports = PortAllocator(self.host)
        self.port = self.port or ports.take()
        self.dist_port = self.dist_port or ports.take()
        self.epmd_port = self.epmd_port or ports.take()
        (self.workdir / "log").mkdir(exist_ok=True)
        templates = template_dir("rabbitmq")
        (self.workdir / "rabbitmq.conf").write_text(self.render_conf(self.host, self.port))
        (self.workdir / "rabbitmq.conf").chmod(0o600)
        (self.workdir / "enabled_plugins").write_text((templates / "enabled_plugins").read_text())

    def render_conf(self, host: str, port: int) -> str:
        """The node's rabbitmq.conf: AMQP on ``host:port``, with the lab's user and vhost."""
        template = (template_dir("rabbitmq") / "rabbitmq.conf").read_text()
        return template.format(host=host, port=port, username=self.username,
                               password=self.password, vhost=self.vhost)

    def _env(self) -> dict[str, str]:
        w = str(self.workdir)
        return {
            "HOME": w,  # the Erlang cookie lives here
            "RABBITMQ_NODENAME": NODENAME,
            "RABBITMQ_CONF_ENV_FILE": "/dev/null",  # ignore the system's rabbitmq-env.conf
            "RABBITMQ_CONFIG_FILE": f"{w}/rabbitmq.conf",
            "RABBITMQ_ADVANCED_CONFIG_FILE": f"{w}/advanced.config",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{w}/enabled_plugins",
            "RABBITMQ_MNESIA_BASE": f"{w}/mnesia",
            "RABBITMQ_PLUGINS_EXPAND_DIR": f"{w}/plugins-expand",
            "RABBITMQ_LOG_BASE": f"{w}/log",
            "RABBITMQ_LOGS": str(self.log_path),
            "RABBITMQ_PID_FILE": f"{w}/rabbitmq.pid",
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": self.host,
            # Erlang distribution on loopback only (it listens on every interface by default).
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
                "-kernel inet_dist_use_interface {%s}" % self.host.replace(".", ","),
        }

    def _launch(self) -> None:
        epmd = spawn("epmd", [self.epmd_bin, "-port", str(self.epmd_port), "-address", self.host],
                     cwd=self.workdir, log_path=self.workdir / "log" / "epmd.log", user=self.user)
        self.procs.append(epmd)
        wait_ready("epmd", lambda: listening(self.host, self.epmd_port), timeout_s=10,
                   procs=[epmd])
        self.procs.append(spawn("rabbitmq", [self.server_bin], cwd=self.workdir,
                                log_path=self.workdir / "log" / "stdout.log", user=self.user,
                                env=self._env()))

    def stop_signal(self, proc: Proc) -> int:
        # epmd only leaves on SIGKILL; the broker shuts down cleanly on SIGTERM.
        return signal.SIGKILL if proc.name == "epmd" else signal.SIGTERM

    def connect(self, **kwargs: Any):
        """An AMQP connection (py-amqp, the library under Celery's kombu) with the lab's user."""
        import amqp
        conn = amqp.Connection(host=f"{self.host}:{self.port}", userid=self.username,
                               password=self.password, virtual_host=self.vhost,
                               connect_timeout=kwargs.pop("connect_timeout", 2), **kwargs)
        conn.connect()
        return conn

    def ready(self) -> bool:
        if not listening(self.host, self.port):
            return False
        conn = self.connect()
        conn.close()
        return True

    def version(self) -> str:
        conn = self.connect()
        try:
            v = conn.server_properties.get("version", "?")
            return v.decode() if isinstance(v, bytes) else str(v)
        finally:
            conn.close()

    def ctl(self, *args: str, timeout_s: float = 60.0) -> str:
        """Run ``rabbitmqctl ARGS`` against this node; return its output.

        As the server's account (the Erlang cookie in the node's HOME is that account's), and
        through the node's own epmd. AMQP cannot list queues, hence the CLI tool.
        """
        ctl = Path(self.server_bin).with_name("rabbitmqctl")
        env = {"HOME": str(self.workdir), "RABBITMQ_NODENAME": NODENAME,
               "RABBITMQ_CONF_ENV_FILE": "/dev/null", "ERL_EPMD_PORT": str(self.epmd_port)}
        return run([str(ctl) if ctl.parent != Path(".") else "rabbitmqctl", *args],
                   user=self.user, env=env, cwd=self.workdir, what="rabbitmqctl (rabbitmq)",
                   timeout_s=timeout_s)

    def add_vhost(self, vhost: str, *, user: str, password: str) -> None:
        """A vhost with a user of its own (no tags: no management, no other vhost).

        The lab's own user gets every permission there too, so that the grader can publish
        into it and inspect its queues with the lab's credentials.
        """
        self.ctl("add_vhost", vhost)
        self.ctl("add_user", user, password)
        for who in (user, self.username):
            self.ctl("set_permissions", "-p", vhost, who, ".*", ".*", ".*")

    def delete_vhost(self, vhost: str, *, user: str) -> None:
        """Delete the vhost (its queues and messages) and its user (idempotent)."""
        for args in (("delete_vhost", vhost), ("delete_user", user)):
            try:
                self.ctl(*args)
            except ServiceError as e:
                if "not_found" not in str(e) and "does not exist" not in str(e).lower():
                    raise

    def queues(self) -> list[str]:
        """The names of every queue in the lab's vhost."""
        out = self.ctl("list_queues", "-p", self.vhost, "--formatter", "json", "name")
        return [q["name"] for q in json.loads(out or "[]")]

    def queue_depths(self, names: Iterable[str]) -> dict[str, dict[str, int]]:
        """Messages ``ready`` in each named queue of the lab's vhost, and its ``consumers``.

        Over one AMQP connection (a passive declare per queue: milliseconds, where listing the
        queues with ``rabbitmqctl`` takes seconds). A queue that does not exist is left out.
        """
        import amqp
        out = {}
        with self.connect() as conn:
            ch = conn.channel()
            for name in names:
                try:
                    _, ready, consumers = ch.queue_declare(name, passive=True)
                except amqp.exceptions.NotFound:
                    ch = conn.channel()  # the broker closed the channel
                    continue
                out[name] = {"ready": ready, "consumers": consumers}
        return out

    def delete_queues(self, names: Iterable[str]) -> None:
        """Delete these queues (and the messages in them) from the lab's vhost."""
        import amqp
        failed = []
        with self.connect() as conn:
            ch = conn.channel()
            for name in names:
                try:
                    ch.queue_delete(name)
                except amqp.exceptions.AMQPError as e:  # e.g. exclusive to another connection
                    failed.append(f"{name} ({e})")
                    ch = conn.channel()  # the failed channel is closed by the broker
        if failed:
            raise ServiceError(f"could not delete queue(s) {', '.join(failed)}; stop the "
                               "programs that hold them and try again")

    def _state(self) -> dict[str, Any]:
        return {"port": self.port, "dist_port": self.dist_port, "epmd_port": self.epmd_port,
                "username": self.username, "password": self.password, "vhost": self.vhost}

    def _restore(self, state: dict[str, Any]) -> None:
        for k in ("port", "dist_port", "epmd_port", "username", "password", "vhost"):
            setattr(self, k, state[k])
