"""The external provider: servers that run elsewhere (a real cluster), named in lab.toml.

Nothing is started or stopped. Each server is the class it is under ``native`` (the same
accessors: ``leader.dsn()``, ``host_port``, ``broker_url``, ``connect()``,
``contact_points``, ``nodes``), with its lifecycle replaced by ``ExternalService``: ``start``
checks that it answers over its own protocol, ``health`` asks it, and whatever needs a
server labkit runs (stop, pause, nodetool, a follower's replay delay, ``rabbitmqctl``)
raises ``NotManaged``, which says so and what to do instead. So notebooks and experiments
run unchanged, and a fault they cannot inject is a clear error, not a silent no-op.

    provider = "external"
    [external]
    leader = "postgresql://lab:secret@10.0.0.5:5432/postgres"
    followers = ["postgresql://lab:secret@10.0.0.6:5432/postgres"]
    memcached = ["10.0.0.7:11211"]
    broker_url = "amqp://lab:secret@10.0.0.8:5672/lab"
    [external.cassandra]
    user = "lab"
    password = "secret"
    ring = { us = ["10.0.1.1:9042", "10.0.1.2:9042", "10.0.1.3:9042"] }

The builders at the end (``postgres``, ``memcached``, ``rabbitmq``, ``cassandra``) are what
the service kinds call (``ServiceKind.external``) and what ``labkit doctor`` checks.
"""

from __future__ import annotations

import getpass
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from labkit._labdir import record
from labkit._proc import ServiceError, wait_ready
from labkit.config import (CASSANDRA_TOPOLOGIES, DEFAULT_PORTS, ExternalServers, LabConfig,
                           split_endpoint)
from labkit.providers.base import Provider, Verdict
from labkit.services.base import health_row
from labkit.services.cassandra import (READY_QUERY, Cassandra, CassandraCluster,
                                       CassandraCredentials, CassandraNode, driver_cluster)
from labkit.services.cassandra.cluster import each
from labkit.services.cassandra.driver import refused
from labkit.services.memcached import Memcached
from labkit.services.postgres import Postgres, PostgresServer
from labkit.services.rabbitmq import RabbitMQ

#: How long ``up`` waits for an external server to answer: it runs already, or it is wrong.
TIMEOUT_S = 10.0
NOWHERE = Path("(external)")  # the work directory of a server labkit does not run: none


class NotManaged(ServiceError):
    """A control that needs a server labkit runs was asked of one that runs elsewhere."""


class ExternalService:
    """Mixin, placed before a server class: the server runs elsewhere; labkit only talks to it.

    ``key`` names the lab.toml entry that points at it (for messages).
    """

    key: str = "[external]"

    def not_managed(self, what: str, instead: str) -> NotManaged:
        return NotManaged(
            f"{self.name} at {self.address} runs elsewhere (provider \"external\", {self.key} "
            f"in lab.toml), so labkit cannot {what}. {instead}")

    def start(self) -> Any:
        """Return once the server answers over its own protocol (nothing is started)."""
        try:
            wait_ready(f"{self.name} at {self.address} ({self.key} in lab.toml)", self.ready,
                       timeout_s=self.timeout_s)
        except ServiceError as e:
            raise ServiceError(
                f"{e} It runs elsewhere (provider \"external\"): check that it is up and that "
                f"{self.key} in lab.toml names it rightly (address, user, password); "
                "`labkit doctor` asks every server lab.toml names") from None
        return self

    def stop(self) -> None:
        raise self.not_managed("stop it", "Stop it where it runs; `labkit down` leaves it "
                                          "running and stops only the lab's helper processes.")

    def running(self) -> bool:
        return False  # labkit runs no process of it

    def health(self) -> dict[str, Any]:
        return health_row(self, lambda: True)

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "provider": "external", "address": self.address}

    def restore(self, state: dict[str, Any]) -> Any:
        return self

    def __repr__(self) -> str:
        return f"<external {type(self).__mro__[2].__name__} {self.name} {self.address}>"


# ------------------------------------------------------------------------------ PostgreSQL

