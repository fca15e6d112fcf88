"""Deployment: production, a baseline and a canary pool behind one router, and the collector.

Netflix's way, which Kayenta is built for: the canary (the new release) is not compared with
production but with a *baseline*, a fresh pool of production's release started at the same
time, warmed the same way and given the same share of the traffic. Compared with production
itself, a canary at 1% would be judged against servers that are older (warmer caches, grown
memory) and a hundred times busier (a sync worker that serves one request a second answers
it more slowly than one kept busy); both differences are not the release's doing.

The router has three slots. ``start(release)`` puts ``release`` in production with all the
traffic. ``deploy(canary)`` starts the baseline and the canary in the two free slots, warms
each with requests sent to it directly, and puts both in service at weight 0.
``set_canary_percent(p)`` gives the canary and the baseline ``p`` % each (production keeps
the rest; so p is at most 50). ``rollback`` gives production everything back, then drains
(weight 0, no session left in flight) and stops the canary and the baseline. ``promote`` gives
the canary everything, drains and stops production and the baseline, and the canary becomes
production. Every step is a runtime-API call: the router is never restarted and no request is
dropped (tests/deploy check that on a history of every request).

Introduced in notebooks/13_continuous_deployment.ipynb.

>>> dep = Deployment.for_lab(lab, "deploy", WebConfig.from_lab(lab, "nb13"))      # doctest: +SKIP
>>> dep.start(base); dep.deploy(canary); dep.set_canary_percent(10)             # doctest: +SKIP
>>> dep.rollback()                                                              # doctest: +SKIP
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from labkit._proc import PortAllocator, ServiceError, service_account
from labkit.deploy.collector import Collector
from labkit.deploy.pool import ReleasePool
from labkit.deploy.release import Release
from labkit.deploy.router import Router
from labkit.web.config import WebConfig
from labkit.web.loadgen import RequestFn, run_load

ROLES = ("production", "baseline", "canary")


class Deployment:
    """Production, baseline and canary pools behind one router, scraped by one collector.

    ``warmup`` makes the requests a new pool is warmed with (``warmup_requests`` of them);
    ``log`` (a callable taking an event name and fields, e.g. a ``DecisionLog``) records
    every action with what the router reports after it.
    """

    def __init__(self, workdir: Path, config: WebConfig, *, workers: int = 2,
                 service_user: str | None = "labkit", interval_s: float = 1.0,
                 warmup: RequestFn | None = None, warmup_requests: int = 150,
                 log: Callable[..., Any] | None = None) -> None:
        self.workdir = Path(workdir)
        self.config, self.workers = config, workers
        self.router = Router(self.workdir / "router", slots=("a", "b", "c"),
                             user=service_account(service_user) if service_user else None)
        self.collector = Collector(interval_s)
        self.warmup, self.warmup_requests = warmup, warmup_requests
        self.slots: dict[str, str] = {}          # role -> slot
        self.pools: dict[str, ReleasePool] = {}  # slot -> pool
        self._lock = threading.Lock()
        self.log = log or (lambda event, **fields: None)

    @classmethod
    def for_lab(cls, lab: Any, name: str, config: WebConfig, **kwargs: Any) -> "Deployment":
        """A deployment in ``<lab_dir>/<name>``, its router run as the lab's server account."""
        return cls(lab.config.lab_dir / name, config,
                   service_user=lab.config.service_user, **kwargs)

    # ------------------------------------------------------------------------- roles
    @property
    def releases_dir(self) -> Path:
        return self.workdir / "releases"

    def pool(self, role: str) -> ReleasePool | None:
        """The pool in ``role`` (production, baseline, canary), None if there is none."""
        if role not in ROLES:
            raise ValueError(f"role {role!r}: choose one of {', '.join(ROLES)}")
        slot = self.slots.get(role)
        return self.pools.get(slot) if slot else None

    @property
    def production(self) -> ReleasePool:
        pool = self.pool("production")
        if pool is None:
            raise ServiceError("nothing in production yet; start the deployment with "
                               "start(release)")
        return pool

    @property
    def baseline(self) -> ReleasePool | None:
        return self.pool("baseline")

    @property
    def canary(self) -> ReleasePool | None:
        return self.pool("canary")

    def metrics_name(self, role: str) -> str:
        """The collector's name for the pool in ``role`` (unique per pool started)."""
        pool = self.pool(role)
        if pool is None:
            raise ServiceError(f"no {role} pool; deploy(release) first")
        return f"{role}:{pool.release.name}@{pool.workdir.name}"

    # ---------------------------------------------------------------------- actions
    def start(self, release: Release) -> "Deployment":
        """Start the router and put ``release`` in production with all the traffic."""
        self.router.start()
        self.collector.start()
        slot = self.router.slots[0]
        self._start_pool("production", slot, release)
        self.router.enable(slot, weight=100)
        self.log("production", release=release.name, source=release.source, slot=slot,
                 router=self.router.address, weights=self.router.weights())
        return self

    def deploy(self, release: Release) -> ReleasePool:
        """Start ``release`` as the canary beside a fresh baseline: warm, in service, no traffic."""
        if self.canary is not None:
            raise ServiceError(f"a canary ({self.canary.release.name}) is already deployed; "
                               "roll it back or promote it first")
        free = [s for s in self.router.slots if s not in self.pools]
        try:
            # Both start (and warm up) at once: their startup costs overlap.
            with ThreadPoolExecutor(2) as pool:
                starts = [pool.submit(self._start_pool, "baseline", free[0],
                                      self.production.release),
                          pool.submit(self._start_pool, "canary", free[1], release)]
            for f in starts:
                f.result()
            for role in ("baseline", "canary"):
                self.router.enable(self.slots[role], weight=0)
        except BaseException:
            for role in ("canary", "baseline"):
                if self.pool(role) is not None:
                    self._retire(role, drain=False)
            raise
        self.log("deploy", release=release.name, source=release.source, patch=release.patch,
                 digest=release.digest, baseline=self.production.release.name,
                 slots=dict(self.slots),
                 startup_s={r: round(self.pool(r).startup_s or 0, 2)
                            for r in ("baseline", "canary")})
        return self.canary

    def set_canary_percent(self, percent: int) -> dict[str, int]:
        """Send ``percent`` % of requests to the canary and as many to the baseline."""
        if self.canary is None:
            raise ServiceError("no canary deployed; deploy(release) first")
        if not 0 <= percent <= 50 or percent != int(percent):
            raise ValueError(f"percent={percent}: give a whole number from 0 to 50 (the "
                             "baseline gets as much; promote() for 100)")
        p = int(percent)
        self.router.set_weights({self.slots["production"]: 100 - 2 * p,
                                 self.slots["baseline"]: p, self.slots["canary"]: p})
        weights = self.router.weights()
        self.log("shift", canary=self.canary.release.name, percent=p, weights=weights,
                 slots=dict(self.slots))
        return weights

    def canary_percent(self) -> float:
        """The canary's share of the router's weights, in percent."""
        if self.canary is None:
            return 0.0
        w = self.router.weights()
        total = sum(w[s] for s in self.pools)
        return 100.0 * w[self.slots["canary"]] / total if total else 0.0

    def rollback(self, reason: str = "", evidence: dict | None = None) -> dict[str, Any]:
        """Production gets everything back; the canary and the baseline are drained and stopped."""
        canary = self.canary
        if canary is None:
            raise ServiceError("no canary to roll back")
        self.router.set_weights({self.slots["production"]: 100, self.slots["canary"]: 0,
                                 self.slots["baseline"]: 0})
        stats = {role: self._retire(role) for role in ("canary", "baseline")}
        self.log("rollback", release=canary.release.name, reason=reason,
                 evidence=evidence or {}, router_stats=stats, weights=self.router.weights())
        return stats

    def promote(self, reason: str = "", evidence: dict | None = None) -> dict[str, Any]:
        """The canary gets everything; production and the baseline are drained and stopped."""
        canary = self.canary
        if canary is None:
            raise ServiceError("no canary to promote")
        old = self.production.release.name
        self.router.set_weights({self.slots["canary"]: 100, self.slots["production"]: 0,
                                 self.slots["baseline"]: 0})
        stats = {role: self._retire(role) for role in ("production", "baseline")}
        self.slots["production"] = self.slots.pop("canary")
        self.log("promote", release=canary.release.name, replaced=old, reason=reason,
                 evidence=evidence or {}, router_stats=stats, weights=self.router.weights())
        return stats

    def stop(self) -> None:
        """Stop the collector, every pool and the router."""
        self.collector.stop()
        for slot in list(self.pools):
            self.pools.pop(slot).stop()
        self.slots.clear()
        self.router.stop()

    def __enter__(self) -> "Deployment":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------------- internals
    def _start_pool(self, role: str, slot: str, release: Release) -> ReleasePool:
        pool = ReleasePool(self.workdir / f"pool-{slot}", release, self.config,
                           port=PortAllocator(self.router.host).take(), workers=self.workers)
        pool.start()
        self.router.point(slot, pool.port)  # the slot is out of service (maint) until enabled
        try:
            if self.warmup is not None and self.warmup_requests:
                run_load(pool.host, pool.port, self.warmup, clients=self.workers,
                         duration_s=60, max_requests=self.warmup_requests, seed=17)
        except BaseException:
            pool.stop()
            raise
        with self._lock:
            self.pools[slot], self.slots[role] = pool, slot
        self.collector.watch(self.metrics_name(role), pool.metrics_text)
        return pool

    def _retire(self, role: str, drain: bool = True) -> dict[str, Any]:
        slot = self.slots[role]
        stats = _stat_summary(self.router.drain(slot)) if drain else {}
        self.collector.forget(self.metrics_name(role))
        self.pools.pop(slot).stop()
        del self.slots[role]
        return stats


def _stat_summary(row: dict[str, str]) -> dict[str, Any]:
    """The router's counters for one slot that say whether anything went wrong there."""
    keys = ("stot", "hrsp_2xx", "hrsp_4xx", "hrsp_5xx", "econ", "eresp", "wretr", "wredis",
            "cli_abrt", "srv_abrt")
    return {k: int(row[k]) if row.get(k, "").isdigit() else row.get(k) for k in keys}
