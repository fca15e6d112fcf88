"""Apache Cassandra 5.0, run natively from jars resolved from Maven Central.

One JVM per node (:class:`CassandraNode`), nodes grouped into a ring
(:class:`CassandraCluster`), rings grouped by topology (:class:`Cassandra`):

=========  ==========================================================
topology   what runs
=========  ==========================================================
single     one cluster, one node, dc ``us``
ring       one cluster, three nodes in dc ``us`` (RF=3 experiments)
regions    two clusters, ``us`` and ``eu``, different cluster names and
           disjoint seeds so they never gossip (Akkio, notebook 10)
=========  ==========================================================

Each node listens on its own loopback address 127.0.0.N (Linux routes all of
127/8 to ``lo``) with its own free native, storage and JMX ports. Tokens are
fixed and balanced (``num_tokens: 1``), nobody bootstraps, so all nodes of a
ring start at the same time.

The jar set is described by ``containers/cassandra/pom.xml`` (the one place
that names the Cassandra version) and resolved once per cache directory by
:func:`resolve_jars` or ``containers/cassandra/resolve.sh``.

Every cluster authenticates (PasswordAuthenticator, CassandraAuthorizer): on its
first start the lab creates its own superuser with the lab's generated password
(:class:`CassandraCredentials`) and drops Cassandra's default ``cassandra`` role;
``system_auth`` is replicated to every node, so a login works with nodes down.
JMX listens on loopback and asks for the lab's JMX password (nodetool sends it
from a password file, not on its command line).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import signal
import stat
import string
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import psutil

from labkit._proc import PortAllocator, ServiceError, listening, spawn, wait_ready
from labkit.services.base import NativeService, ServiceGroup
from labkit.services.templates import template_dir

__all__ = [
    "Cassandra",
    "CassandraCluster",
    "CassandraNode",
    "CassandraCredentials",
    "CassandraError",
    "TOPOLOGIES",
    "cassandra_version",
    "check_java",
    "resolve_jars",
]

#: topology name -> {region: number of nodes}
TOPOLOGIES: dict[str, dict[str, int]] = {
    "single": {"us": 1},
    "ring": {"us": 3},
    "regions": {"us": 1, "eu": 1},
}

JAVA_FIX = (
    "install it with `apt-get install openjdk-17-jre-headless` or "
    "`brew install openjdk@17`, or run `labkit doctor`"
)
MAVEN_FIX = "install it with `apt-get install maven` or `brew install maven`, or run `labkit doctor`"

READY_QUERY = "SELECT release_version FROM system.local"

# In a node's directory once the lab's superuser has replaced the default one on its cluster.
_SECURED_MARKER = "lab-superuser"

class CassandraError(ServiceError):
    """Cassandra could not be resolved, started, reached or stopped; the message says what to do."""


def _token() -> str:
    return secrets.token_urlsafe(18)


@dataclass(frozen=True)
class CassandraCredentials:
    """The lab's Cassandra superuser (CQL) and JMX login; generated per lab, kept with its secrets.

    The passwords stay out of reprs and of the state file; the lab keeps them in its
    ``secrets.json`` and hands them back when it reattaches.

        >>> creds = CassandraCredentials()          # a fresh random password for each
        >>> creds.user
        'lab'
    """

    user: str = "lab"
    password: str = field(default_factory=_token, repr=False)
    jmx_password: str = field(default_factory=_token, repr=False)

    def auth_provider(self):
        """A cassandra-driver ``PlainTextAuthProvider`` for this user."""
        from cassandra.auth import PlainTextAuthProvider

        return PlainTextAuthProvider(username=self.user, password=self.password)


#: The superuser Cassandra creates on a fresh cluster; the lab drops it once its own exists.
DEFAULT_SUPERUSER = CassandraCredentials("cassandra", "cassandra", jmx_password="")


# ---------------------------------------------------------------------------
# Jars
# ---------------------------------------------------------------------------


def cassandra_version(pom: Path | None = None) -> str:
    """The Cassandra version named by the pom's ``cassandra.version`` property.

    >>> cassandra_version().startswith("5.0.")
    True
    """
    pom = pom or template_dir("cassandra") / "pom.xml"
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:cassandra.version", ns)
    if node is None or not (node.text or "").strip():
        raise CassandraError(f"{pom} has no <cassandra.version> property")
    return node.text.strip()


def jar_dir(cache_dir: Path, version: str | None = None) -> Path:
    """The directory holding the resolved jars for ``version`` under ``cache_dir``."""
    return Path(cache_dir) / "cassandra" / (version or cassandra_version()) / "lib"


def resolve_jars(
    cache_dir: Path,
    *,
    mvn: str = "mvn",
    pom: Path | None = None,
    maven_settings: Path | None = None,
    maven_repo_local: Path | None = None,
    timeout_s: float = 1800,
) -> Path:
    """Resolve cassandra-all and its runtime dependencies into ``cache_dir``; return the jar dir.

    Idempotent: a marker file records a finished resolution of that version and
    makes later calls return at once. Concurrent callers serialise on a lock.
    ``containers/cassandra/resolve.sh`` runs the same Maven command.

        >>> lib = resolve_jars(Path.home() / ".cache" / "labkit")
        >>> any(p.name.startswith("cassandra-all-") for p in lib.iterdir())
        True
    """
    pom = pom or template_dir("cassandra") / "pom.xml"
    version = cassandra_version(pom)
    lib = jar_dir(cache_dir, version)
    base = lib.parent
    marker = base / ".resolved"
    if marker.exists():
        return lib
    base.mkdir(parents=True, exist_ok=True)
    if shutil.which(mvn) is None and not Path(mvn).is_file():
        raise CassandraError(
            f"Maven (`{mvn}`) not found; it resolves Cassandra {version} from Maven Central: {MAVEN_FIX}."
        )
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return lib
        tmp = Path(tempfile.mkdtemp(prefix="lib.", dir=base))
        cmd = [mvn, "-B", "-q", "-f", str(pom)]
        if maven_settings is not None:
            cmd += ["-s", str(maven_settings)]
        if maven_repo_local is not None:
            cmd.append(f"-Dmaven.repo.local={maven_repo_local}")
        cmd += [
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CassandraError(
                f"Resolving Cassandra {version} jars with Maven took over {timeout_s:.0f} s; "
                "check access to Maven Central (or your mirror in ~/.m2/settings.xml)."
            ) from None
        jars = list(tmp.glob("*.jar"))
        if proc.returncode != 0 or not any(j.name.startswith("cassandra-all-") for j in jars):
            shutil.rmtree(tmp, ignore_errors=True)
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise CassandraError(
                f"Resolving Cassandra {version} jars with Maven failed (exit {proc.returncode}). "
                "Check access to Maven Central (or the mirror in your Maven settings); if Maven "
                f"itself is broken, {MAVEN_FIX}. Command: {' '.join(cmd)}\n"
                f"mvn output (last lines):\n{tail}"
            )
        if lib.exists():
            shutil.rmtree(lib)
        tmp.chmod(0o755)
        tmp.rename(lib)
        marker.write_text(f"{version}\n{len(jars)} jars\n")
    return lib


# ---------------------------------------------------------------------------
# Java
# ---------------------------------------------------------------------------


def check_java(java: str = "java") -> tuple[str, int]:
    """Return (path, major version) of ``java``; raise CassandraError unless it is Java 17+.

    >>> check_java()[1] >= 17
    True
    """
    path = shutil.which(java)
    if path is None:
        raise CassandraError(f"Java not found (`{java}`); Cassandra 5.0 needs Java 17: {JAVA_FIX}.")
    try:
        out = subprocess.run(
            [path, "-version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CassandraError(f"`{path} -version` failed ({e}); Cassandra 5.0 needs Java 17: {JAVA_FIX}.") from None
    text = out.stderr + out.stdout
    m = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if m is None:
        raise CassandraError(
            f"could not read a version from `{path} -version` ({text.strip()[:200]!r}); "
            f"Cassandra 5.0 needs Java 17: {JAVA_FIX}."
        )
    major = int(m.group(1))
    if major == 1 and m.group(2):  # "1.8.0_392" is Java 8
        major = int(m.group(2))
    if major < 17:
        raise CassandraError(
            f"{path} is Java {major}; Cassandra 5.0 in labkit needs Java 17: {JAVA_FIX}."
        )
    return path, major


# ---------------------------------------------------------------------------
# Ring helpers
# ---------------------------------------------------------------------------


def _murmur3_tokens(n: int) -> list[int]:
    """Balanced single tokens for ``n`` nodes on Murmur3's ring [-2**63, 2**63)."""
    return [-(2**63) + i * (2**64 // n) for i in range(n)]


def _connection_class():
    """The driver reactor to use: libev if built, else asyncio (asyncore is gone in Python 3.12)."""
    try:
        from cassandra.io.libevreactor import LibevConnection

        return LibevConnection
    except Exception:  # ImportError or a libev build without the shared library
        from cassandra.io.asyncioreactor import AsyncioConnection

        return AsyncioConnection


def driver_cluster(
    contact_points: Sequence[tuple[str, int]],
    *,
    credentials: CassandraCredentials,
    only: str | None = None,
    connect_timeout_s: float = 5,
    request_timeout_s: float = 10,
    **kwargs: Any,
):
    """A ``cassandra.cluster.Cluster`` for these contact points, logging in with ``credentials``.

    ``only="127.0.0.3"`` sends every request to that node alone (a
    ``WhiteListRoundRobinPolicy``), to check one replica by itself.

        >>> with Cassandra(Path("/tmp/lab")) as cas:
        ...     cluster = driver_cluster(cas.contact_points, credentials=cas.credentials)
        ...     session = cluster.connect()
        ...     cluster.shutdown()
    """
    from cassandra import ProtocolVersion
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import (
        DCAwareRoundRobinPolicy,
        TokenAwarePolicy,
        WhiteListRoundRobinPolicy,
    )

    policy = WhiteListRoundRobinPolicy([only]) if only else TokenAwarePolicy(DCAwareRoundRobinPolicy())
    profile = ExecutionProfile(load_balancing_policy=policy, request_timeout=request_timeout_s)
    return Cluster(
        contact_points=list(contact_points),
        protocol_version=ProtocolVersion.V5,
        connection_class=_connection_class(),
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=connect_timeout_s,
        control_connection_timeout=connect_timeout_s,
        auth_provider=credentials.auth_provider(),
        **kwargs,
    )


def _refused(error: Exception) -> bool:
    """True when the driver's error is the server refusing the user name or password."""
    from cassandra import AuthenticationFailed
    from cassandra.cluster import NoHostAvailable

    if isinstance(error, NoHostAvailable):
        return any(isinstance(e, AuthenticationFailed) and "incorrect" in str(e)
                   for e in error.errors.values())
    return isinstance(error, AuthenticationFailed) and "incorrect" in str(error)


# ---------------------------------------------------------------------------
# Node
# ---------------------------------------------------------------------------


_TOOLS_LOGBACK = """<configuration>
  <appender name="STDERR" class="ch.qos.logback.core.ConsoleAppender">
    <target>System.err</target>
    <encoder><pattern>%-5level %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="STDERR"/></root>
</configuration>
"""


class CassandraNode(NativeService):
    """One Cassandra JVM on its own loopback address; start, stop, pause and nodetool it.

    Usually built by :class:`CassandraCluster`; a single node can be driven alone:

        >>> node = CassandraNode(Path("/tmp/lab/n1"), cluster_name="lab", dc="us",
        ...                      host="127.0.0.1", initial_token=0,
        ...                      lib_dir=resolve_jars(Path("/tmp/cache")))   # doctest: +SKIP
        >>> with node:                                                        # doctest: +SKIP
        ...     node.nodetool("status")
    """

    kind = "cassandra"

    def __init__(
        self,
        node_dir: Path,
        *,
        cluster_name: str,
        dc: str,
        host: str,
        initial_token: int,
        lib_dir: Path,
        rack: str = "rack1",
        seeds: Sequence[str] | None = None,
        native_port: int = 0,
        storage_port: int = 0,
        jmx_port: int = 0,
        heap_mb: int = 512,
        java: str = "java",
        ring_delay_ms: int = 1000,
        container_dir: Path | None = None,
        extra_jvm_opts: Sequence[str] = (),
        user: str | None = None,
        timeout_s: float = 180.0,
        credentials: CassandraCredentials | None = None,
        ring_size: int = 1,
    ) -> None:
        super().__init__(node_dir, host=host, user=user, timeout_s=timeout_s)
        self.cluster_name = cluster_name
        self.dc = dc
        self.rack = rack
        self.initial_token = initial_token
        self.lib_dir = Path(lib_dir)
        self.native_port = native_port or PortAllocator(host).take()
        self.storage_port = storage_port or PortAllocator(host).take()
        # Cassandra's local-only JMX (cassandra.jmx.local.port) binds to the
        # loopback address 127.0.0.1, whatever the node's own address.
        self.jmx_host = "127.0.0.1"
        self.jmx_port = jmx_port or PortAllocator(self.jmx_host).take()
        self.seeds = list(seeds) if seeds else [f"{host}:{self.storage_port}"]
        self.heap_mb = heap_mb
        self.java = java
        self.ring_delay_ms = ring_delay_ms
        # None: the templates shipped with labkit (labkit.services.templates).
        self.container_dir = Path(container_dir) if container_dir else None
        self.extra_jvm_opts = list(extra_jvm_opts)
        self.credentials = credentials or CassandraCredentials()
        # Nodes of this node's cluster: system_auth starts replicated to all of them.
        self.ring_size = ring_size
        # Readiness also asks that gossip has met this many peers (set by the cluster).
        self.expect_peers = 0

    # -- accessors ---------------------------------------------------------

    @property
    def node_dir(self) -> Path:
        return self.workdir

    @property
    def name(self) -> str:
        return f"cassandra-{self.dc}-{self.workdir.name}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.native_port}"

    @property
    def contact_point(self) -> tuple[str, int]:
        """(host, native_port) for the Python driver."""
        return (self.host, self.native_port)

    @property
    def storage_endpoint(self) -> str:
        """``host:storage_port``, the way seeds name a node."""
        return f"{self.host}:{self.storage_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "logs" / "system.log"

    @property
    def templates(self) -> Path:
        """Where cassandra.yaml, logback.xml and jvm17-server.options are read from."""
        return self.container_dir or template_dir("cassandra")

    @property
    def jmx_password_file(self) -> Path:
        """``<user> <password>``, read by the JVM's JMX authenticator and by nodetool ``-pwf``."""
        return self.workdir / "conf" / "jmxremote.password"

    @property
    def secured(self) -> bool:
        """True once the lab's superuser has replaced the default one on this node's cluster."""
        return (self.workdir / _SECURED_MARKER).exists()

    @property
    def pid(self) -> int | None:
        return self.procs[0].pid if self.procs else None

    # -- state -------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "cluster_name": self.cluster_name,
            "dc": self.dc,
            "rack": self.rack,
            "initial_token": str(self.initial_token),  # beyond JSON's safe integers
            "lib_dir": str(self.lib_dir),
            "seeds": list(self.seeds),
            "native_port": self.native_port,
            "storage_port": self.storage_port,
            "jmx_port": self.jmx_port,
            "heap_mb": self.heap_mb,
            "java": self.java,
            "ring_delay_ms": self.ring_delay_ms,
            "container_dir": str(self.container_dir) if self.container_dir else None,
            "extra_jvm_opts": list(self.extra_jvm_opts),
            "ring_size": self.ring_size,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any], *, credentials: CassandraCredentials) -> "CassandraNode":
        """Rebuild a node (running or not) from :meth:`to_state` output.

        The passwords are not in the state: ``credentials`` come from the lab's secrets.
        """
        node = cls(
            Path(d["workdir"]), cluster_name=d["cluster_name"], dc=d["dc"], rack=d["rack"],
            host=d["host"], initial_token=int(d["initial_token"]), lib_dir=Path(d["lib_dir"]),
            seeds=d["seeds"], native_port=d["native_port"], storage_port=d["storage_port"],
            jmx_port=d["jmx_port"], heap_mb=d["heap_mb"], java=d["java"],
            ring_delay_ms=d["ring_delay_ms"],
            container_dir=Path(d["container_dir"]) if d.get("container_dir") else None,
            extra_jvm_opts=d.get("extra_jvm_opts", ()), user=d.get("user"),
            credentials=credentials, ring_size=d.get("ring_size", 1),
        )
        return node.restore(d)

    # -- lifecycle ---------------------------------------------------------

    def _prepare(self) -> None:
        nd = self.workdir
        for sub in ("conf", "data", "commitlog", "saved_caches", "hints", "cdc_raw", "system",
                    "logs", "tmp", "fql", "triggers"):
            (nd / sub).mkdir(parents=True, exist_ok=True)
        template = string.Template((self.templates / "cassandra.yaml").read_text())
        yaml = template.substitute(
            cluster_name=self.cluster_name,
            initial_token=self.initial_token,
            host=self.host,
            storage_port=self.storage_port,
            native_port=self.native_port,
            seeds=",".join(self.seeds),
            node_dir=nd,
            memtable_mb=max(16, self.heap_mb // 8),
        )
        (nd / "conf" / "cassandra.yaml").write_text(yaml)
        (nd / "conf" / "cassandra-rackdc.properties").write_text(
            f"dc={self.dc}\nrack={self.rack}\n"
        )
        shutil.copyfile(self.templates / "logback.xml", nd / "conf" / "logback.xml")
        (nd / "conf" / "logback-tools.xml").write_text(_TOOLS_LOGBACK)
        # JMX logins: read-only files of the server account (own() hands them over after this).
        creds = self.credentials
        _write_secret(self.jmx_password_file, f"{creds.user} {creds.jmx_password}\n")
        _write_secret(nd / "conf" / "jmxremote.access", f"{creds.user} readwrite\n")

    def _jvm_options(self) -> list[str]:
        opts = []
        for line in (self.templates / "jvm17-server.options").read_text().splitlines():
            line = line.strip()
            if line.startswith("-"):
                opts.extend(line.split())  # "--add-opens m/p=ALL-UNNAMED" is two argv words
        return opts

    def command(self) -> list[str]:
        """The full ``java ...`` command line that runs this node."""
        nd = self.workdir
        jamm = sorted(self.lib_dir.glob("jamm-*.jar"))
        if not jamm:
            raise CassandraError(f"no jamm-*.jar in {self.lib_dir}; re-resolve the jars (delete {self.lib_dir.parent}).")
        return [
            self.java,
            *self._jvm_options(),
            f"-Xms{self.heap_mb}M",
            f"-Xmx{self.heap_mb}M",
            f"-javaagent:{jamm[-1]}",
            f"-XX:HeapDumpPath={nd / 'logs'}",
            # What cassandra-env.sh asks for: a JVM past OOM may corrupt data, so it exits.
            "-XX:+ExitOnOutOfMemoryError",
            f"-XX:ErrorFile={nd / 'logs' / 'hs_err_%p.log'}",
            f"-Xlog:gc=info:file={nd / 'logs' / 'gc.log'}:time,uptime:filecount=2,filesize=5M",
            f"-Djava.io.tmpdir={nd / 'tmp'}",
            f"-Duser.home={nd / 'tmp'}",
            f"-Dcassandra.config=file://{nd / 'conf' / 'cassandra.yaml'}",
            f"-Dcassandra.logdir={nd / 'logs'}",
            f"-Dcassandra.storagedir={nd / 'data'}",
            f"-Dcassandra.triggers_dir={nd / 'triggers'}",
            f"-Dlogback.configurationFile={nd / 'conf' / 'logback.xml'}",
            "-Dcassandra-foreground=yes",
            # JMX on 127.0.0.1 only, with a login (cassandra-env.sh's LOCAL_JMX=yes binds to
            # loopback; its password and access files are those of LOCAL_JMX=no).
            f"-Dcassandra.jmx.local.port={self.jmx_port}",
            "-Dcom.sun.management.jmxremote.authenticate=true",
            f"-Dcom.sun.management.jmxremote.password.file={self.jmx_password_file}",
            f"-Dcom.sun.management.jmxremote.access.file={nd / 'conf' / 'jmxremote.access'}",
            # system_auth is created replicated to every node of the cluster, so the default
            # role and then the lab's own are on every node from their first write.
            f"-Dcassandra.system_auth.default_rf={self.ring_size}",
            # Fast start for a lab ring: tokens are fixed, nobody bootstraps.
            f"-Dcassandra.ring_delay_ms={self.ring_delay_ms}",
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            # Creating the default role is retried at this interval until a quorum of
            # system_auth's replicas is up: 0 spun hundreds of failed attempts on a ring.
            "-Dcassandra.superuser_setup_delay_ms=250",
            # bcrypt at its lowest cost (2^4 rounds, not 2^10) for the roles' password hashes:
            # every login checks one, and the lab logs in often (readiness polls, status, each
            # session); a costlier hash protects nothing here, where the plain password sits
            # beside the data in the lab's secrets.json. Measured: setup 1.0 -> 0.5 s, a login
            # 0.4 -> 0.1 s (C1-only JIT, loaded 2 cores).
            "-Dcassandra.auth_bcrypt_gensalt_log2_rounds=4",
            *self.extra_jvm_opts,
            "-cp",
            f"{nd / 'conf'}:{self.lib_dir}/*",
            "org.apache.cassandra.service.CassandraDaemon",
        ]

    def _launch(self) -> None:
        env = {
            # As cassandra-env.sh does: fewer glibc arenas, less RSS.
            "MALLOC_ARENA_MAX": "4",
            "HOME": str(self.workdir / "tmp"),
        }
        self.procs.append(spawn(self.name, self.command(), cwd=self.workdir,
                                log_path=self.workdir / "logs" / "stdout.log", user=self.user,
                                env=env))

    def ready(self) -> bool:
        """``SELECT release_version FROM system.local`` on this node alone, logged in.

        With ``expect_peers`` set, the node must also list that many peers (gossip met them).
        Until the lab's superuser exists (a cluster's first start) the login is Cassandra's
        default superuser; afterwards only the lab's, and a refused password fails at once.
        """
        if not listening(self.host, self.native_port):
            return False
        # A first start usually has only the default role; a setup cut short after dropping it
        # (see CassandraCluster.create_lab_superuser) has only the lab's.
        logins = [self.credentials] if self.secured else [DEFAULT_SUPERUSER, self.credentials]
        for creds in logins:
            cluster = driver_cluster([self.contact_point], only=self.host, credentials=creds,
                                     connect_timeout_s=2, request_timeout_s=5)
            try:
                session = cluster.connect()
            except Exception as e:
                cluster.shutdown()
                if self.secured and _refused(e):
                    raise CassandraError(
                        f"{self.name} refuses the lab's Cassandra password for {creds.user!r}: its "
                        f"data in {self.workdir} was made with other credentials. Start it with "
                        "the secrets.json of the lab that made it, or delete that lab's data "
                        "(`labkit down --purge`)."
                    ) from None
                continue
            try:
                row = session.execute(READY_QUERY).one()
                if row is None or not row.release_version:
                    return False
                if self.expect_peers:
                    peers = session.execute("SELECT peer FROM system.peers")
                    return len(list(peers)) >= self.expect_peers
                return True
            finally:
                cluster.shutdown()
        return False

    def version(self) -> str:
        cluster = driver_cluster([self.contact_point], only=self.host, credentials=self.credentials,
                                 connect_timeout_s=2)
        try:
            return cluster.connect().execute(READY_QUERY).one().release_version
        finally:
            cluster.shutdown()

    # -- fault controls ----------------------------------------------------

    def _process(self) -> psutil.Process:
        p = self.procs[0].process() if self.procs else None
        if p is None:
            raise CassandraError(f"Cassandra node {self.name} is not running; start it first.")
        return p

    def pause(self) -> None:
        """Freeze the JVM (SIGSTOP): to its peers the node hangs, like a GC stall or partition."""
        self._process().send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze a paused JVM (SIGCONT)."""
        self._process().send_signal(signal.SIGCONT)

    def nodetool(self, *args: str, timeout_s: float = 120) -> str:
        """Run ``nodetool <args>`` against this node over local JMX, logged in; return its output.

        The JMX password goes by file (``-pwf``), so ``ps`` does not show it.

            >>> node.nodetool("disablehandoff")  # doctest: +SKIP
        """
        cmd = self.nodetool_command(*args)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            raise CassandraError(
                f"nodetool {' '.join(args)} on {self.name} failed (exit {proc.returncode}):\n"
                f"{(proc.stdout + proc.stderr).strip()[-2000:]}"
            )
        return proc.stdout

    def nodetool_command(self, *args: str, login: bool = True) -> list[str]:
        """The ``java ... NodeTool`` command line; ``login=False`` leaves the JMX login out."""
        auth = ["-u", self.credentials.user, "-pwf", str(self.jmx_password_file)] if login else []
        return [
            self.java,
            "-Xmx128M",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Xshare:auto",
            f"-Dlogback.configurationFile={self.workdir / 'conf' / 'logback-tools.xml'}",
            f"-Duser.home={tempfile.gettempdir()}",
            "-Dcassandra.config=file:///dev/null",
            # The server's JPMS exports/opens serve the tools too (as jvm17-clients.options).
            *[o for o in self._jvm_options() if o.startswith("--add-") or "=ALL-UNNAMED" in o],
            "-cp", f"{self.lib_dir}/*",
            "org.apache.cassandra.tools.NodeTool",
            "-h", self.jmx_host, "-p", str(self.jmx_port), *auth,
            *args,
        ]

    def rss_bytes(self) -> int:
        """Resident memory of the JVM now (0 when stopped)."""
        p = self.procs[0].process() if self.procs else None
        return p.memory_info().rss if p else 0


# ---------------------------------------------------------------------------
# Cluster (one ring)
# ---------------------------------------------------------------------------


class CassandraCluster(ServiceGroup):
    """One Cassandra cluster (ring) of nodes in one dc, started together.

        >>> ring = CassandraCluster(Path("/tmp/lab/us"), nodes=3, dc="us",
        ...                         cluster_name="lab-us", lib_dir=resolve_jars(Path("/tmp/cache")))
        >>> with ring:                                                                # doctest: +SKIP
        ...     ring.connect().execute("SELECT release_version FROM system.local").one()
    """

    def __init__(
        self,
        cluster_dir: Path,
        *,
        lib_dir: Path,
        nodes: int | Sequence[CassandraNode] = 1,
        dc: str = "us",
        cluster_name: str = "labkit",
        first_host: int = 1,
        heap_mb: int = 512,
        java: str = "java",
        ring_delay_ms: int = 1000,
        container_dir: Path | None = None,
        extra_jvm_opts: Sequence[str] = (),
        user: str | None = None,
        timeout_s: float = 180.0,
        credentials: CassandraCredentials | None = None,
    ) -> None:
        self.cluster_dir = Path(cluster_dir)
        self.dc = dc
        self.cluster_name = cluster_name
        self.credentials = credentials or CassandraCredentials()
        self._sessions: list[Any] = []
        if not isinstance(nodes, int):
            self.nodes = list(nodes)
            return
        if nodes < 1:
            raise ValueError("a Cassandra cluster needs at least one node")
        hosts = [f"127.0.0.{first_host + i}" for i in range(nodes)]
        self.nodes = [
            CassandraNode(
                self.cluster_dir / f"node{i + 1}", cluster_name=cluster_name, dc=dc,
                rack=f"rack{i + 1}", host=host, initial_token=token, lib_dir=lib_dir,
                heap_mb=heap_mb, java=java, ring_delay_ms=ring_delay_ms,
                container_dir=container_dir, extra_jvm_opts=extra_jvm_opts, user=user,
                timeout_s=timeout_s, credentials=self.credentials, ring_size=nodes,
            )
            for i, (host, token) in enumerate(zip(hosts, _murmur3_tokens(nodes)))
        ]
        # Every node of a ring of <= 3 is a seed: any one can restart alone and find the others.
        seeds = [n.storage_endpoint for n in self.nodes[:3]]
        for n in self.nodes:
            n.seeds = seeds

    @property
    def contact_points(self) -> list[tuple[str, int]]:
        """[(host, native_port), ...] for ``cassandra.cluster.Cluster(contact_points=...)``."""
        return [n.contact_point for n in self.nodes]

    def node(self, i: int) -> CassandraNode:
        """Node ``i`` (0-based)."""
        return self.nodes[i]

    def start(self, parallel: bool = True) -> float:
        """Start every stopped node and wait until each answers CQL; return seconds taken.

        Each node counts as ready once it also sees the others (gossip has met them); a node
        restarted alone (``node.start()``) waits for its peers the same way. On the cluster's
        first start the lab's superuser then replaces the default one
        (:meth:`create_lab_superuser`). ``parallel=False`` restarts the nodes one after the
        other (for comparison); a ring's first start must be parallel, since a login needs
        a quorum of system_auth's replicas (every node) until the lab's superuser exists.
        """
        if not parallel and len(self.nodes) > 1 and not all(n.secured for n in self.nodes):
            raise CassandraError(
                f"{self.cluster_name} has never run: start it with parallel=True first (a login "
                "needs most of its nodes until the lab's superuser exists), then restart it "
                "one node after the other"
            )
        t0 = time.monotonic()
        try:
            if not parallel:
                for n in self.nodes:
                    n.expect_peers = 0
                    n.start()
            for n in self.nodes:
                n.expect_peers = len(self.nodes) - 1
            _each(self.nodes, lambda n: wait_ready(n.name, n.ready, timeout_s=n.timeout_s,
                                                   procs=n.procs, log_path=n.log_path)
                  if n.running() else n.start())
            self.create_lab_superuser()
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - t0

    def stop(self) -> None:
        """Stop every node (in parallel) and close the sessions :meth:`connect` handed out."""
        for s in self._sessions:
            with contextlib.suppress(Exception):
                s.cluster.shutdown()
        self._sessions.clear()
        _each(self.nodes, lambda n: n.stop())

    def connect(self, keyspace: str | None = None, *, only: CassandraNode | None = None, **kwargs: Any):
        """A driver ``Session`` on this cluster; ``only=node`` talks to that node alone.

        Sessions are shut down by :meth:`stop`; call ``session.cluster.shutdown()`` to close one earlier.
        """
        points = [only.contact_point] if only else self.contact_points
        kwargs.setdefault("credentials", self.credentials)
        cluster = driver_cluster(points, only=only.host if only else None, **kwargs)
        try:
            session = cluster.connect(keyspace)
        except BaseException:
            cluster.shutdown()
            raise
        self._sessions.append(session)
        return session

    def create_lab_superuser(self) -> None:
        """Replace Cassandra's default superuser by the lab's own; a no-op once done.

        On the cluster's first start, logged in as the default ``cassandra``: replicate
        ``system_auth`` to every node (NetworkTopologyStrategy, RF = nodes) and create the
        lab's superuser there, so every node holds it and a login works with nodes down.
        Then, logged in as the lab's superuser, drop ``cassandra``. Each step can run again,
        so a setup cut short finishes on the next start.
        """
        if all(n.secured for n in self.nodes):
            return
        from cassandra.cluster import NoHostAvailable

        replication = {"class": "NetworkTopologyStrategy", self.dc: len(self.nodes)}
        alter = f"ALTER KEYSPACE system_auth WITH replication = {replication!r}"
        role = '"' + self.credentials.user.replace('"', '""') + '"'
        # One node coordinates; no schema or token metadata to load: only statements to send.
        quick = dict(only=self.nodes[0].host, schema_metadata_enabled=False,
                     token_metadata_enabled=False)
        default = driver_cluster(self.contact_points, credentials=DEFAULT_SUPERUSER, **quick)
        try:
            session = default.connect()
        except NoHostAvailable as e:
            if not _refused(e):
                raise
            session = None  # dropped already: a setup cut short after its last step
        try:
            if session is not None:
                session.execute(alter)
                session.execute(f"CREATE ROLE IF NOT EXISTS {role} WITH SUPERUSER = true "
                                "AND LOGIN = true AND PASSWORD = %s", (self.credentials.password,))
        finally:
            default.shutdown()
        lab = driver_cluster(self.contact_points, credentials=self.credentials, **quick)
        try:
            session_lab = lab.connect()
            if session is None:
                session_lab.execute(alter)
            session_lab.execute("DROP ROLE IF EXISTS cassandra")
        finally:
            lab.shutdown()
        for n in self.nodes:
            (n.workdir / _SECURED_MARKER).touch()

    def members(self) -> list[CassandraNode]:
        return self.nodes

    def to_state(self) -> dict[str, Any]:
        """A JSON-able dict from which :meth:`from_state` rebuilds this cluster."""
        return {
            "cluster_dir": str(self.cluster_dir),
            "dc": self.dc,
            "cluster_name": self.cluster_name,
            "nodes": [n.to_state() for n in self.nodes],
        }

    @classmethod
    def from_state(cls, d: dict[str, Any], *, credentials: CassandraCredentials) -> "CassandraCluster":
        nodes = [CassandraNode.from_state(n, credentials=credentials) for n in d["nodes"]]
        for n in nodes:
            n.expect_peers = len(nodes) - 1
        return cls(Path(d["cluster_dir"]), lib_dir=nodes[0].lib_dir, nodes=nodes, dc=d["dc"],
                   cluster_name=d["cluster_name"], credentials=credentials)

    def __repr__(self) -> str:
        return f"<CassandraCluster {self.cluster_name} dc={self.dc} nodes={len(self.nodes)}>"


def _write_secret(path: Path, text: str, mode: int = 0o400) -> None:
    """Write ``text`` to a fresh file created with ``mode`` (replacing any older, read-only one).

    Created with its mode, so the secret is never readable by others, not even for a moment.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _each(nodes: Sequence[CassandraNode], action: Any) -> None:
    """Run ``action(node)`` for every node at once; re-raise the first failure."""
    if not nodes:
        return
    with ThreadPoolExecutor(len(nodes)) as pool:
        for f in [pool.submit(action, n) for n in nodes]:
            f.result()


# ---------------------------------------------------------------------------
# Service (a topology of clusters)
# ---------------------------------------------------------------------------


class Cassandra(ServiceGroup):
    """Cassandra 5.0 for a lab: the clusters of a named topology, native provider.

        >>> from pathlib import Path
        >>> with Cassandra(Path("/tmp/lab"), topology="single") as cas:          # doctest: +SKIP
        ...     print(cas.connect().execute("SELECT release_version FROM system.local").one())
        Row(release_version='5.0.9')

    ``topology="ring"`` gives 3 nodes in dc ``us``; ``topology="regions"`` gives two
    independent clusters, ``cas.region("us")`` and ``cas.region("eu")``.

    Every cluster logs in with ``credentials`` (default: a fresh random password; the lab
    passes the one in its secrets, since a cluster keeps the password it was first started
    with). ``cqlsh --credentials <cas.cqlsh_credentials>`` logs in too.
    """

    kind = "cassandra"

    def __init__(
        self,
        lab_dir: Path,
        topology: str = "single",
        *,
        cache_dir: Path = Path.home() / ".cache" / "labkit",
        heap_mb: int = 512,
        java: str = "java",
        mvn: str = "mvn",
        maven_settings: Path | None = None,
        nodes_per_region: int | None = None,
        ring_delay_ms: int = 1000,
        start_timeout_s: float = 180,
        container_dir: Path | None = None,
        extra_jvm_opts: Sequence[str] = (),
        quick_start: bool = True,
        user: str | None = None,
        credentials: CassandraCredentials | None = None,
        _clusters: dict[str, CassandraCluster] | None = None,
    ) -> None:
        if topology not in TOPOLOGIES:
            raise ValueError(
                f"unknown Cassandra topology {topology!r}; valid topologies: {', '.join(TOPOLOGIES)}"
            )
        self.lab_dir = Path(lab_dir)
        self.topology = topology
        self.cache_dir = Path(cache_dir)
        self.heap_mb = heap_mb
        self.java = java
        self.mvn = mvn
        self.maven_settings = maven_settings
        self.nodes_per_region = nodes_per_region
        self.ring_delay_ms = ring_delay_ms
        self.start_timeout_s = start_timeout_s
        self.container_dir = Path(container_dir) if container_dir else None
        self.extra_jvm_opts = list(extra_jvm_opts)
        self.quick_start = quick_start
        self.user = user
        self.credentials = credentials or CassandraCredentials()
        self.clusters: dict[str, CassandraCluster] = dict(_clusters or {})

    # -- accessors ---------------------------------------------------------

    @property
    def regions(self) -> list[str]:
        return list(TOPOLOGIES[self.topology])

    def region(self, name: str) -> CassandraCluster:
        """The cluster serving region ``name`` (``us``; ``eu`` in ``regions``)."""
        try:
            return self.clusters[name]
        except KeyError:
            raise KeyError(
                f"no Cassandra region {name!r} in topology {self.topology!r} "
                f"(started: {', '.join(self.clusters) or 'none'}); regions: {', '.join(self.regions)}"
            ) from None

    @property
    def contact_points(self) -> list[tuple[str, int]]:
        """Contact points of the first region's cluster (the only one outside ``regions``)."""
        return self.region(self.regions[0]).contact_points

    @property
    def nodes(self) -> list[CassandraNode]:
        return [n for c in self.clusters.values() for n in c.nodes]

    @property
    def cqlsh_credentials(self) -> Path:
        """cqlsh's credentials file for the lab's superuser (``cqlsh --credentials FILE``).

        Mode 0600 and owned by whoever runs labkit, as cqlsh requires; written by :meth:`start`.
        """
        return self.lab_dir / "cassandra" / "cqlsh-credentials"

    def connect(self, keyspace: str | None = None, *, region: str | None = None, **kwargs: Any):
        """A driver session on ``region`` (default: the first region)."""
        return self.region(region or self.regions[0]).connect(keyspace, **kwargs)

    # -- lifecycle ---------------------------------------------------------

    def _build(self) -> None:
        check_java(self.java)
        lib = resolve_jars(self.cache_dir, mvn=self.mvn, maven_settings=self.maven_settings)
        lib = self._readable_lib(lib)
        first_host = 1
        jvm_opts = list(self.extra_jvm_opts)
        if self.quick_start:
            # C1 only: on 2 cores three JVMs spend most of start-up in C2 compiles; measured
            # ring ready 27 s -> 13 s. Peak throughput is lower: quick_start=False for
            # experiments that measure the server's own CPU cost.
            jvm_opts.append("-XX:TieredStopAtLevel=1")
        for region, n in TOPOLOGIES[self.topology].items():
            n = self.nodes_per_region or n
            self.clusters[region] = CassandraCluster(
                self.lab_dir / "cassandra" / region,
                lib_dir=lib,
                nodes=n,
                dc=region,
                cluster_name=f"labkit-{region}",
                first_host=first_host,
                heap_mb=self.heap_mb,
                java=self.java,
                ring_delay_ms=self.ring_delay_ms,
                container_dir=self.container_dir,
                extra_jvm_opts=jvm_opts,
                user=self.user,
                timeout_s=self.start_timeout_s,
                credentials=self.credentials,
            )
            first_host += n

    def _readable_lib(self, lib: Path) -> Path:
        """The jars as the server account can read them: staged in the lab dir if the cache is private."""
        if self.user is None or _world_readable(lib):
            return lib
        staged = self.lab_dir / "cassandra" / "lib" / lib.parent.name
        if not (staged / ".complete").exists():
            staged.mkdir(parents=True, exist_ok=True)
            for jar in lib.glob("*.jar"):
                target = staged / jar.name
                if target.exists():
                    continue
                try:
                    os.link(jar, target)
                except OSError:
                    shutil.copyfile(jar, target)
                target.chmod(0o644)
            (staged / ".complete").touch()
        for d in (staged, *staged.parents):
            if d == Path("/") or d.stat().st_mode & stat.S_IXOTH:
                continue
            d.chmod(d.stat().st_mode | 0o755)
        return staged

    def start(self) -> float:
        """Resolve jars if needed, start every cluster and wait for CQL; return seconds taken.

        Regions are independent clusters, so all their nodes start at once.
        """
        t0 = time.monotonic()
        if not self.clusters:
            self._build()
        try:
            _each(list(self.clusters.values()), lambda c: c.start())
        except BaseException:
            self.stop()
            raise
        creds = self.credentials
        _write_secret(self.cqlsh_credentials, f"[plain_text_auth]\nusername = {creds.user}\n"
                      f"password = {creds.password}\n", mode=0o600)
        return time.monotonic() - t0

    def stop(self) -> None:
        """Stop every node of every cluster; afterwards no JVM and no listening port remain."""
        for c in self.clusters.values():
            c.stop()

    def members(self) -> list[CassandraNode]:
        return self.nodes

    # -- state -------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """A JSON-able dict; :meth:`from_state` in another process reattaches to the same JVMs."""
        return {
            "kind": self.kind,
            "lab_dir": str(self.lab_dir),
            "topology": self.topology,
            "cache_dir": str(self.cache_dir),
            "heap_mb": self.heap_mb,
            "java": self.java,
            "mvn": self.mvn,
            "maven_settings": str(self.maven_settings) if self.maven_settings else None,
            "nodes_per_region": self.nodes_per_region,
            "ring_delay_ms": self.ring_delay_ms,
            "start_timeout_s": self.start_timeout_s,
            "container_dir": str(self.container_dir) if self.container_dir else None,
            "extra_jvm_opts": list(self.extra_jvm_opts),
            "quick_start": self.quick_start,
            "user": self.user,
            "clusters": {r: c.to_state() for r, c in self.clusters.items()},
        }

    @classmethod
    def from_state(cls, d: dict[str, Any], *, credentials: CassandraCredentials) -> "Cassandra":
        """Rebuild from :meth:`to_state` output (e.g. the lab's state file).

        The state holds no password: ``credentials`` are those the lab keeps in its secrets.
        """
        return cls(
            Path(d["lab_dir"]),
            d["topology"],
            cache_dir=Path(d["cache_dir"]),
            heap_mb=d["heap_mb"],
            java=d["java"],
            mvn=d["mvn"],
            maven_settings=Path(d["maven_settings"]) if d.get("maven_settings") else None,
            nodes_per_region=d.get("nodes_per_region"),
            ring_delay_ms=d["ring_delay_ms"],
            start_timeout_s=d["start_timeout_s"],
            container_dir=Path(d["container_dir"]) if d.get("container_dir") else None,
            extra_jvm_opts=d.get("extra_jvm_opts", ()),
            quick_start=d.get("quick_start", True),
            user=d.get("user"),
            credentials=credentials,
            _clusters={r: CassandraCluster.from_state(c, credentials=credentials)
                       for r, c in d["clusters"].items()},
        )

    def __repr__(self) -> str:
        return f"<Cassandra topology={self.topology} regions={list(self.clusters)}>"


def _world_readable(path: Path) -> bool:
    """True if any user can traverse to ``path`` and read it."""
    p = path.resolve()
    for parent in [p, *p.parents]:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return False
    return bool(p.stat().st_mode & stat.S_IROTH)