class ExternalPostgresServer(ExternalService, PostgresServer):
    """A PostgreSQL server given by a DSN or URL (leader, or follower ``index``)."""

    heartbeat_fix = ("the lab writes one only beside a leader it runs: start one beside this "
                     "leader with `python -m labkit.services.heartbeat --dsn '<its DSN>'` "
                     "(the password in PGPASSWORD)")

    def __init__(self, dsn: str, *, key: str, index: int = 0,
                 leader: PostgresServer | None = None) -> None:
        from psycopg.conninfo import conninfo_to_dict
        self._params = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
        super().__init__(NOWHERE, password=self._params.get("password", ""), index=index,
                         leader=leader, port=int(self._params.get("port") or 5432),
                         host=self._params["host"], timeout_s=TIMEOUT_S)
        self.key = key

    @property
    def login(self) -> str:
        return self._params.get("user") or getpass.getuser()  # libpq's default, as psql's

    def dsn(self, dbname: str = "postgres") -> str:
        from psycopg.conninfo import make_conninfo
        return make_conninfo(**{**self._params, "dbname": dbname})

    def url(self, dbname: str = "postgres") -> str:
        rest = {k: v for k, v in self._params.items()
                if k not in ("host", "port", "user", "password", "dbname")}
        return (f"postgresql://{quote(self.login, safe='')}:{quote(self.password, safe='')}"
                f"@{self.host}:{self.port}/{quote(dbname, safe='')}"
                + (f"?{urlencode(rest)}" if rest else ""))

    def set_delay(self, delay_ms: int, *, settle: bool = False) -> None:
        raise self.not_managed(
            "change its replay delay (recovery_min_apply_delay)",
            "Set it on that server (ALTER SYSTEM SET recovery_min_apply_delay, then "
            "SELECT pg_reload_conf()), or run the notebook on a native lab (provider = "
            "\"native\").")


class ExternalPostgres(Postgres):
    """A leader and its followers that run elsewhere: the lab's ``postgres`` service."""

    def __init__(self, leader: str, followers: tuple[str, ...] = (), *,
                 synchronous_commit: str = "local") -> None:
        self.workdir = NOWHERE
        self.initial_synchronous_commit = synchronous_commit
        self.leader = ExternalPostgresServer(leader, key="[external] leader")
        self.followers = [ExternalPostgresServer(dsn, index=i, leader=self.leader,
                                                 key=f"[external] followers[{i - 1}]")
                          for i, dsn in enumerate(followers, 1)]
        self.password = self.leader.password
        self.heartbeat = None  # the lab writes none beside a leader it does not run

    def start(self) -> "ExternalPostgres":
        each(self.servers, lambda s: s.start())
        return self

    def stop(self) -> None:
        self.leader.stop()

    def members(self) -> list[PostgresServer]:
        return list(self.servers)

    def set_synchronous_commit(self, mode: str) -> None:
        raise self.leader.not_managed(
            f"switch its commits to synchronous_commit = {mode} (ALTER SYSTEM on the leader)",
            "Set synchronous_commit and synchronous_standby_names there, or run the notebook "
            "on a native lab (provider = \"native\").")

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "provider": "external",
                "servers": [s.address for s in self.servers]}

    def restore(self, state: dict[str, Any]) -> "ExternalPostgres":
        return self


# ------------------------------------------------------------------------------- Memcached

class ExternalMemcached(ExternalService, Memcached):
    """A memcached server given as host:port."""

    def __init__(self, endpoint: str, *, index: int = 0) -> None:
        host, port = split_endpoint(endpoint, DEFAULT_PORTS["memcached"])
        super().__init__(NOWHERE, index=index, port=port, host=host, timeout_s=TIMEOUT_S)
        self.key = f"[external] memcached[{index}]"


# -------------------------------------------------------------------------------- RabbitMQ

