"""Time to bring the lab up (cold and warm) and to reattach; where RabbitMQ's start goes.

    python benchmarks/startup.py [--runs 5]

Cold: a new lab directory (initdb, pg_basebackup, a new RabbitMQ node). Warm: `up` after a
`down` that kept the data. Reattach: `up` while the lab runs. Medians over --runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import labkit as lk
from labkit.config import LabConfig


def rabbit_phases(log: Path) -> dict[str, float]:
    """Seconds from the broker's first log line to its milestones (from its own log)."""
    stamps = {}
    marks = {"boot": "Starting RabbitMQ", "schema": "Waiting for Mnesia tables",
             "feature_flags": "Feature flags: all", "listeners": "started TCP listener",
             "complete": "Server startup complete"}
    lines = log.read_text(errors="replace").splitlines()
    first = None
    for line in lines:
        m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)", line)
        if not m:
            continue
        t = datetime.fromisoformat(m.group(1)).timestamp()
        first = first or t
        for key, text in marks.items():
            if text in line and key not in stamps:
                stamps[key] = t - first
    return stamps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="labkit-bench-", dir="/tmp"))
    base.chmod(0o755)
    cold, warm, reattach, per_service, phases = [], [], [], {}, []
    try:
        for i in range(args.runs):
            cfg = LabConfig.load(lab_dir=base / f"run{i}", followers=1,
                                 services=("postgres", "memcached", "rabbitmq"))
            t0 = time.perf_counter()
            lab = lk.Lab.up(cfg, progress=False)
            cold.append(time.perf_counter() - t0)
            for name, s in lab.timings_s.items():
                per_service.setdefault(name, []).append(s)
            phases.append(rabbit_phases(cfg.lab_dir / "rabbitmq" / "log" / "rabbit.log"))
            t0 = time.perf_counter()
            lk.Lab.up(cfg, progress=False)
            reattach.append(time.perf_counter() - t0)
            lab.down()
            t0 = time.perf_counter()
            lk.Lab.up(cfg, progress=False)
            warm.append(time.perf_counter() - t0)
            lk.Lab(cfg).down(purge=True)
    finally:
        for d in base.iterdir():
            lk.Lab(LabConfig.load(lab_dir=d)).down(purge=True)
        shutil.rmtree(base, ignore_errors=True)

    med = statistics.median
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"runs: {args.runs} (medians; min..max)")
    print(f"cold up  (leader + 1 follower + memcached + rabbitmq): {med(cold):6.2f} s"
          f"  ({min(cold):.2f}..{max(cold):.2f})   target <= 20 s")
    print(f"warm up  (data kept from the last up):                 {med(warm):6.2f} s"
          f"  ({min(warm):.2f}..{max(warm):.2f})")
    print(f"reattach (lab already running):                        {med(reattach):6.3f} s"
          f"  ({min(reattach):.3f}..{max(reattach):.3f})  target <= 1 s")
    print("cold up per service (they start in parallel):")
    for name, vals in sorted(per_service.items()):
        print(f"  {name:<12} {med(vals):6.2f} s")
    keys = sorted({k for p in phases for k in p}, key=lambda k: med([p.get(k, 0) for p in phases]))
    print("rabbitmq, seconds after its first log line (median):")
    for k in keys:
        print(f"  {k:<14} {med([p[k] for p in phases if k in p]):6.2f} s")


if __name__ == "__main__":
    main()
