"""Where every experiment's results go: one JSON file per experiment in the lab directory.

``save`` is what every ``run_cli`` calls at its end. It always writes
``<lab_dir>/results/<experiment>.json`` (the latest run of that experiment replaces the
previous one), an envelope the report reads::

    {"experiment": "herd", "params": {...the command's options...},
     "command": "labkit experiment herd --clients 16 ...",
     "machine": {"hostname", "platform", "python", "cpus", "memory_gib", "loadavg"},
     "started_at": "2026-11-22T03:20:00+00:00", "finished_at": ..., "duration_s": 41.2,
     "data": ...what the experiment returned...}

With ``--out PATH`` the experiment's data alone is *also* written to PATH, exactly as before
this module existed (scripts and tests that read ``--out`` keep working).

>>> save(args, lab, "herd", rows, started_s=t0)                      # doctest: +SKIP
PosixPath('/var/lib/labkit/lab/results/herd.json')
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any

from labkit._labdir import write_atomic

RESULTS_DIR = "results"
# argparse attributes that are plumbing, not parameters of the experiment
_NOT_PARAMS = {"func", "command", "experiment", "lab_dir", "out", "services", "cassandra",
               "provider", "followers"}


def results_dir(lab_dir: Path) -> Path:
    """The folder every experiment's latest results are in: ``<lab_dir>/results``."""
    return Path(lab_dir) / RESULTS_DIR


def result_path(lab_dir: Path, experiment: str) -> Path:
    return results_dir(lab_dir) / f"{experiment}.json"


def machine() -> dict[str, Any]:
    """What the figures were measured on: host, OS, Python, usable cores, memory, load."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cpus = os.cpu_count() or 0
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        memory_gib = None
    try:
        loadavg = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        loadavg = None
    return {"hostname": socket.gethostname(), "platform": platform.platform(),
            "python": platform.python_version(), "cpus": cpus, "memory_gib": memory_gib,
            "loadavg": loadavg}


def describe(m: dict[str, Any], load_note: str = "") -> str:
    """``machine()``'s record as one phrase: host (cores, memory, OS, Python; load average)."""
    load = ", ".join(map(str, m.get("loadavg") or [])) or "?"
    return (f"{m['hostname']} ({m['cpus']} cores, {m['memory_gib']} GiB, {m['platform']}, "
            f"Python {m['python']}; load average {load}{load_note})")


def params(args: argparse.Namespace) -> dict[str, Any]:
    """The experiment's options from ``args`` (JSON-ready: paths as strings)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items())
            if k not in _NOT_PARAMS and not k.startswith("_") and not callable(v)}


def command(experiment: str, args: argparse.Namespace) -> str:
    """The ``labkit experiment ...`` line that repeats this run."""
    parts = ["labkit", "experiment", experiment]
    for k, v in params(args).items():
        if v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        parts += [flag] if v is True else [flag, str(v)]
    return shlex.join(parts)


def _iso(t_s: float) -> str:
    return dt.datetime.fromtimestamp(t_s, dt.timezone.utc).isoformat(timespec="seconds")


def save(args: argparse.Namespace, lab: Any, experiment: str, data: Any, *,
         started_s: float) -> Path:
    """Write ``data`` to ``<lab_dir>/results/<experiment>.json`` (and to ``--out`` if given).

    ``started_s`` is the ``time.time()`` at which the run began.
    """
    finished_s = time.time()
    envelope = {"experiment": experiment, "params": params(args),
                "command": command(experiment, args), "machine": machine(),
                "started_at": _iso(started_s), "finished_at": _iso(finished_s),
                "duration_s": round(finished_s - started_s, 1), "data": data}
    path = result_path(lab.config.lab_dir, experiment)
    # a report reading meanwhile sees the old file or the new, never half
    write_atomic(path, json.dumps(envelope, indent=2) + "\n", mode=0o666)
    print(f"results written to {path}")
    out = getattr(args, "out", None)
    if out:
        Path(out).write_text(json.dumps(data, indent=2) + "\n")
        print(f"results written to {out}")
    return path


def load(lab_dir: Path, experiment: str) -> dict[str, Any] | None:
    """The latest saved run of ``experiment`` in ``lab_dir``, or None if it never ran there."""
    path = result_path(lab_dir, experiment)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        print(f"warning: {path} is not valid JSON ({e}); run the experiment again",
              file=sys.stderr)
        return None