class ExternalRabbitMQ(ExternalService, RabbitMQ):
    """A RabbitMQ broker given by its AMQP URL (``amqps://`` for TLS)."""

    key = "[external] broker_url"

    def __init__(self, url: str) -> None:
        u = urlsplit(url)
        self.url, self.ssl = url, u.scheme == "amqps"
        # An AMQP URL's path is the vhost; none means RabbitMQ's default, "/".
        super().__init__(NOWHERE, username=unquote(u.username or "guest"),
                         password=unquote(u.password or "guest"),
                         vhost=unquote(u.path[1:]) or "/",
                         port=u.port or (5671 if self.ssl else 5672), host=u.hostname or "",
                         timeout_s=TIMEOUT_S)

    @property
    def broker_url(self) -> str:
        return self.url

    def connect(self, **kwargs: Any):
        if self.ssl:
            kwargs.setdefault("ssl", True)
        return super().connect(**kwargs)

    def ctl(self, *args: str, timeout_s: float = 60.0) -> str:
        raise self.not_managed(
            f"run `rabbitmqctl {' '.join(args)}` on it (that needs the node's Erlang cookie; "
            "AMQP itself cannot list queues)",
            "Look at its queues where it runs (rabbitmqctl, or the management UI).")


# ------------------------------------------------------------------------------- Cassandra

class ExternalCassandraNode(ExternalService, CassandraNode):
    """One contact point of a Cassandra cluster that runs elsewhere."""

    def __init__(self, host: str, port: int, *, index: int, dc: str,
                 credentials: CassandraCredentials, key: str) -> None:
        super().__init__(Path(f"node{index}"), cluster_name="(external)", dc=dc, host=host,
                         initial_token=0, lib_dir=NOWHERE, native_port=port,
                         storage_port=-1, jmx_port=-1, credentials=credentials,
                         timeout_s=TIMEOUT_S)
        self.key = key

    @property
    def address(self) -> str:
        return f"{self.host}:{self.native_port}"

    def ready(self) -> bool:
        """``SELECT release_version FROM system.local`` on this node alone, logged in."""
        cluster = driver_cluster([self.contact_point], only=self.host,
                                 credentials=self.credentials, connect_timeout_s=2,
                                 request_timeout_s=5)
        try:
            row = cluster.connect().execute(READY_QUERY).one()
            return bool(row and row.release_version)
        except Exception as e:
            if refused(e):
                raise ServiceError(
                    f"{self.name} at {self.address} refuses the login of {self.credentials.user!r} "
                    "given in [external.cassandra] of lab.toml: fix user and password there"
                ) from None
            raise
        finally:
            cluster.shutdown()

    def pause(self) -> None:
        raise self.not_managed("pause it (SIGSTOP)", _CASSANDRA_FAULTS)

    def resume(self) -> None:
        raise self.not_managed("resume it (SIGCONT)", _CASSANDRA_FAULTS)

    def nodetool(self, *args: str, timeout_s: float = 120) -> str:
        raise self.not_managed(f"run `nodetool {' '.join(args)}` on it (its JMX is not the "
                               "lab's)", "Run nodetool where the node runs.")

    def rss_bytes(self) -> int:
        raise self.not_managed("read its memory", "Read it where the node runs.")


_CASSANDRA_FAULTS = ("Inject the fault where the node runs, or run the notebook on a native lab "
                     "(provider = \"native\").")


class ExternalCassandraCluster(CassandraCluster):
    """One Cassandra cluster that runs elsewhere, reached through its contact points."""

    def __init__(self, topology: str, region: str, points: list[tuple[str, int]], *,
                 credentials: CassandraCredentials) -> None:
        key = f"[external.cassandra] {topology}.{region}"
        nodes = [ExternalCassandraNode(h, p, index=i, dc=region, credentials=credentials,
                                       key=key)
                 for i, (h, p) in enumerate(points, 1)]
        super().__init__(NOWHERE / region, lib_dir=NOWHERE, nodes=nodes, dc=region,
                         cluster_name="(external)", credentials=credentials)

    def start(self, parallel: bool = True) -> float:
        """Check every contact point answers; learn the cluster's name and dc from it."""
        t0 = time.monotonic()
        each(self.nodes, lambda n: n.start())
        session = self.connect()
        try:
            local = session.execute("SELECT cluster_name, data_center FROM system.local").one()
            self.cluster_name, self.dc = local.cluster_name, local.data_center
        finally:
            session.cluster.shutdown()
        return time.monotonic() - t0

    def stop(self) -> None:
        self.nodes[0].stop()


