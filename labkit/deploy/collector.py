"""The lab's metrics collector: scrape each pool's ``/metrics`` on an interval, keep the series.

Every ``interval_s`` a thread scrapes every target (a release pool's prometheus endpoint,
written by ``labkit/deploy/harness.py``) and parses it with ``prometheus_client``'s own parser.
A *snapshot* holds cumulative counters; the difference of two snapshots is an *interval*:
requests by status class, the latency histogram of just those requests, CPU seconds and RSS
change of the workers alive at both ends. The judges compare per-interval series of the
canary against the baseline, as Kayenta compares time series from a metrics store.

Per-interval metrics (``METRICS``), all normalised per request, so a pool at 10% of the
traffic compares with one at 90%:

``error_ratio``          5xx answers / answers
``ok_ratio``             2xx answers / answers
``p50_ms`` ``p99_ms``    latency percentiles, from the histogram as Prometheus'
                         ``histogram_quantile`` computes them (linear within a bucket)
``cpu_ms_per_request``   CPU time spent inside the requests / answers
``rss_kb_per_request``   growth of the workers' resident memory / answers (a per-request leak)

Introduced in notebooks/13_continuous_deployment.ipynb.

>>> collector = Collector(interval_s=1.0).start()                     # doctest: +SKIP
>>> collector.watch("canary", pool.metrics_text)                     # doctest: +SKIP
>>> [round(i.p99_ms, 1) for i in collector.intervals("canary")]      # doctest: +SKIP
[7.9, 8.4, 12.0]
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from prometheus_client.parser import text_string_to_metric_families

NAN = float("nan")


@dataclass(frozen=True)
class Snapshot:
    """One scrape: cumulative counters of a pool at monotonic time ``t``."""

    t: float
    requests: dict[str, float]                 # "2xx" -> count
    buckets: tuple[tuple[float, float], ...]   # (upper bound s, cumulative count), +Inf last
    cpu_s: dict[str, float]                    # worker pid -> CPU seconds
    rss_bytes: dict[str, float]                # worker pid -> resident bytes
    request_cpu_s: float = 0.0                 # CPU spent inside counted requests
    release: str | None = None


def parse(text: str, t: float | None = None) -> Snapshot:
    """A pool's prometheus exposition (see the harness) as a ``Snapshot``."""
    requests: dict[str, float] = {}
    buckets: list[tuple[float, float]] = []
    cpu: dict[str, float] = {}
    rss: dict[str, float] = {}
    request_cpu = 0.0
    release = None
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "labkit_http_requests_total":
                requests[s.labels["code"]] = requests.get(s.labels["code"], 0.0) + s.value
            elif s.name == "labkit_http_request_duration_seconds_bucket":
                buckets.append((float(s.labels["le"]), s.value))
            elif s.name == "labkit_request_cpu_seconds_total":
                request_cpu += s.value
            elif s.name == "labkit_worker_cpu_seconds":
                cpu[s.labels["pid"]] = s.value
            elif s.name == "labkit_worker_rss_bytes":
                rss[s.labels["pid"]] = s.value
            elif s.name == "labkit_release_info" and s.value:
                release = s.labels.get("release")
    buckets.sort()
    return Snapshot(time.monotonic() if t is None else t, requests, tuple(buckets), cpu, rss,
                    request_cpu, release)


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """The ``q``-quantile (0..1) of a cumulative histogram, as PromQL's ``histogram_quantile``.

    Linear interpolation inside the bucket where the rank falls; the lowest bucket starts at
    0; a rank in the +Inf bucket answers the highest finite bound. NaN without observations.
    (prometheus_client has no such function; this is Prometheus' documented algorithm.)
    """
    b = sorted(buckets)
    if not b or b[-1][1] <= 0:
        return NAN
    total = b[-1][1]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in b:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


@dataclass(frozen=True)
class Interval:
    """What a pool did between two snapshots (or over several, merged)."""

    t0: float
    t1: float
    by_code: dict[str, float]
    buckets: tuple[tuple[float, float], ...]
    cpu_s: float              # inside counted requests
    worker_cpu_s: float       # all the workers' CPU (requests, scrapes, idle loop)
    rss_growth_bytes: float
    rss_bytes: float          # all live workers at the end
    workers: int

    @property
    def requests(self) -> float:
        return sum(self.by_code.values())

    @property
    def rate_per_s(self) -> float:
        return self.requests / (self.t1 - self.t0) if self.t1 > self.t0 else NAN

    def _per_request(self, value: float) -> float:
        return value / self.requests if self.requests else NAN

    @property
    def error_ratio(self) -> float:
        return self._per_request(self.by_code.get("5xx", 0.0))

    @property
    def ok_ratio(self) -> float:
        return self._per_request(self.by_code.get("2xx", 0.0))

    def quantile_ms(self, q: float) -> float:
        return histogram_quantile(q, self.buckets) * 1000

    @property
    def p50_ms(self) -> float:
        return self.quantile_ms(0.50)

    @property
    def p99_ms(self) -> float:
        return self.quantile_ms(0.99)

    @property
    def cpu_ms_per_request(self) -> float:
        return self._per_request(self.cpu_s * 1000)

    @property
    def rss_kb_per_request(self) -> float:
        return self._per_request(self.rss_growth_bytes / 1024)

    @staticmethod
    def between(a: Snapshot, b: Snapshot) -> "Interval":
        """The interval from snapshot ``a`` to the later ``b`` of the same pool."""
        codes = set(a.requests) | set(b.requests)
        by_code = {c: _delta(a.requests.get(c, 0.0), b.requests.get(c, 0.0)) for c in codes}
        before = dict(a.buckets)
        buckets = tuple((le, _delta(before.get(le, 0.0), n)) for le, n in b.buckets)
        both = set(a.cpu_s) & set(b.cpu_s)  # a worker that died or was born is left out
        worker_cpu = sum(max(0.0, b.cpu_s[p] - a.cpu_s[p]) for p in both)
        rss_both = set(a.rss_bytes) & set(b.rss_bytes)
        growth = sum(b.rss_bytes[p] - a.rss_bytes[p] for p in rss_both)
        return Interval(a.t, b.t, by_code, buckets, _delta(a.request_cpu_s, b.request_cpu_s),
                        worker_cpu, growth, sum(b.rss_bytes.values()), len(b.rss_bytes))

    @staticmethod
    def merge(parts: list["Interval"]) -> "Interval":
        """One interval covering consecutive ``parts``."""
        by_code: dict[str, float] = {}
        buckets: dict[float, float] = {}
        for p in parts:
            for c, n in p.by_code.items():
                by_code[c] = by_code.get(c, 0.0) + n
            for le, n in p.buckets:
                buckets[le] = buckets.get(le, 0.0) + n
        return Interval(parts[0].t0, parts[-1].t1, by_code, tuple(sorted(buckets.items())),
                        sum(p.cpu_s for p in parts), sum(p.worker_cpu_s for p in parts),
                        sum(p.rss_growth_bytes for p in parts),
                        parts[-1].rss_bytes, parts[-1].workers)


