"""A bounded HTTP load generator: N concurrent clients on loopback, for a fixed time or count.

Each client is a thread with its own keep-alive connection that sends requests back to back
(a closed loop), so the offered load adapts to the server. Stops at ``duration_s`` or after
``max_requests``, whichever comes first.

Introduced in notebooks/02_web_tier.ipynb.

>>> r = run_load(web.host, web.port, "/api/constant", clients=8, duration_s=3)  # doctest: +SKIP
>>> r.rps, r.p99_ms                                                            # doctest: +SKIP
"""

from __future__ import annotations

import http.client
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

# (method, path), (method, path, headers) or (method, path, headers, tag) for each request;
# called from the client's thread. A tag groups latencies (``LoadResult.by_tag``).
RequestFn = Callable[[random.Random], tuple]


@dataclass
class LoadResult:
    """What a load run measured: counts, throughput, latency percentiles (ms)."""

    clients: int
    requests: int
    errors: int  # transport errors and 5xx answers
    elapsed_s: float
    latencies_ms: list[float] = field(repr=False)
    statuses: dict[int, int] = field(default_factory=dict)
    by_tag: dict[str, list[float]] = field(default_factory=dict, repr=False)
    status_by_tag: dict[str, dict[int, int]] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q / 100 * len(data)))]

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(50)

    @property
    def p95_ms(self) -> float:
        return self.percentile_ms(95)

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(99)

    def tag(self, name: str) -> "LoadResult":
        """The same figures for the requests tagged ``name`` only."""
        return LoadResult(self.clients, len(self.by_tag.get(name, [])), 0, self.elapsed_s,
                          self.by_tag.get(name, []), self.status_by_tag.get(name, {}))

    def summary(self) -> dict[str, float]:
        return {"clients": self.clients, "requests": self.requests, "errors": self.errors,
                "rps": round(self.rps, 1), "p50_ms": round(self.p50_ms, 2),
                "p95_ms": round(self.p95_ms, 2), "p99_ms": round(self.p99_ms, 2)}


def run_load(host: str, port: int, request: str | RequestFn, *, clients: int = 8,
             duration_s: float = 5.0, max_requests: int = 100_000,
             headers: dict[str, str] | None = None, timeout_s: float = 30.0,
             seed: int = 0) -> LoadResult:
    """Drive ``request`` (a GET path, or a function giving (method, path)) with ``clients``."""
    if not 1 <= clients <= 256:
        raise ValueError(f"clients={clients}: choose 1 to 256 concurrent clients")
    if not 0 < duration_s <= 600:
        raise ValueError(f"duration_s={duration_s}: choose up to 600 s")
    make = request if callable(request) else (lambda rng: ("GET", request))
    lock = threading.Lock()
    budget = [max_requests]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = [0]
    by_tag: dict[str, list[float]] = {}
    status_by_tag: dict[str, dict[int, int]] = {}
    start = time.perf_counter()
    stop_at = start + duration_s

    def client(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
        mine: list[float] = []
        my_tags: list[tuple[str, int, float]] = []
        my_status: dict[int, int] = {}
        my_errors = 0
        while time.perf_counter() < stop_at:
            with lock:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
            method, path, *more = make(rng)
            t0 = time.perf_counter()
            try:
                conn.request(method, path, headers=(more[0] if more else None) or headers or {})
                resp = conn.getresponse()
                resp.read()
                status = resp.status
                if resp.will_close:
                    conn.close()
            except (OSError, http.client.HTTPException):
                conn.close()
                status = 0
            mine.append((time.perf_counter() - t0) * 1000)
            if len(more) > 1:
                my_tags.append((more[1], status, mine[-1]))
            my_status[status] = my_status.get(status, 0) + 1
            my_errors += status == 0 or status >= 500
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += my_errors
            for k, v in my_status.items():
                statuses[k] = statuses.get(k, 0) + v
            for tag, status, ms in my_tags:
                by_tag.setdefault(tag, []).append(ms)
                counts = status_by_tag.setdefault(tag, {})
                counts[status] = counts.get(status, 0) + 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration_s + timeout_s + 5)
    elapsed = time.perf_counter() - start
    return LoadResult(clients, len(latencies), errors[0], elapsed, latencies, statuses, by_tag,
                      status_by_tag)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def like_requests(tokens: list[str], media_ids: list[int], unlike_share: float = 0.5) -> RequestFn:
    """Random users liking (POST) or unliking (DELETE) random media items, as a ``RequestFn``."""
    headers = [{"Authorization": f"Token {t}"} for t in tokens]

    def make(rng: random.Random) -> tuple:
        method = "DELETE" if rng.random() < unlike_share else "POST"
        return method, f"/api/media/{rng.choice(media_ids)}/like", rng.choice(headers)

    return make


def get_requests(path: str, tokens: list[str]) -> RequestFn:
    """GET ``path`` as random users (``path`` may be a function of the rng)."""
    headers = [{"Authorization": f"Token {t}"} for t in tokens]

    def make(rng: random.Random) -> tuple:
        return "GET", path(rng) if callable(path) else path, rng.choice(headers)

    return make
