"""Cassandra in the lab: the clusters of a topology (``labkit.services.cassandra``)."""

from __future__ import annotations

from typing import Any

from labkit.lab.kinds.base import BuildContext, ServiceKind
from labkit.lab.secrets import token
from labkit.services.cassandra import Cassandra, CassandraCredentials


class CassandraKind(ServiceKind):
    name = "cassandra"
    secrets = {"cassandra_user": lambda: "lab", "cassandra_password": token,
               "cassandra_jmx_password": token}

    @staticmethod
    def credentials(ctx: BuildContext) -> CassandraCredentials:
        s = ctx.secrets
        return CassandraCredentials(s["cassandra_user"], s["cassandra_password"],
                                    s["cassandra_jmx_password"])

    def native(self, ctx: BuildContext, saved: dict[str, Any] | None) -> Cassandra:
        cfg, creds = ctx.config, self.credentials(ctx)
        if saved is not None:  # reattach to the topology that runs, whatever was asked
            return Cassandra.from_state(saved, credentials=creds)
        return Cassandra(cfg.lab_dir, cfg.cassandra or "single", cache_dir=cfg.cache_dir,
                         heap_mb=cfg.cassandra_heap_mb, java=cfg.java_bin, mvn=cfg.mvn_bin,
                         user=ctx.user, start_timeout_s=cfg.startup_timeout_s,
                         credentials=creds)

    def env(self, cas: Cassandra, lab: Any) -> dict[str, str]:
        out = {f"LABKIT_CASSANDRA_{region.upper()}": ",".join(f"{h}:{p}"
                                                              for h, p in c.contact_points)
               for region, c in cas.clusters.items()}
        # cqlsh reads CQLSH_HOST/CQLSH_PORT (the first region's first node) and takes the
        # login from a credentials file: `cqlsh --credentials "$LABKIT_CQLSH_CREDENTIALS"`.
        host, port = cas.contact_points[0]
        creds = cas.credentials
        out.update(CQLSH_HOST=host, CQLSH_PORT=str(port),
                   LABKIT_CQLSH_CREDENTIALS=str(cas.cqlsh_credentials),
                   LABKIT_CASSANDRA_USER=creds.user, LABKIT_CASSANDRA_PASSWORD=creds.password)
        return out

    def topology(self, cas: Cassandra, lab: Any) -> list[str]:
        lines = []
        for region, cluster in cas.clusters.items():
            lines.append(f"  cassandra {region:<8} {cluster.cluster_name}, "
                         f"{len(cluster.nodes)} node(s), dc {cluster.dc}")
            for n in cluster.nodes:
                lines.append(f"    └─ {n.workdir.name:<14}  {n.address}")
        return lines
