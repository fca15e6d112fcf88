"""What the compiled kernel buys: the kernel alone, and the feed endpoint under load.

``time_kernels`` times every built variant of the feedscore kernel (pure Python, Cython,
plain C) on the same arguments, interleaved in one run, and gives medians; ratios of
medians taken in the same run survive a busy machine far better than absolute times.
``endpoint_cost`` drives a running ``WebServer`` and reads its workers' CPU time from the
kernel before and after, so CPU per request counts the web tier only (not PostgreSQL, not
the load generator, which share the machine).

Introduced in notebooks/11_cython_and_memory.ipynb.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import psutil

from labkit import speedups
from labkit.web import WebServer
from labkit.web.loadgen import RequestFn, run_load


def time_kernels(args: dict[str, Any], *, repeat: int = 9, min_time_s: float = 0.02,
                 kernel: str = "feedscore") -> dict[str, dict[str, float]]:
    """Median seconds per call of each variant on ``args``, and its speedup over Python.

    Each of ``repeat`` rounds times every variant once (in turn, so they share the
    machine's moments), each timing calling it in a loop for at least ``min_time_s``.
    """
    impls = speedups.implementations(kernel)
    fn_name = "score_candidates" if kernel == "feedscore" else kernel
    loops = {}
    for name, module in impls.items():  # calibrate: how many calls fill min_time_s
        fn, n = getattr(module, fn_name), 1
        while True:
            t0 = time.perf_counter()
            for _ in range(n):
                fn(**args)
            if time.perf_counter() - t0 >= min_time_s:
                break
            n *= 2
        loops[name] = n
    samples: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(repeat):
        for name, module in impls.items():
            fn, n = getattr(module, fn_name), loops[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn(**args)
            samples[name].append((time.perf_counter() - t0) / n)
    base = statistics.median(samples["python"])
    out = {}
    for name, times in samples.items():
        med = statistics.median(times)
        out[name] = {"median_s": med, "speedup": base / med}
    return out


def worker_cpu_s(server: WebServer) -> float:
    """CPU seconds (user + system) the server's workers have used so far."""
    total = 0.0
    for pid in server.worker_pids():
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def endpoint_cost(server: WebServer, request: RequestFn, *, clients: int = 4,
                  duration_s: float = 5.0, seed: int = 0) -> dict[str, float]:
    """Throughput, latency and the workers' CPU seconds per 1,000 requests under load."""
    pids = server.worker_pids()
    cpu0 = worker_cpu_s(server)
    r = run_load(server.host, server.port, request, clients=clients, duration_s=duration_s,
                 seed=seed)
    cpu = worker_cpu_s(server) - cpu0
    if server.worker_pids() != pids:
        raise RuntimeError(f"a worker was replaced during the run; see {server.log_path}")
    if r.errors or not r.requests:
        raise RuntimeError(f"{r.errors} of {r.requests} requests failed ({r.statuses}); "
                           f"see {server.log_path}")
    return {"requests": r.requests, "rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
            "cpu_s_per_1k": cpu / r.requests * 1000}
