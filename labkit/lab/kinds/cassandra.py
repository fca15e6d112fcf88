"""Cassandra in the lab: one or more topologies side by side (``labkit.services.cassandra``).

The handle is ``{topology: Cassandra}``: notebook 09 brings up the ring, notebook 10 the two
regions beside it, notebook 12 the ring again (a reattach). Each topology has its own
addresses and data (``FIRST_HOST``). ``lab.cassandra`` is the topology asked for in this
``up`` (``config.cassandra``), else the only one running, else an error naming the choices;
``lab.cassandra_topologies`` has them all.
"""

from __future__ import annotations

from typing import Any, Callable

from labkit._proc import ServiceError, new_password
from labkit.config import CASSANDRA_TOPOLOGIES
from labkit.lab.kinds.base import BuildContext, ServiceKind
from labkit.providers import docker_cassandra, external
from labkit.services.cassandra import Cassandra, CassandraCredentials

Topologies = dict[str, Cassandra]


class CassandraKind(ServiceKind):
    name = "cassandra"
    secrets = {"cassandra_user": lambda: "lab", "cassandra_password": new_password,
               "cassandra_jmx_password": new_password}
    accessors = ("cassandra_topologies",)

    @staticmethod
    def credentials(ctx: BuildContext) -> CassandraCredentials:
        s = ctx.secrets
        return CassandraCredentials(s["cassandra_user"], s["cassandra_password"],
                                    s["cassandra_jmx_password"])

    def wanted(self, config: Any, saved: Any) -> bool:
        return bool(config.cassandra) or saved is not None

    @staticmethod
    def saved_topologies(saved: dict[str, Any] | None) -> dict[str, Any]:
        """{topology: state}; a state file from before topologies ran side by side held one."""
        if saved is None:
            return {}
        return {saved["topology"]: saved} if "topology" in saved else dict(saved)

    def _topologies(self, ctx: BuildContext, saved: dict[str, Any] | None,
                    restore: Callable[[dict[str, Any]], Cassandra],
                    new: Callable[[str], Cassandra]) -> Topologies:
        """The topologies the lab runs (``restore``d), and the one this ``up`` asks for (``new``)."""
        cfg = ctx.config
        out = {t: restore(s) for t, s in self.saved_topologies(saved).items()}
        if cfg.cassandra and cfg.cassandra not in out and not ctx.attaching:
            out[cfg.cassandra] = new(cfg.cassandra)
        return out

    def native(self, ctx: BuildContext, saved: dict[str, Any] | None) -> Topologies:
        cfg, creds = ctx.config, self.credentials(ctx)
        return self._topologies(
            ctx, saved, lambda s: Cassandra.from_state(s, credentials=creds),
            lambda t: Cassandra(cfg.lab_dir, t, cache_dir=cfg.cache_dir,
                                heap_mb=cfg.cassandra_heap_mb, java=cfg.java_bin,
                                mvn=cfg.mvn_bin, user=ctx.user,
                                start_timeout_s=cfg.startup_timeout_s, credentials=creds))

    def docker(self, ctx: BuildContext, saved: dict[str, Any] | None) -> Topologies:
        creds = self.credentials(ctx)
        return self._topologies(ctx, saved, lambda s: docker_cassandra.restore(ctx, s, creds),
                                lambda t: docker_cassandra.cassandra(ctx, t, creds))

    def external(self, ctx: BuildContext, saved: dict[str, Any] | None) -> Topologies:
        wanted = [*self.saved_topologies(saved), "" if ctx.attaching else ctx.config.cassandra]
        return {t: external.cassandra(ctx.config.lab_dir, ctx.external, t)
                for t in dict.fromkeys(wanted) if t}

    def members(self, topologies: Topologies) -> list[Cassandra]:
        return list((topologies or {}).values())

    def state(self, topologies: Topologies) -> dict[str, Any]:
        return {t: cas.to_state() for t, cas in topologies.items()}

    def access(self, topologies: Topologies, lab: Any) -> Cassandra | None:
        if not topologies:
            return None
        asked = lab.config.cassandra
        if asked in topologies:
            return topologies[asked]
        running = ", ".join(topologies)
        if asked:
            raise ServiceError(f"Cassandra {asked} is not running in this lab (it runs "
                               f"{running}); start it with `lk.up(cassandra='{asked}')` or "
                               f"`labkit up --cassandra {asked}`")
        if len(topologies) == 1:
            return next(iter(topologies.values()))
        raise ServiceError(f"this lab runs several Cassandra topologies ({running}); say which: "
                           f"`lk.up(cassandra='{next(iter(topologies))}')` (or "
                           "LABKIT_CASSANDRA), or `lab.cassandra_topologies[...]`")

    def cassandra_topologies(self, topologies: Topologies, lab: Any) -> Topologies:
        """Every Cassandra topology running in the lab, by name."""
        return dict(topologies or {})

    @staticmethod
    def main(topologies: Topologies, lab: Any) -> Cassandra:
        """The topology ``labkit env`` points cqlsh at: the asked-for one, else the first running."""
        if lab.config.cassandra in topologies:
            return topologies[lab.config.cassandra]
        return next(topologies[t] for t in CASSANDRA_TOPOLOGIES if t in topologies)

    def env(self, topologies: Topologies, lab: Any) -> dict[str, str]:
        out = {}
        for t, cas in topologies.items():
            for region, c in cas.clusters.items():
                out[f"LABKIT_CASSANDRA_{t.upper()}_{region.upper()}"] = _points(c.contact_points)
        cas = self.main(topologies, lab)
        out.update({f"LABKIT_CASSANDRA_{region.upper()}": _points(c.contact_points)
                    for region, c in cas.clusters.items()})
        # cqlsh reads CQLSH_HOST/CQLSH_PORT (the first region's first node) and takes the
        # login from a credentials file: `cqlsh --credentials "$LABKIT_CQLSH_CREDENTIALS"`.
        host, port = cas.contact_points[0]
        creds = cas.credentials
        out.update(CQLSH_HOST=host, CQLSH_PORT=str(port),
                   LABKIT_CQLSH_CREDENTIALS=str(cas.cqlsh_credentials),
                   LABKIT_CASSANDRA_USER=creds.user, LABKIT_CASSANDRA_PASSWORD=creds.password)
        return out

    def status_rows(self, topologies: Topologies, lab: Any) -> list[dict[str, Any]]:
        return [{**row, "group": f"cassandra {t}"}
                for t, cas in topologies.items() for row in cas.health()]

    def topology(self, topologies: Topologies, lab: Any) -> list[str]:
        lines = []
        for t, cas in topologies.items():
            for region, cluster in cas.clusters.items():
                lines.append(f"  cassandra {t:<8} {region}: {cluster.cluster_name}, "
                             f"{len(cluster.nodes)} node(s), dc {cluster.dc}")
                for n in cluster.nodes:
                    lines.append(f"    └─ {n.workdir.name:<14}  {n.address}")
        return lines


def _points(points: list[tuple[str, int]]) -> str:
    return ",".join(f"{h}:{p}" for h, p in points)
