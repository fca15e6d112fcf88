"""Distance between the regions of the ``regions`` topology: a Toxiproxy link per (client, cluster).

A client "in" region ``eu`` reaches the ``eu`` cluster through the link ``eu-to-eu`` (no delay,
or ``local_delay_ms``) and the ``us`` cluster through ``eu-to-us`` (``delay_ms`` each way:
40 ms gives a cross-region round trip of ~80 ms against < 1 ms locally). Links carry real
CQL traffic; Toxiproxy counts their bytes; disabling every link into a region cuts it off
(a partition: connections close, new ones are refused, so requests fail at once).

>>> net = lab.regions                                   # doctest: +SKIP
>>> session = net.connect("eu", "us")                   # a driver session, 80 ms away
>>> net.partition("us"); net.heal("us")
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from labkit.services.base import ServiceGroup
from labkit.services.toxiproxy import Toxiproxy

__all__ = ["RegionNetwork", "link_name"]


def link_name(client: str, cluster: str) -> str:
    """The proxy a client in region ``client`` uses to reach region ``cluster``'s cluster."""
    return f"{client}-to-{cluster}"


class RegionNetwork(ServiceGroup):
    """A Toxiproxy server and its links between every pair of regions (both ways, and local).

    ``listen`` maps each link name to its (host, port) on loopback; the links are created
    (``wire``) once the clusters answer, since their ports are known only then.
    """

    kind = "regions"

    def __init__(self, toxiproxy: Toxiproxy, regions: list[str], listen: dict[str, int], *,
                 delay_ms: float = 40.0, local_delay_ms: float = 0.0) -> None:
        self.toxiproxy, self.regions, self.listen = toxiproxy, list(regions), dict(listen)
        self.delay_ms, self.local_delay_ms = delay_ms, local_delay_ms
        self.cassandra: Any = None  # the ``regions`` topology, set by ``wire``
        self._sessions: dict[tuple[str, str, str | None], Any] = {}

    @property
    def name(self) -> str:
        return "toxiproxy"

    def members(self) -> list[Toxiproxy]:
        return [self.toxiproxy]

    def start(self) -> "RegionNetwork":
        self.toxiproxy.start()
        return self

    def stop(self) -> None:
        self.close()
        self.toxiproxy.stop()

    @property
    def links(self) -> list[tuple[str, str]]:
        return [(c, s) for c in self.regions for s in self.regions]

    def address(self, client: str, cluster: str) -> tuple[str, int]:
        """Where a client in ``client`` connects to reach ``cluster``."""
        self._check(client, cluster)
        return (self.toxiproxy.host, self.listen[link_name(client, cluster)])

    def _check(self, *regions: str) -> None:
        for r in regions:
            if r not in self.regions:
                raise KeyError(f"no region {r!r}; the regions are {', '.join(self.regions)}")

    # -- wiring and faults ----------------------------------------------------------------
    def wire(self, cassandra: Any) -> None:
        """Create (or re-point) every link at the clusters of ``cassandra``, with its delay."""
        self.cassandra = cassandra
        have = self.toxiproxy.proxies()
        for client, cluster in self.links:
            name = link_name(client, cluster)
            host, port = cassandra.region(cluster).contact_points[0]
            upstream = f"{host}:{port}"
            listen = "{}:{}".format(*self.address(client, cluster))
            fresh = name not in have or have[name]["upstream"] != upstream
            self.toxiproxy.ensure_proxy(name, listen=listen, upstream=upstream)
            if fresh:
                self.set_delay(client, cluster, self.default_delay_ms(client, cluster))

    def wired(self) -> bool:
        have = self.toxiproxy.proxies()
        return all(link_name(c, s) in have for c, s in self.links)

    def default_delay_ms(self, client: str, cluster: str) -> float:
        return self.local_delay_ms if client == cluster else self.delay_ms

    def set_delay(self, client: str, cluster: str, delay_ms: float) -> None:
        """One-way delay on the link, each direction (a round trip pays it twice)."""
        self._check(client, cluster)
        self.toxiproxy.set_latency(link_name(client, cluster), delay_ms=delay_ms)

    def delay_ms_of(self, client: str, cluster: str) -> float:
        return self.toxiproxy.latency_ms(link_name(client, cluster))

    def partition(self, region: str) -> None:
        """Cut ``region``'s cluster off from the other regions' clients (its own still reach it)."""
        self._check(region)
        for client in self.regions:
            if client != region:
                self.toxiproxy.set_enabled(link_name(client, region), False)

    def heal(self, region: str | None = None) -> None:
        """Undo ``partition`` (of ``region``, or of every region)."""
        for client, cluster in self.links:
            if region in (None, cluster):
                self.toxiproxy.set_enabled(link_name(client, cluster), True)

    def reset(self) -> None:
        """Every link enabled, with its configured delay."""
        if not self.wired():
            return
        self.heal()
        for client, cluster in self.links:
            self.set_delay(client, cluster, self.default_delay_ms(client, cluster))

    # -- traffic --------------------------------------------------------------------------
    def bytes_by_link(self) -> dict[tuple[str, str], int]:
        """Bytes each link has carried (both directions) over connections that have closed.

        Toxiproxy adds a connection's bytes to its counters when the connection ends (the
        copy loop's total), so close the sessions (``close()``) before reading a total.
        """
        counted = self.toxiproxy.bytes_by_proxy()
        return {(c, s): counted.get(link_name(c, s), 0) for c, s in self.links}

    def settled_bytes_by_link(self, timeout_s: float = 5.0) -> dict[tuple[str, str], int]:
        """``bytes_by_link`` once the counts stop changing: a close reaches Toxiproxy a moment later."""
        last, deadline = self.bytes_by_link(), time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = self.bytes_by_link()
            if now == last:
                break
            last = now
        return last

    def cross_region_bytes(self) -> int:
        return sum(b for (c, s), b in self.bytes_by_link().items() if c != s)

    def connect(self, client: str, cluster: str, keyspace: str | None = None, **kwargs: Any):
        """A driver session on ``cluster``'s cluster, for a client in ``client`` (through the link).

        Closed by ``close()`` (or the lab's ``down``). Reconnection is retried every second,
        so a healed partition is usable again within about a second.
        """
        from cassandra.policies import ConstantReconnectionPolicy

        from labkit.services.cassandra.driver import driver_cluster

        if self.cassandra is None:
            raise RuntimeError("the links are not wired yet; use `lab.regions` (it wires them)")
        kwargs.setdefault("reconnection_policy", ConstantReconnectionPolicy(1.0))
        cluster_ = driver_cluster([self.address(client, cluster)],
                                  credentials=self.cassandra.credentials, **kwargs)
        try:
            session = cluster_.connect(keyspace)
        except BaseException:
            cluster_.shutdown()
            raise
        self._sessions[(client, cluster, keyspace, id(session))] = session
        return session

    def close(self) -> None:
        """Shut down the sessions ``connect`` handed out."""
        for s in self._sessions.values():
            with contextlib.suppress(Exception):
                s.cluster.shutdown()
        self._sessions.clear()

    # -- state ----------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {"toxiproxy": self.toxiproxy.to_state(), "regions": self.regions,
                "listen": self.listen, "delay_ms": self.delay_ms,
                "local_delay_ms": self.local_delay_ms}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> "RegionNetwork":
        t = d["toxiproxy"]
        toxi = Toxiproxy(Path(t["workdir"]), port=t["port"], binary=t.get("binary",
                         "toxiproxy-server"), host=t["host"], user=t.get("user")).restore(t)
        return cls(toxi, d["regions"], d["listen"], delay_ms=d["delay_ms"],
                   local_delay_ms=d["local_delay_ms"])

    def health(self) -> list[dict[str, Any]]:
        """The server's row, then one row per link: enabled, where it goes, its delay."""
        rows = [self.toxiproxy.health()]
        try:
            have = self.toxiproxy.proxies() if rows[0]["ok"] else {}
        except Exception:
            have = {}
        for client, cluster in self.links:
            name = link_name(client, cluster)
            p = have.get(name)
            if p is None:
                rows.append({"name": name, "ok": False, "address": "", "version":
                             "not wired: `labkit up --cassandra regions` wires it"})
                continue
            delay = next((t["attributes"]["latency"] for t in p.get("toxics") or []
                          if t["name"] == "latency_upstream"), 0)
            state = f"{delay} ms/way -> {p['upstream']}"
            rows.append({"name": name, "ok": bool(p["enabled"]), "address": p["listen"],
                         "version": state if p["enabled"] else f"PARTITIONED ({state})"})
        return rows
