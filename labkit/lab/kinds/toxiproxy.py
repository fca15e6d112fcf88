"""Toxiproxy in the lab: the links between the regions of the ``regions`` topology.

It joins the lab with the ``regions`` topology (``labkit up --cassandra regions``) and
stays while that topology runs. ``lab.regions`` is its ``RegionNetwork``: the links are
wired once the clusters answer (``after_up``), since their ports are known only then.
"""

from __future__ import annotations

from typing import Any

from labkit.lab.kinds.base import BuildContext, ServiceKind
from labkit.services.cassandra import TOPOLOGIES
from labkit.services.regions import RegionNetwork, link_name
from labkit.services.toxiproxy import Toxiproxy


class ToxiproxyKind(ServiceKind):
    name = "toxiproxy"
    accessors = ("regions",)

    def wanted(self, config: Any, saved: Any) -> bool:
        return config.cassandra == "regions" or saved is not None

    def native(self, ctx: BuildContext, saved: dict[str, Any] | None) -> RegionNetwork:
        if saved is not None:
            return RegionNetwork.from_state(saved)
        cfg = ctx.config
        regions = list(TOPOLOGIES["regions"])
        toxi = Toxiproxy(cfg.lab_dir / "toxiproxy", port=ctx.ports.take(),
                         binary=cfg.toxiproxy_bin, host=cfg.host, user=ctx.user)
        listen = {link_name(c, s): ctx.ports.take() for c in regions for s in regions}
        return RegionNetwork(toxi, regions, listen, delay_ms=cfg.region_delay_ms,
                             local_delay_ms=cfg.local_delay_ms)

    # On docker the links stay a process of the host's, proxying to the ports the regions'
    # containers publish on loopback.
    docker = native

    def members(self, network: RegionNetwork) -> list[Any]:
        return [network] if network else []

    def after_up(self, network: RegionNetwork, lab: Any) -> None:
        cas = lab.cassandra_topologies.get("regions")
        if cas is not None:
            network.wire(cas)

    def access(self, network: RegionNetwork, lab: Any) -> RegionNetwork:
        return self.regions(network, lab)

    def regions(self, network: RegionNetwork | None, lab: Any) -> RegionNetwork:
        """The links between the regions, wired to the running ``regions`` clusters."""
        from labkit._proc import ServiceError

        cas = lab.cassandra_topologies.get("regions")
        if not network or cas is None:
            raise ServiceError("this lab has no regions; start them with "
                               "`lk.up(cassandra='regions')` or `labkit up --cassandra regions`")
        if network.cassandra is not cas:
            if network.wired():
                network.cassandra = cas
            else:
                network.wire(cas)
        return network

    def topology(self, network: RegionNetwork, lab: Any) -> list[str]:
        lines = [f"  toxiproxy          {network.toxiproxy.address} (links between regions)"]
        for c, s in network.links:
            host, port = network.address(c, s)
            lines.append(f"    └─ {link_name(c, s):<10} {host}:{port}  "
                         f"{network.default_delay_ms(c, s):g} ms each way")
        return lines

    def status_rows(self, network: RegionNetwork, lab: Any) -> list[dict[str, Any]]:
        return [{**row, "group": "toxiproxy (links between regions)"} for row in network.health()]

    def reset(self, network: RegionNetwork, lab: Any, dry_run: bool) -> list[str]:
        if not dry_run:
            network.reset()
        return ["toxiproxy: every link enabled, with its configured delay"]
