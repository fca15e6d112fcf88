"""The clusters of a named topology (single, ring, regions): the lab's Cassandra service."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from labkit._labdir import record
from labkit.services.base import ServiceGroup
from labkit.services.cassandra.cluster import CassandraCluster, each
from labkit.services.cassandra.credentials import CassandraCredentials, write_secret
from labkit.services.cassandra.jars import readable_jars, resolve_jars
from labkit.services.cassandra.java import check_java
from labkit.services.cassandra.node import CassandraNode

__all__ = ["FIRST_HOST", "TOPOLOGIES", "Cassandra"]

#: topology name -> {region: number of nodes}
TOPOLOGIES: dict[str, dict[str, int]] = {
    "single": {"us": 1},
    "ring": {"us": 3},
    "regions": {"us": 1, "eu": 1},
}

#: topology name -> N of its first node's address 127.0.0.N. Each topology has a block of its
#: own, so a lab runs several side by side and no two clusters share an address (the ring
#: keeps 127.0.0.1-3). Its data lives in ``<lab_dir>/cassandra-<topology>/<region>``.
FIRST_HOST: dict[str, int] = {"ring": 1, "regions": 11, "single": 21}
HOSTS_PER_TOPOLOGY = 10


class Cassandra(ServiceGroup):
    """Cassandra 5.0 for a lab: the clusters of a named topology, native provider.

        >>> from pathlib import Path
        >>> with Cassandra(Path("/tmp/lab"), topology="single") as cas:          # doctest: +SKIP
        ...     print(cas.connect().execute("SELECT release_version FROM system.local").one())
        Row(release_version='5.0.9')

    ``topology="ring"`` gives 3 nodes in dc ``us``; ``topology="regions"`` gives two
    independent clusters, ``cas.region("us")`` and ``cas.region("eu")``. Topologies of one
    lab directory run side by side: each has its own addresses (``FIRST_HOST``) and data.

    Every cluster logs in with ``credentials`` (default: a fresh random password; the lab
    passes the one in its secrets, since a cluster keeps the password it was first started
    with). ``cqlsh --credentials <cas.cqlsh_credentials>`` logs in too.
    """

    kind = "cassandra"
    #: The class of its clusters (a provider's own, e.g. ``DockerCassandraCluster``).
    cluster_class: type[CassandraCluster] = CassandraCluster
    #: More keyword arguments for each new node (a provider's own).
    node_options: dict[str, Any] = {}

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
        hosts = (nodes_per_region or max(TOPOLOGIES[topology].values())) * len(TOPOLOGIES[topology])
        if hosts > HOSTS_PER_TOPOLOGY:
            raise ValueError(
                f"nodes_per_region={nodes_per_region}: topology {topology!r} has "
                f"{HOSTS_PER_TOPOLOGY} loopback addresses of its own; choose at most "
                f"{HOSTS_PER_TOPOLOGY // len(TOPOLOGIES[topology])} nodes per region")

    # -- accessors ---------------------------------------------------------

    @property
    def name(self) -> str:
        return f"cassandra-{self.topology}"

    @property
    def data_dir(self) -> Path:
        """Where this topology's clusters keep their nodes' data (one directory per region)."""
        return self.lab_dir / f"cassandra-{self.topology}"

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

    def lib_dir(self) -> Path:
        """Cassandra's jars, as the nodes' JVMs see them: resolved by Maven (once) and Java checked."""
        check_java(self.java)
        lib = resolve_jars(self.cache_dir, mvn=self.mvn, maven_settings=self.maven_settings)
        return readable_jars(lib, self.lab_dir, self.user)

    def _build(self) -> None:
        lib = self.lib_dir()
        first_host = FIRST_HOST[self.topology]
        jvm_opts = list(self.extra_jvm_opts)
        if self.quick_start:
            # C1 only: on 2 cores three JVMs spend most of start-up in C2 compiles; measured
            # ring ready 27 s -> 13 s. Peak throughput is lower: quick_start=False for
            # experiments that measure the server's own CPU cost.
            jvm_opts.append("-XX:TieredStopAtLevel=1")
        for region, n in TOPOLOGIES[self.topology].items():
            n = self.nodes_per_region or n
            self.clusters[region] = self.cluster_class(
                self.data_dir / region,
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
                node_options=self.node_options,
            )
            first_host += n

    def start(self) -> float:
        """Resolve jars if needed, start every cluster and wait for CQL; return seconds taken.

        Regions are independent clusters, so all their nodes start at once.
        """
        t0 = time.monotonic()
        record(self.lab_dir / "cassandra")  # jars staged there, cqlsh's credentials
        if not self.clusters:
            self._build()
        try:
            each(list(self.clusters.values()), lambda c: c.start())
        except BaseException:
            self.stop()
            raise
        self._write_cqlsh_credentials()
        return time.monotonic() - t0

    def _write_cqlsh_credentials(self) -> None:
        creds = self.credentials
        write_secret(self.cqlsh_credentials, f"[plain_text_auth]\nusername = {creds.user}\n"
                     f"password = {creds.password}\n", mode=0o600)

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
            _clusters={r: cls.cluster_class.from_state(c, credentials=credentials)
                       for r, c in d["clusters"].items()},
        )

    def __repr__(self) -> str:
        return f"<Cassandra topology={self.topology} regions={list(self.clusters)}>"