class ExternalCassandra(Cassandra):
    """The clusters of a topology, each region's running elsewhere."""

    def __init__(self, lab_dir: Path, topology: str, regions: dict[str, list[tuple[str, int]]],
                 *, credentials: CassandraCredentials) -> None:
        clusters = {r: ExternalCassandraCluster(topology, r, points, credentials=credentials)
                    for r, points in regions.items()}
        super().__init__(lab_dir, topology, credentials=credentials, _clusters=clusters)

    @property
    def regions(self) -> list[str]:
        return list(self.clusters)

    def start(self) -> float:
        t0 = time.monotonic()
        each(list(self.clusters.values()), lambda c: c.start())
        record(self.lab_dir / "cassandra")
        self._write_cqlsh_credentials()  # into the lab's own directory, for `labkit env`
        return time.monotonic() - t0

    def stop(self) -> None:
        self.nodes[0].stop()

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "provider": "external", "topology": self.topology,
                "regions": {r: [n.address for n in c.nodes] for r, c in self.clusters.items()}}


# -------------------------------------------------------------------------------- builders

def postgres(ext: ExternalServers, synchronous_commit: str = "local") -> ExternalPostgres:
    if not ext.leader:
        raise ServiceError("lab.toml's [external] names no leader: add leader = "
                           "\"postgresql://user:password@host:5432/postgres\"")
    return ExternalPostgres(ext.leader, ext.followers, synchronous_commit=synchronous_commit)


def memcached(ext: ExternalServers) -> list[ExternalMemcached]:
    return [ExternalMemcached(e, index=i) for i, e in enumerate(ext.memcached)]


def rabbitmq(ext: ExternalServers) -> ExternalRabbitMQ:
    if not ext.broker_url:
        raise ServiceError("lab.toml's [external] names no broker_url: add broker_url = "
                           "\"amqp://user:password@host:5672/vhost\"")
    return ExternalRabbitMQ(ext.broker_url)


def cassandra(lab_dir: Path, ext: ExternalServers, topology: str) -> ExternalCassandra:
    regions = ext.cassandra.topology(topology) if ext.cassandra else None
    if regions is None:
        raise ServiceError(f"lab.toml names no Cassandra {topology} under [external.cassandra]: "
                           f"add user, password and {topology} = {{ us = [\"host:9042\"] }}")
    creds = CassandraCredentials(ext.cassandra.user, ext.cassandra.password, jmx_password="")
    return ExternalCassandra(lab_dir, topology, regions, credentials=creds)


def services(config: LabConfig, ext: ExternalServers) -> list[Any]:
    """Every service lab.toml's [external] names, as the lab would build it (``labkit doctor``)."""
    out: list[Any] = []
    if ext.leader:
        out.append(postgres(ext))
    out += memcached(ext)
    if ext.broker_url:
        out.append(rabbitmq(ext))
    if ext.cassandra:
        out += [cassandra(config.lab_dir, ext, t) for t in CASSANDRA_TOPOLOGIES
                if ext.cassandra.topology(t) is not None]
    return out


class ExternalProvider(Provider):
    """Servers that run elsewhere, named in lab.toml's [external]; labkit starts none."""

    name = "external"
    manages = False

    def check(self, config: LabConfig) -> Verdict:
        """Does every server lab.toml names answer over its own protocol?"""
        if config.external is None:
            return Verdict(self.name, False, "lab.toml names no servers: add an [external] "
                           "table (leader, followers, memcached, broker_url, "
                           "[external.cassandra]) and provider = \"external\"")
        found = services(config, config.external)
        if not found:
            return Verdict(self.name, False, "lab.toml's [external] names no server")
        with ThreadPoolExecutor(min(8, len(found))) as pool:
            answers = list(pool.map(lambda s: s.health(), found))
        rows = [r for a in answers for r in (a if isinstance(a, list) else [a])]
        down = [f"{r['name']} at {r['address']}" for r in rows if not r["ok"]]
        details = tuple(f"{r['name']:<20} {'ok' if r['ok'] else 'DOWN':<5} {r['address']:<22} "
                        f"{r['version']}" for r in rows)
        if down:
            return Verdict(self.name, False, f"not answering: {', '.join(down)}", details)
        return Verdict(self.name, True, f"all {len(rows)} servers lab.toml names answer",
                       details)
