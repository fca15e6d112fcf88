"""gunicorn hooks of ``WebServer``: the garbage-collector setting and per-worker profiling.

``WebServer`` writes a gunicorn config file that calls these, so the settings travel as
literal values in that file rather than through the environment.

GC settings (notebook 11, after Instagram's "Dismissing Python Garbage Collection"):

- ``default``: CPython's collector as it comes, in the master and in every worker;
- ``freeze``: the recipe of ``gc.freeze``'s documentation (CPython bpo-31558): the collector
  is off while the master loads the app, everything the master made is moved to the
  permanent generation before each fork (``gc.freeze()``), and each worker turns the
  collector back on: it then never walks the preloaded objects, so it never writes to
  their pages, and those stay shared;
- ``disabled``: no collection at all (what Instagram tried first): nothing is walked, but
  reference cycles are never freed.

Profiling: with a ``profile_dir``, each worker runs ``cProfile`` from its fork to its exit
and writes ``worker-<pid>.prof`` there when it stops.

Full collections on request: CPython runs a full (generation 2) collection only once the
objects that survived the younger collections reach a quarter of the long-lived ones, which
a worker with few survivors per request may take hours to reach. ``SIGUSR2`` makes a worker
run that same collection now (if its collector is on, as the automatic one would be; never
with ``disabled``) and write its collector statistics to ``gc-<pid>.json`` in its working
directory, so an experiment can see what a full collection does to shared memory without
waiting for it (``labkit.experiments.worker_memory``).

Introduced in notebooks/11_cython_and_memory.ipynb.
"""

from __future__ import annotations

import gc
import json
import os
import signal
from pathlib import Path
from typing import Any

GC_MODES = ("default", "freeze", "disabled")
_profiler: Any = None
_at_fork: list[int] = [0, 0, 0]  # collections per generation the master had run at fork


def check_gc_mode(gc_mode: str) -> str:
    if gc_mode not in GC_MODES:
        raise ValueError(f"gc_mode={gc_mode!r}: choose one of {', '.join(GC_MODES)}")
    return gc_mode


def on_config(gc_mode: str) -> None:
    """In the master, when gunicorn reads its config: before the app is loaded."""
    if check_gc_mode(gc_mode) in ("freeze", "disabled"):
        gc.disable()


def pre_fork(gc_mode: str) -> None:
    """In the master, just before each worker is forked."""
    if gc_mode == "freeze":
        gc.freeze()


def post_fork(gc_mode: str, profile_dir: str | None) -> None:
    """In each new worker, first thing."""
    global _at_fork
    _at_fork = [s["collections"] for s in gc.get_stats()]
    if gc_mode == "freeze":
        gc.enable()
    if profile_dir:
        import cProfile
        global _profiler
        _profiler = cProfile.Profile()
        _profiler.enable()


def post_worker_init() -> None:
    """In each worker once gunicorn has set its own signal handlers: add ours."""
    signal.signal(signal.SIGUSR2, _full_collection)


def _full_collection(signum: int, frame: Any) -> None:
    # Collections CPython ran on its own in this worker since the fork, per generation.
    automatic = [s["collections"] - n for s, n in zip(gc.get_stats(), _at_fork)]
    collected = gc.collect() if gc.isenabled() else None
    _at_fork[2] += collected is not None  # ours is not automatic
    # Written aside, then renamed: a reader never sees a half-written file.
    tmp = Path(f"gc-{os.getpid()}.json.tmp")
    tmp.write_text(json.dumps({"enabled": gc.isenabled(), "collections_before": automatic,
                               "collected": collected, "frozen": gc.get_freeze_count()}))
    os.replace(tmp, f"gc-{os.getpid()}.json")


def worker_exit(profile_dir: str | None) -> None:
    """In each worker as it stops: write its profile."""
    if profile_dir and _profiler is not None:
        _profiler.disable()
        _profiler.dump_stats(str(Path(profile_dir) / f"worker-{os.getpid()}.prof"))


CONFIG_TEMPLATE = '''\
# Written by labkit.web.server.WebServer; the hooks live in labkit.web.hooks.
from labkit.web import hooks

GC_MODE = {gc_mode!r}
PROFILE_DIR = {profile_dir!r}
hooks.on_config(GC_MODE)


def pre_fork(server, worker):
    hooks.pre_fork(GC_MODE)


def post_fork(server, worker):
    hooks.post_fork(GC_MODE, PROFILE_DIR)


def post_worker_init(worker):
    hooks.post_worker_init()


def worker_exit(server, worker):
    hooks.worker_exit(PROFILE_DIR)
'''


def config_file(gc_mode: str, profile_dir: str | None) -> str:
    """The text of a gunicorn config file that applies ``gc_mode`` and ``profile_dir``."""
    return CONFIG_TEMPLATE.format(gc_mode=check_gc_mode(gc_mode), profile_dir=profile_dir)
