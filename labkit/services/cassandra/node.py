"""One Cassandra JVM on its own loopback address, natively run; start, stop, pause, nodetool."""

from __future__ import annotations

import re
import shutil
import signal
import string
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Sequence

import psutil

from labkit._proc import PortAllocator, listening, port_is_free, spawn
from labkit.services.base import NativeService
from labkit.services.cassandra.credentials import (DEFAULT_SUPERUSER, CassandraCredentials,
                                                   write_secret)
from labkit.services.cassandra.driver import READY_QUERY, driver_cluster, refused
from labkit.services.cassandra.errors import CassandraError
from labkit.services.templates import template_dir

__all__ = ["CassandraNode"]

# In a node's directory once the lab's superuser has replaced the default one on its cluster.
SECURED_MARKER = "lab-superuser"


def _previous_port(node_dir: Path, key: str, host: str) -> int:
    """The port ``key`` had in this node's last ``cassandra.yaml``, if it is free now; else 0.

    Peers remember a node by address *and* port (``system.peers_v2``): a node back on other
    ports is a stranger to them, and each of them waits ``block_for_peers_timeout_in_secs``
    (10 s) at start-up for the old endpoint to connect. Reusing the ports makes a warm start
    (data kept from the last ``up``) skip that wait.
    """
    try:
        found = re.search(rf"^{key}: (\d+)$",
                          (Path(node_dir) / "conf" / "cassandra.yaml").read_text(), re.MULTILINE)
    except OSError:
        return 0
    port = int(found.group(1)) if found else 0
    return port if port and port_is_free(host, port) else 0


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
        self.native_port = (native_port or _previous_port(node_dir, "native_transport_port", host)
                            or PortAllocator(host).take())
        self.storage_port = (storage_port or _previous_port(node_dir, "storage_port", host)
                             or PortAllocator(host).take())
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
    def run_dir(self) -> Path:
        """The node's directory as its JVM sees it (the docker provider's is in the container)."""
        return self.workdir

    @property
    def jmx_password_file(self) -> Path:
        """``<user> <password>``, read by the JVM's JMX authenticator and by nodetool ``-pwf``."""
        return self.run_dir / "conf" / "jmxremote.password"

    @property
    def secured(self) -> bool:
        """True once the lab's superuser has replaced the default one on this node's cluster."""
        return (self.workdir / SECURED_MARKER).exists()

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
        (nd / "conf" / "cassandra.yaml").write_text(self.render_yaml())
        (nd / "conf" / "cassandra-rackdc.properties").write_text(self.rackdc())
        shutil.copyfile(self.templates / "logback.xml", nd / "conf" / "logback.xml")
        # nodetool's logging (warnings to stderr): the lab's own, whatever the templates.
        shutil.copyfile(template_dir("cassandra") / "logback-tools.xml",
                        nd / "conf" / "logback-tools.xml")
        # JMX logins: read-only files of the server account (own() hands them over after this).
        creds = self.credentials
        write_secret(self.jmx_password_file, f"{creds.user} {creds.jmx_password}\n")
        write_secret(nd / "conf" / "jmxremote.access", f"{creds.user} readwrite\n")

    def render_yaml(self) -> str:
        """This node's ``cassandra.yaml``, from the template (paths as the JVM sees them)."""
        template = string.Template((self.templates / "cassandra.yaml").read_text())
        return template.substitute(
            cluster_name=self.cluster_name,
            initial_token=self.initial_token,
            host=self.host,
            storage_port=self.storage_port,
            native_port=self.native_port,
            seeds=",".join(self.seeds),
            node_dir=self.run_dir,
            memtable_mb=max(16, self.heap_mb // 8),
        )

    def rackdc(self) -> str:
        """``cassandra-rackdc.properties``: where the snitch places this node."""
        return f"dc={self.dc}\nrack={self.rack}\n"

    def jamm_jar(self) -> Path:
        """The jamm agent (``-javaagent``): Cassandra measures its objects' sizes with it."""
        jamm = sorted(self.lib_dir.glob("jamm-*.jar"))
        if not jamm:
            raise CassandraError(f"no jamm-*.jar in {self.lib_dir}; re-resolve the jars (delete {self.lib_dir.parent}).")
        return jamm[-1]

    def _jvm_options(self) -> list[str]:
        opts = []
        for line in (self.templates / "jvm17-server.options").read_text().splitlines():
            line = line.strip()
            if line.startswith("-"):
                opts.extend(line.split())  # "--add-opens m/p=ALL-UNNAMED" is two argv words
        return opts

    def command(self) -> list[str]:
        """The full ``java ...`` command line that runs this node."""
        nd = self.run_dir
        return [
            self.java,
            *self._jvm_options(),
            f"-Xms{self.heap_mb}M",
            f"-Xmx{self.heap_mb}M",
            f"-javaagent:{self.jamm_jar()}",
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
                if self.secured and refused(e):
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
            f"-Dlogback.configurationFile={self.run_dir / 'conf' / 'logback-tools.xml'}",
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