def _delta(before: float, after: float) -> float:
    # A counter that went down was reset (its pool restarted): count from zero.
    return after - before if after >= before else after


# The per-interval metrics the judges read, by name.
METRICS: dict[str, Callable[[Interval], float]] = {
    "error_ratio": lambda i: i.error_ratio,
    "ok_ratio": lambda i: i.ok_ratio,
    "p50_ms": lambda i: i.p50_ms,
    "p99_ms": lambda i: i.p99_ms,
    "cpu_ms_per_request": lambda i: i.cpu_ms_per_request,
    "rss_kb_per_request": lambda i: i.rss_kb_per_request,
    "rate_per_s": lambda i: i.rate_per_s,
}


@dataclass
class Window:
    """A pool's intervals over an analysis window: what a judge is given."""

    name: str
    intervals: list[Interval] = field(default_factory=list)

    def series(self, metric: str) -> list[float]:
        """One value per interval (NaN where undefined, e.g. no request in the interval)."""
        if metric not in METRICS:
            raise KeyError(f"no metric {metric!r}; choose from {', '.join(METRICS)}")
        return [METRICS[metric](i) for i in self.intervals]

    @property
    def total(self) -> Interval | None:
        return Interval.merge(self.intervals) if self.intervals else None

    def counts(self) -> dict[str, float]:
        """Answers by status class over the whole window."""
        total = self.total
        return dict(total.by_code) if total else {}


class Collector:
    """Scrapes named targets every ``interval_s`` in a thread; keeps their snapshots.

    A target is a function returning prometheus text (``ReleasePool.metrics_text``). Scrape
    errors are counted per target (a pool being stopped is not an error of the collector).
    """

    def __init__(self, interval_s: float = 1.0) -> None:
        if not 0.05 <= interval_s <= 60:
            raise ValueError(f"interval_s={interval_s}: choose 0.05 to 60 seconds")
        self.interval_s = interval_s
        self.snapshots: dict[str, list[Snapshot]] = {}
        self.errors: dict[str, int] = {}
        self._targets: dict[str, Callable[[], str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, name: str, scrape: Callable[[], str]) -> None:
        """Start scraping ``name`` now (one scrape at once, so its first interval starts here)."""
        with self._lock:
            self._targets[name] = scrape
            self.snapshots.setdefault(name, [])
            self.errors.setdefault(name, 0)
        self._scrape(name, scrape)

    def forget(self, name: str, final_scrape: bool = True) -> None:
        """Stop scraping ``name`` (after one last scrape); its snapshots stay."""
        with self._lock:
            scrape = self._targets.pop(name, None)
        if scrape and final_scrape:
            self._scrape(name, scrape)

    def scrape_now(self) -> None:
        """Scrape every target once, now (an analysis reads data up to this moment)."""
        with self._lock:
            targets = dict(self._targets)
        for name, scrape in targets.items():
            self._scrape(name, scrape)

    def _scrape(self, name: str, scrape: Callable[[], str]) -> None:
        try:
            snap = parse(scrape())
        except Exception:
            with self._lock:
                self.errors[name] = self.errors.get(name, 0) + 1
            return
        with self._lock:
            self.snapshots.setdefault(name, []).append(snap)

    def start(self) -> "Collector":
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> "Collector":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.scrape_now()
            next_at += self.interval_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def intervals(self, name: str, since_s: float = 0.0, until_s: float = float("inf"),
                  step_s: float | None = None) -> list[Interval]:
        """``name``'s intervals that start at or after ``since_s`` and end by ``until_s``.

        ``step_s`` merges consecutive scrape intervals into steps of about that length.
        """
        with self._lock:
            snaps = [s for s in self.snapshots.get(name, []) if since_s <= s.t <= until_s]
        parts = [Interval.between(a, b) for a, b in zip(snaps, snaps[1:])]
        if not step_s or not parts:
            return parts
        out, group = [], [parts[0]]
        for p in parts[1:]:
            if p.t1 - group[0].t0 > step_s * 1.01:
                out.append(Interval.merge(group))
                group = []
            group.append(p)
        out.append(Interval.merge(group))
        return out

    def window(self, name: str, since_s: float = 0.0, until_s: float = float("inf"),
               step_s: float | None = None) -> Window:
        return Window(name, self.intervals(name, since_s, until_s, step_s))
