"""Cassandra on the docker provider: each node of each topology in a container of its own.

One image (``containers/cassandra/Dockerfile``: the jars Maven resolves from the same
``pom.xml`` as natively, on Debian's OpenJDK 17) runs every node. A node is the
:class:`CassandraNode` it is natively (the same ``cassandra.yaml``, JVM options, login,
readiness check, ``expect_peers``), with what differs in a container:

- **Addresses.** A node gossips on its container's address on the lab's private network
  (the entrypoint fills it into ``listen_address``); its seeds are the other containers, by
  name. CQL listens on every interface of the container, and its port is published on the
  host's loopback address the node has natively (127.0.0.N, the topology's block), at the
  same port inside and out, and announced as such (``broadcast_rpc_address``): what a driver
  learns from ``system.peers_v2`` is where the host reaches each node, so nothing translates.
- **Files.** The lab renders the node's configuration as natively and hands it over in the
  container's environment; the entrypoint writes it into the node's directory in the
  container (``/var/lib/cassandra``), where its data lives and goes with the container.
- **Controls.** ``pause`` is ``docker pause``; ``nodetool`` runs in the container (JMX stays
  on the container's own 127.0.0.1); stop and start keep the container and its data.

The regions' Toxiproxy links stay a process of the host's: they proxy to the published ports.

>>> lab = lk.up(provider="docker", cassandra="ring")          # doctest: +SKIP
>>> lab.cassandra.nodes[2].pause()                            # docker pause   # doctest: +SKIP
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from labkit._labdir import record
from labkit.providers.docker import DockerLab, DockerService
from labkit.services.cassandra import Cassandra, CassandraCluster, CassandraCredentials
from labkit.services.cassandra.errors import CassandraError
from labkit.services.cassandra.node import SECURED_MARKER, CassandraNode

#: In the image (containers/cassandra/Dockerfile).
RUN_DIR = Path("/var/lib/cassandra")
LIB_DIR = Path("/opt/cassandra/lib")
JAMM = Path("/opt/cassandra/jamm.jar")
#: What the entrypoint replaces with the container's address on the lab's network.
ADDRESS_MARK = "@CONTAINER_ADDRESS@"


class DockerCassandraNode(DockerService, CassandraNode):
    """One Cassandra node in a container (see the module docstring)."""

    image_service = "cassandra"

    def __init__(self, *args: Any, docker: DockerLab | None = None, **kwargs: Any) -> None:
        self.docker = docker  # type: ignore[assignment]  # before the cluster names the seeds
        super().__init__(*args, **kwargs)

    @property
    def container_port(self) -> int:  # type: ignore[override]
        return self.native_port

    @property
    def container_name(self) -> str:
        # The ring's and the regions' first nodes are both node1 of dc us: the topology's
        # directory (cassandra-ring, cassandra-regions) tells their containers apart.
        return self.docker.container_name(
            f"{self.workdir.parent.parent.name}-{self.dc}-{self.workdir.name}")

    @property
    def run_dir(self) -> Path:
        return RUN_DIR

    @property
    def storage_endpoint(self) -> str:
        return f"{self.container_name}:{self.storage_port}"

    def jamm_jar(self) -> Path:
        return JAMM

    def published(self) -> dict[str, tuple[str, int]]:
        return {f"{self.native_port}/tcp": (self.host, self.native_port)}

    def render_yaml(self) -> str:
        yaml = super().render_yaml()
        yaml = re.sub(r"^listen_address: .*$", f"listen_address: {ADDRESS_MARK}", yaml,
                      flags=re.MULTILINE)
        # broadcast_rpc_address stays the host's 127.0.0.N, where the port is published.
        return re.sub(r"^rpc_address: .*$", "rpc_address: 0.0.0.0", yaml, flags=re.MULTILINE)

    def container_env(self) -> dict[str, str]:
        creds = self.credentials
        return {"LABKIT_CASSANDRA_YAML": self.render_yaml(),
                "LABKIT_CASSANDRA_RACKDC": self.rackdc(),
                "LABKIT_JMX_LOGIN": f"{creds.user} {creds.jmx_password}",
                "LABKIT_SEED_HOSTS": " ".join(s.rsplit(":", 1)[0] for s in self.seeds),
                "MALLOC_ARENA_MAX": "4"}

    def container_command(self) -> list[str]:
        return self.command()

    def _create(self) -> None:
        # The lab's own directory for the node keeps only the marker that its cluster is
        # secured; a new container is a new cluster's data, so an old marker goes.
        record(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / SECURED_MARKER).unlink(missing_ok=True)
        super()._create()

    def nodetool(self, *args: str, timeout_s: float = 120) -> str:
        """``nodetool ARGS`` in the container, over its local JMX, logged in."""
        return self.run_inside(self.nodetool_command(*args), what=f"nodetool {' '.join(args)}",
                               error=CassandraError)

    def rss_bytes(self) -> int:
        """The container's memory in use now (0 when it is not running)."""
        c = self.container()
        if c is None or c.status != "running":
            return 0
        return int(c.stats(stream=False).get("memory_stats", {}).get("usage", 0))

    def to_state(self) -> dict[str, Any]:
        return {**super().to_state(), "workdir": str(self.workdir)}


class DockerCassandraCluster(CassandraCluster):
    node_class = DockerCassandraNode


class DockerCassandra(Cassandra):
    """A topology's clusters in containers: the jars and the JVM are the image's."""

    cluster_class = DockerCassandraCluster

    def __init__(self, *args: Any, docker: DockerLab | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.docker = docker
        self._attach()

    @property
    def node_options(self) -> dict[str, Any]:  # type: ignore[override]
        return {"docker": self.docker}

    def lib_dir(self) -> Path:
        return LIB_DIR

    def _attach(self) -> None:
        for n in self.nodes:  # restored ones (from_state) have none yet
            n.docker = self.docker  # type: ignore[attr-defined]

    def to_state(self) -> dict[str, Any]:
        return {**super().to_state(), "provider": "docker"}

    @classmethod
    def from_state(cls, d: dict[str, Any], *, credentials: CassandraCredentials,
                   docker: DockerLab | None = None) -> "DockerCassandra":
        cas = super().from_state(d, credentials=credentials)
        assert isinstance(cas, DockerCassandra)
        cas.docker = docker
        cas._attach()
        return cas


# ------------------------------------------------------------------------------- builders

def cassandra(ctx: Any, topology: str, credentials: CassandraCredentials) -> DockerCassandra:
    cfg = ctx.config
    return DockerCassandra(cfg.lab_dir, topology, heap_mb=cfg.cassandra_heap_mb, java="java",
                           start_timeout_s=cfg.startup_timeout_s, credentials=credentials,
                           docker=DockerLab(cfg))


def restore(ctx: Any, saved: dict[str, Any], credentials: CassandraCredentials) -> DockerCassandra:
    return DockerCassandra.from_state(saved, credentials=credentials, docker=DockerLab(ctx.config))
