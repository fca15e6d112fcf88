"""An application server in one region, reading and appending to users' AccessState lists.

Introduced in notebooks/10_akkio_placement.ipynb. Three placements, one client:

- ``static``: the user's data stays where the user signed up;
- ``akkio``: the placement service may move it (the client follows the location it is given,
  and re-resolves when a region refuses it: ``Fenced``);
- ``replicated``: every region holds every user; reads are local, writes go to all regions.

Every request is recorded (``records``): operation, the region that served it, whether it
crossed regions, latency, and the lookup's own cost and cache outcome.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from labkit.backend.akkio.store import Fenced, RegionStore

__all__ = ["AkkioClient", "RegionUnavailable", "Request"]

POLICIES = ("static", "akkio", "replicated")


class RegionUnavailable(RuntimeError):
    """The region holding the user's data cannot be reached from here (a partition)."""


@dataclass
class Request:
    at: float
    op: str
    user_id: int
    region: str            # the client's region
    served_by: str         # the cluster that answered
    crossed: int           # requests sent to another region's cluster (retries included)
    latency_ms: float
    lookup_ms: float = 0.0
    cache: str = ""        # hit / miss (the placement service's location cache)
    stale: int = 0         # times a region refused the location the client was given


@dataclass
class AkkioClient:
    """A client in ``region``: ``stores`` reach every region's cluster through this region's links."""

    region: str
    stores: dict[str, RegionStore]
    placement: Any = None          # a PlacementClient (static and akkio)
    policy: str = "akkio"
    moving_wait_s: float = 0.02
    max_attempts: int = 200
    records: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy={self.policy!r}: choose one of {', '.join(POLICIES)}")
        if self.policy != "replicated" and self.placement is None:
            raise ValueError(f"policy={self.policy!r} asks the placement service: pass "
                             "placement=PlacementService(...).client()")

    def read(self, user_id: int, limit: int = 20) -> list[int]:
        return self._request("read", user_id, lambda s, v: s.read(user_id, v, limit))

    def append(self, user_id: int, media_id: int) -> None:
        self._request("append", user_id, lambda s, v: s.append(user_id, v, media_id))

    def _request(self, op: str, user_id: int, action: Any) -> Any:
        t0 = time.perf_counter()
        if self.policy == "replicated":
            return self._replicated(op, user_id, action, t0)
        loc = self.placement.where(user_id, self.region)
        lookup_ms = (time.perf_counter() - t0) * 1000
        rec = Request(time.time(), op, user_id, self.region, "", 0, 0.0, lookup_ms,
                      self.placement.last_cache)
        for _ in range(self.max_attempts):
            if loc.moving:  # a migration is copying the data: wait for the new location
                time.sleep(self.moving_wait_s)
                loc = self.placement.where(user_id, refresh=True)
                continue
            rec.crossed += loc.region != self.region
            try:
                result = self._call(action, loc.region, loc.version, user_id)
            except Fenced:
                rec.stale += 1
                loc = self.placement.where(user_id, refresh=True)
                continue
            rec.served_by = loc.region
            rec.latency_ms = (time.perf_counter() - t0) * 1000
            self.records.append(rec)
            return result
        raise RuntimeError(f"user {user_id}: no region served the {op} after "
                           f"{self.max_attempts} attempts (a migration stuck?); see the "
                           "placement service's log")

    def _call(self, action: Any, region: str, version: int, user_id: int) -> Any:
        from cassandra import OperationTimedOut
        from cassandra.cluster import NoHostAvailable

        try:
            return action(self.stores[region], version)
        except (NoHostAvailable, OperationTimedOut) as e:
            raise RegionUnavailable(
                f"user {user_id}'s data is in region {region}, which cannot be reached from "
                f"{self.region} ({type(e).__name__}); a partition? `lab.regions.heal('{region}')`"
                " ends one") from None

    def _replicated(self, op: str, user_id: int, action: Any, t0: float) -> Any:
        rec = Request(time.time(), op, user_id, self.region, self.region, 0, 0.0)
        if op == "read":
            result = self._call(action, self.region, 1, user_id)
        else:  # every region's copy, at once; done when all have it
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(len(self.stores)) as pool:
                futures = [pool.submit(self._call, action, r, 1, user_id) for r in self.stores]
                result = [f.result() for f in futures][0]
            rec.crossed = len(self.stores) - 1
        rec.latency_ms = (time.perf_counter() - t0) * 1000
        self.records.append(rec)
        return result


def sign_up(db: Any, stores: dict[str, RegionStore], user_id: int, region: str,
            replicated: bool = False) -> None:
    """A new user in ``region``: the location row (version 1) and an empty, active list there.

    ``replicated=True`` gives the user an active list in every region (full replication).
    """
    db.place(user_id, region)
    for r, store in stores.items():
        if replicated or r == region:
            store.signup(user_id)
