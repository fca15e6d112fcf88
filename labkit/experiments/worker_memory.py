"""Copy-on-write in forked workers: private memory per gunicorn worker, per GC setting.

gunicorn's ``preload_app`` loads the app (Django, every module, the feed's ranking model)
once in the master and forks the workers from it, so at first they share all of its pages.
A page becomes private to a worker when the worker writes to it; with CPython that happens
on mere *reads* of Python objects, because a read changes an object's reference count and
a collection writes to the header of every object it walks. ``run`` serves the same
requests with each GC setting (``labkit.web.hooks``: default, freeze, disabled) and samples
every worker's unique (USS), proportional (PSS) and shared memory as requests are served.

Introduced in notebooks/11_cython_and_memory.ipynb.

>>> rows = run(config, lab.config.lab_dir / "cow", feed_requests(tokens))   # doctest: +SKIP
>>> summarize(rows)                                                          # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import psutil

from labkit.web import WebConfig, WebServer
from labkit.web.hooks import GC_MODES
from labkit.web.loadgen import RequestFn, run_load

MB = 1024 * 1024


@dataclass(frozen=True)
class MemoryUse:
    """One process's memory, MB: resident, unique (USS), proportional (PSS), shared."""

    rss_mb: float
    uss_mb: float
    pss_mb: float
    shared_mb: float  # resident pages other processes map too (rss - uss)


def memory_of(pid: int) -> MemoryUse:
    """Read a process's memory from the kernel (``/proc/<pid>/smaps_rollup`` via psutil)."""
    info = psutil.Process(pid).memory_full_info()
    return MemoryUse(info.rss / MB, info.uss / MB, info.pss / MB, (info.rss - info.uss) / MB)


@dataclass(frozen=True)
class Sample:
    """One worker's memory after the server had answered ``requests`` requests in all."""

    gc_mode: str
    worker: int
    pid: int
    requests: int
    rss_mb: float
    uss_mb: float
    pss_mb: float
    shared_mb: float


def run(config: WebConfig, workdir: Path, request: RequestFn, *,
        gc_modes: Iterable[str] = GC_MODES, workers: int = 2, steps: int = 4,
        requests_per_step: int = 500, clients: int = 4, full_collections: bool = True,
        timeout_s: float = 120.0) -> list[dict]:
    """For each GC setting: a preloading gunicorn, ``steps`` x ``requests_per_step`` requests.

    Every worker is sampled right after the fork (0 requests) and after each step. With
    ``full_collections``, each worker runs a full collection at the end of every step, as
    a long-lived worker eventually does (``full_collection``; none with GC disabled), and
    the rows say how many CPython had run on its own (``automatic_full_gcs``). The config
    is used with ``preload_feed_model=True``, so the master holds the ranking model.
    Returns one row per (setting, worker, step).
    """
    config = config.replace(preload_feed_model=True)
    rows: list[dict] = []
    for gc_mode in gc_modes:
        server = WebServer(workdir, config, workers=workers, preload=True, gc_mode=gc_mode)
        with server:
            pids = _wait_for_workers(server, workers)
            if len(pids) != workers:
                raise RuntimeError(f"expected {workers} gunicorn workers, found {pids}; "
                                   f"see {server.log_path}")
            served, stats = 0, {}
            for step in range(steps + 1):
                if step:
                    r = run_load(server.host, server.port, request, clients=clients,
                                 duration_s=timeout_s, max_requests=requests_per_step,
                                 seed=step)
                    if r.errors:
                        raise RuntimeError(f"{r.errors} of {r.requests} requests failed "
                                           f"({r.statuses}); see {server.log_path}")
                    served += r.requests
                    if full_collections:
                        stats = full_collection(server, pids)
                for i, pid in enumerate(pids):
                    report = stats.get(pid, {}) if step else {}
                    extra = {"automatic_full_gcs": report.get("collections_before", [None] * 3)[2],
                             "frozen_objects": report.get("frozen")}
                    rows.append({**asdict(Sample(gc_mode, i, pid, served,
                                                 **asdict(memory_of(pid)))), **extra})
            if server.worker_pids() != pids:
                raise RuntimeError("a worker was replaced during the run (crashed or timed "
                                   f"out), so its memory history broke; see {server.log_path}")
    return rows


def full_collection(server: WebServer, pids: list[int], timeout_s: float = 60.0) -> dict:
    """Have each worker run a full collection now (SIGUSR2, ``labkit.web.hooks``).

    Returns each worker's collector statistics from just before it: how many collections
    of each generation CPython had run on its own since the fork.
    """
    files = {pid: server.workdir / f"gc-{pid}.json" for pid in pids}
    for pid, path in files.items():
        path.unlink(missing_ok=True)
        os.kill(pid, signal.SIGUSR2)
    out = {}
    for pid, path in files.items():
        deadline = time.monotonic() + timeout_s
        resent = False
        while not path.exists() and time.monotonic() < deadline:
            if pid not in server.worker_pids():
                raise RuntimeError(f"worker {pid} was replaced (it crashed or missed gunicorn's "
                                   f"timeout on a starved machine); see {server.log_path}")
            if not resent and time.monotonic() > deadline - timeout_s / 2:
                os.kill(pid, signal.SIGUSR2)
                resent = True
            time.sleep(0.02)
        try:
            out[pid] = json.loads(path.read_text())  # complete: the worker renames it in place
        except (OSError, ValueError):
            raise RuntimeError(f"worker {pid} did not report its collection within "
                               f"{timeout_s:g} s; see {server.log_path}") from None
    return out


def _wait_for_workers(server: WebServer, workers: int, timeout_s: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while len(pids := server.worker_pids()) < workers and time.monotonic() < deadline:
        time.sleep(0.05)
    return pids


def summarize(rows: list[dict]) -> list[dict[str, Any]]:
    """Per GC setting: USS/shared after the fork and at the end, and USS growth per 1,000
    requests per worker (the mean over workers; requests split evenly among them)."""
    out = []
    for gc_mode in dict.fromkeys(r["gc_mode"] for r in rows):
        mine = [r for r in rows if r["gc_mode"] == gc_mode]
        workers = sorted({r["worker"] for r in mine})
        first = [min((r for r in mine if r["worker"] == w), key=lambda r: r["requests"])
                 for w in workers]
        last = [max((r for r in mine if r["worker"] == w), key=lambda r: r["requests"])
                for w in workers]
        per_worker = last[0]["requests"] / len(workers)
        growth = statistics.mean(b["uss_mb"] - a["uss_mb"] for a, b in zip(first, last))
        out.append({
            "gc_mode": gc_mode, "workers": len(workers), "requests": last[0]["requests"],
            "uss_start_mb": round(statistics.mean(r["uss_mb"] for r in first), 1),
            "uss_end_mb": round(statistics.mean(r["uss_mb"] for r in last), 1),
            "shared_start_mb": round(statistics.mean(r["shared_mb"] for r in first), 1),
            "shared_end_mb": round(statistics.mean(r["shared_mb"] for r in last), 1),
            "pss_end_mb": round(statistics.mean(r["pss_mb"] for r in last), 1),
            "uss_growth_mb_per_1k": round(growth / per_worker * 1000, 2) if per_worker else
            float("nan")})
    return out
