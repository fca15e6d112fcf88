"""The measuring harness of a release pool: gunicorn's config module and the app's wrapper.

A pool copies this file next to its config as ``labkit_pool_harness.py`` and starts
``gunicorn -c python:labkit_pool_harness 'labkit_pool_harness:create_app(...)'``. It imports
nothing from ``labkit``: in a pool's process ``labkit`` is the *release's* code (see
``labkit.deploy.release``), and the instrument must be the same for every release it measures,
old or new, good or bad.

What it adds around the release's WSGI app (Django's), with ``prometheus_client`` in
multiprocess mode (each gunicorn worker writes its samples to files in
``PROMETHEUS_MULTIPROC_DIR``; ``/metrics`` merges them):

- ``labkit_http_requests_total{code}``          answers by status class (2xx, 4xx, 5xx, ...);
- ``labkit_http_request_duration_seconds``       a histogram of the time in the worker;
- ``labkit_request_cpu_seconds_total``           CPU time spent serving those requests (the
                                                 worker's own work between them, a scrape of
                                                 /metrics included, is not in it);
- ``labkit_worker_cpu_seconds{pid}``             CPU time of each live worker (user + system);
- ``labkit_worker_rss_bytes{pid}``               resident memory of each live worker;
- ``labkit_release_info{release}``               1, naming the release the pool serves.

Every answer carries ``X-Release`` and ``X-Worker-Pid`` headers, so a client's history says
which release served each request. ``/metrics``, ``/healthz`` (the router's probe) and
``/-/release`` are not counted as traffic. Introduced in notebooks/13_continuous_deployment.ipynb.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Iterable

# Latency buckets (seconds): fine where requests are (1-100 ms), coarse in the tail.
BUCKETS_S = (0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.010, 0.012, 0.015, 0.020,
             0.025, 0.030, 0.040, 0.050, 0.065, 0.080, 0.100, 0.130, 0.160, 0.200, 0.250,
             0.300, 0.400, 0.500, 0.750, 1.0, 2.5, 5.0, 10.0)
NOT_TRAFFIC = ("/metrics", "/healthz", "/-/release")
# A worker refreshes its CPU and RSS gauges at most this often (reading them costs ~20 us).
RESOURCE_EVERY_S = 0.2

# gunicorn reads its hooks from this module (``-c python:labkit_pool_harness``); every other
# setting comes from the command line (labkit.web.WebServer's).


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook: a worker died; drop its live gauges (its counters stay in the totals)."""
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)


def create_app(config_path: str, release: str) -> Callable:
    """The release's Django app (``labkit.web.wsgi`` from the release), measured."""
    from labkit.web.wsgi import create_app as release_app  # the release's own code

    return Measured(release_app(config_path), release)


class Measured:
    """WSGI middleware: counts, times and labels every request the release answers."""

    def __init__(self, app: Callable, release: str) -> None:
        from prometheus_client import Counter, Gauge, Histogram
        self.app, self.release = app, release
        self.requests = Counter("labkit_http_requests", "Requests answered, by status class",
                                ["code"])
        self.request_cpu = Counter("labkit_request_cpu_seconds",
                                   "Process CPU time spent inside counted requests")
        self.latency = Histogram("labkit_http_request_duration_seconds",
                                 "Time from the request reaching the worker to the last byte",
                                 buckets=BUCKETS_S)
        self.cpu = Gauge("labkit_worker_cpu_seconds", "CPU seconds used by this worker",
                         multiprocess_mode="liveall")
        self.rss = Gauge("labkit_worker_rss_bytes", "Resident memory of this worker",
                         multiprocess_mode="liveall")
        info = Gauge("labkit_release_info", "The release this pool serves", ["release"],
                     multiprocess_mode="max")
        info.labels(release).set(1)
        import psutil
        self.pid = os.getpid()
        self._process = psutil.Process(self.pid)
        self._resources_at = 0.0
        self._headers = [("X-Release", release), ("X-Worker-Pid", str(self.pid))]
        self._update_resources(force=True)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics(start_response)
        if path == "/-/release":
            return self._describe(start_response)
        t0, cpu0 = time.perf_counter(), time.process_time()
        status_seen = ["500"]

        def start(status: str, headers: list, exc_info: Any = None) -> Callable:
            status_seen[0] = status
            return start_response(status, headers + self._headers, exc_info)

        try:
            body = self.app(environ, start)
        except BaseException:
            self._record(path, "500", t0, cpu0)
            raise
        return _Closing(body, lambda: self._record(path, status_seen[0], t0, cpu0))

    def _record(self, path: str, status: str, t0: float, cpu0: float) -> None:
        if path in NOT_TRAFFIC:
            return
        self.latency.observe(time.perf_counter() - t0)
        self.request_cpu.inc(time.process_time() - cpu0)
        self.requests.labels(f"{status[:1]}xx").inc()
        self._update_resources()

    def _update_resources(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._resources_at < RESOURCE_EVERY_S:
            return
        self._resources_at = now
        t = os.times()
        self.cpu.set(t.user + t.system)
        self.rss.set(self._process.memory_info().rss)

    def _metrics(self, start_response: Callable) -> list[bytes]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        data = generate_latest(registry)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST),
                                  ("Content-Length", str(len(data)))] + self._headers)
        return [data]

    def _describe(self, start_response: Callable) -> list[bytes]:
        """Which code this worker really runs: the release, and where its labkit came from."""
        import labkit
        data = json.dumps({"release": self.release, "pid": self.pid,
                           "labkit_file": labkit.__file__}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(data)))] + self._headers)
        return [data]


class _Closing:
    """Passes the body through and calls ``done`` once the server closes it (last byte sent)."""

    def __init__(self, body: Iterable[bytes], done: Callable[[], None]) -> None:
        self.body, self.done = body, done

    def __iter__(self):
        return iter(self.body)

    def close(self) -> None:
        try:
            if hasattr(self.body, "close"):
                self.body.close()
        finally:
            self.done()
