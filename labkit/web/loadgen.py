"""A bounded HTTP load generator: N concurrent clients on loopback, for a fixed time or count.

``run_load``: each client is a thread with its own keep-alive connection that sends requests
back to back (a closed loop), so the offered load adapts to the server. Stops at
``duration_s`` or after ``max_requests``, whichever comes first.

``OpenLoad``: requests at a fixed arrival rate in the background, each one recorded (when it
was due, sent, answered, and which pool answered), for judging canaries and for checking that
nothing was dropped (introduced in notebooks/13_continuous_deployment.ipynb).

Introduced in notebooks/02_web_tier.ipynb.

>>> r = run_load(web.host, web.port, "/api/constant", clients=8, duration_s=3)  # doctest: +SKIP
>>> r.rps, r.p99_ms                                                            # doctest: +SKIP
"""

from __future__ import annotations

import http.client
import queue
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


# ------------------------------------------------------------------ fixed arrival rate
# The closed loop above lets a slow server slow its clients down, so the load it gets drops
# exactly when it regresses (coordinated omission). A canary judged under that load looks
# better than it is. OpenLoad sends requests at a fixed rate whatever the answers take, the
# way wrk2 and vegeta do (neither is a Debian package), counts latency from the moment each
# request was due, and records every request: what a "nothing dropped" claim is checked on.

@dataclass(frozen=True)
class Call:
    """One request of an ``OpenLoad``: when it was due, sent and answered, and by whom.

    Times are ``time.monotonic()`` seconds. ``status`` 0 means no HTTP answer at all (refused,
    reset, timed out); ``served_by`` is the response header named by ``OpenLoad(served_by=)``
    (a release pool's ``X-Release``), None when the answer did not carry it.
    """

    index: int
    due_s: float
    sent_s: float
    done_s: float
    method: str
    path: str
    status: int
    served_by: str | None
    tag: str | None = None
    body: bytes = field(default=b"", repr=False)
    error: str | None = None

    @property
    def latency_ms(self) -> float:
        """From the moment the request was due (waiting for a free client included)."""
        return (self.done_s - self.due_s) * 1000


