"""One Cassandra cluster (a ring of nodes in one dc), started together, secured at its first start."""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from labkit._proc import wait_ready
from labkit.services.base import ServiceGroup
from labkit.services.cassandra.credentials import DEFAULT_SUPERUSER, CassandraCredentials
from labkit.services.cassandra.driver import driver_cluster, refused
from labkit.services.cassandra.errors import CassandraError
from labkit.services.cassandra.node import SECURED_MARKER, CassandraNode

__all__ = ["CassandraCluster"]


def _murmur3_tokens(n: int) -> list[int]:
    """Balanced single tokens for ``n`` nodes on Murmur3's ring [-2**63, 2**63)."""
    return [-(2**63) + i * (2**64 // n) for i in range(n)]

class CassandraCluster(ServiceGroup):
    """One Cassandra cluster (ring) of nodes in one dc, started together.

        >>> ring = CassandraCluster(Path("/tmp/lab/us"), nodes=3, dc="us",
        ...                         cluster_name="lab-us", lib_dir=resolve_jars(Path("/tmp/cache")))
        >>> with ring:                                                                # doctest: +SKIP
        ...     ring.connect().execute("SELECT release_version FROM system.local").one()
    """

    #: The class of its nodes (a provider's own, e.g. ``DockerCassandraNode``).
    node_class: type[CassandraNode] = CassandraNode

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
        node_options: dict[str, Any] | None = None,
    ) -> None:
        """``node_options``: more keyword arguments for each new node (a provider's own)."""
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
            self.node_class(
                self.cluster_dir / f"node{i + 1}", cluster_name=cluster_name, dc=dc,
                rack=f"rack{i + 1}", host=host, initial_token=token, lib_dir=lib_dir,
                heap_mb=heap_mb, java=java, ring_delay_ms=ring_delay_ms,
                container_dir=container_dir, extra_jvm_opts=extra_jvm_opts, user=user,
                timeout_s=timeout_s, credentials=self.credentials, ring_size=nodes,
                **(node_options or {}),
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
            each(self.nodes, lambda n: wait_ready(n.name, n.ready, timeout_s=n.timeout_s,
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
        each(self.nodes, lambda n: n.stop())

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
            if not refused(e):
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
            (n.workdir / SECURED_MARKER).touch()

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
        nodes = [cls.node_class.from_state(n, credentials=credentials) for n in d["nodes"]]
        for n in nodes:
            n.expect_peers = len(nodes) - 1
        return cls(Path(d["cluster_dir"]), lib_dir=nodes[0].lib_dir, nodes=nodes, dc=d["dc"],
                   cluster_name=d["cluster_name"], credentials=credentials)

    def __repr__(self) -> str:
        return f"<CassandraCluster {self.cluster_name} dc={self.dc} nodes={len(self.nodes)}>"


def each(items: Sequence[Any], action: Any) -> None:
    """Run ``action(item)`` for every node (or cluster) at once; re-raise the first failure."""
    if not items:
        return
    with ThreadPoolExecutor(len(items)) as pool:
        for f in [pool.submit(action, n) for n in items]:
            f.result()