class OpenLoad:
    """Requests at ``rate_per_s`` in the background until ``stop()``, each one recorded.

    A scheduler thread makes request ``i`` due at ``start + i / rate_per_s`` (the request
    itself comes from ``request(rng)``, as in ``run_load``) and hands it to one of ``clients``
    threads, each with its own keep-alive connection. ``keep_body`` keeps the answers' bodies
    (for checks on what users saw).

    >>> with OpenLoad(router.host, router.port, make, rate_per_s=60) as load:  # doctest: +SKIP
    ...     time.sleep(10)
    >>> len(load.calls), load.unanswered()                                     # doctest: +SKIP
    (600, [])
    """

    def __init__(self, host: str, port: int, request: str | RequestFn, *, rate_per_s: float,
                 clients: int = 32, timeout_s: float = 30.0, served_by: str = "X-Release",
                 keep_body: bool = False, seed: int = 0) -> None:
        if not 0 < rate_per_s <= 5000:
            raise ValueError(f"rate_per_s={rate_per_s}: choose a rate above 0 and up to 5000/s")
        if not 1 <= clients <= 256:
            raise ValueError(f"clients={clients}: choose 1 to 256 client threads")
        self.host, self.port, self.rate_per_s = host, port, float(rate_per_s)
        self.make = request if callable(request) else (lambda rng: ("GET", request))
        self.clients, self.timeout_s, self.served_by = clients, timeout_s, served_by
        self.keep_body, self.seed = keep_body, seed
        self.calls: list[Call] = []
        self.scheduled = 0
        self.started_s = self.stopped_s = 0.0
        self._lock = threading.Lock()
        self._queue: "queue.Queue[tuple | None]" = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> "OpenLoad":
        self.started_s = time.monotonic()
        self._threads = [threading.Thread(target=self._client, daemon=True)
                         for _ in range(self.clients)]
        self._threads.append(threading.Thread(target=self._schedule, daemon=True))
        for t in self._threads:
            t.start()
        return self

    def stop(self, drain_s: float = 300.0) -> list[Call]:
        """Stop scheduling; wait for every request already due to be sent and answered.

        On a starved machine the client threads fall behind the schedule and requests wait
        in the queue; they are still sent (late, their latency counts from the due time), so
        ``drain_s`` is generous. ``lag_s`` says how far behind the generator fell.
        """
        self._stop.set()
        self._threads[-1].join()
        for _ in range(self.clients):
            self._queue.put(None)
        deadline = time.monotonic() + drain_s
        for t in self._threads[:-1]:
            t.join(max(0.0, deadline - time.monotonic()))
        self.stopped_s = time.monotonic()
        with self._lock:
            self.calls.sort(key=lambda c: c.index)
            return list(self.calls)

    def __enter__(self) -> "OpenLoad":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _schedule(self) -> None:
        rng = random.Random(self.seed)
        i = 0
        while not self._stop.is_set():
            due = self.started_s + i / self.rate_per_s
            wait = due - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                break
            self._queue.put((i, due, self.make(rng)))
            i += 1
            with self._lock:
                self.scheduled = i

    def _client(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        while (item := self._queue.get()) is not None:
            i, due, (method, path, *more) = item
            headers = (more[0] if more else None) or {}
            tag = more[1] if len(more) > 1 else None
            sent = time.monotonic()
            status, served, body, error = 0, None, b"", None
            try:
                conn.request(method, path, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                status, served = resp.status, resp.getheader(self.served_by)
                body = data if self.keep_body else b""
                if resp.will_close:
                    conn.close()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                error = f"{type(e).__name__}: {e}"
            call = Call(i, due, sent, time.monotonic(), method, path, status, served, tag, body,
                        error)
            with self._lock:
                self.calls.append(call)
        conn.close()

    # ------------------------------------------------------------------------- the history
    def unanswered(self) -> list[Call]:
        """Requests with no answer from a server behind the router: none, or the router's own.

        A 5xx that a release pool sent is an answer (it carries ``served_by``); a refused or
        reset connection, a timeout, or a 502/503 HAProxy made up itself is not.
        """
        with self._lock:
            calls = list(self.calls)
        missing = self.scheduled - len(calls) if self._stop.is_set() else 0
        lost = [c for c in calls if c.status == 0 or c.served_by is None]
        if missing > 0:
            raise RuntimeError(f"{missing} scheduled request(s) had not finished when stop() "
                               "gave up waiting; raise OpenLoad.stop(drain_s=...)")
        return lost

    @property
    def lag_s(self) -> float:
        """How late the generator sent a request, at worst (0 when it kept its schedule)."""
        with self._lock:
            return max((c.sent_s - c.due_s for c in self.calls), default=0.0)

    def share(self, served_by: str, since_s: float = 0.0, until_s: float = float("inf")) -> float:
        """The fraction of requests sent in [since_s, until_s) that ``served_by`` answered."""
        with self._lock:
            window = [c for c in self.calls if since_s <= c.sent_s < until_s]
        return sum(c.served_by == served_by for c in window) / len(window) if window else 0.0

    def result(self) -> LoadResult:
        """The run as a ``LoadResult`` (throughput, statuses, latency percentiles)."""
        with self._lock:
            calls = list(self.calls)
        elapsed = (self.stopped_s or time.monotonic()) - self.started_s
        statuses: dict[int, int] = {}
        for c in calls:
            statuses[c.status] = statuses.get(c.status, 0) + 1
        return LoadResult(self.clients, len(calls),
                          sum(c.status == 0 or c.status >= 500 for c in calls), elapsed,
                          [c.latency_ms for c in calls], statuses)
