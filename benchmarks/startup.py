"""Time to bring the lab up (cold and warm) and to reattach, per provider; image builds.

    python benchmarks/startup.py [--runs 5] [--provider native,docker] [--build-runs 1]
                                 [--ring-runs 3]

Cold: a new lab directory (initdb, pg_basebackup, a new RabbitMQ node; on docker, new
containers from the cached images). Warm: `up` after a `down`: natively the data is kept;
on docker `down` removes the containers, so warm is new containers again (with the images
and the engine's page cache warm). Reattach: `up` while the lab runs. Medians over --runs.
The Cassandra ring (three nodes) is timed the same way on each provider, --ring-runs times
(0: not at all): cold, then warm after a `down` (natively its data is kept and the JVMs start
on it; on docker the containers, and so the data, are new).
With docker among the providers, image builds are timed too: cold (the base made by
debootstrap under a tag of the benchmark's own, then each image with no layer cache, tagged
labkit-bench/...; both removed afterwards) and cached (`labkit images build` with every
image present), --build-runs times.
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


def image_builds(runs: int) -> dict[str, list[float]]:
    """Seconds for the docker images: cold (base by debootstrap, no layer cache) and cached."""
    from labkit.providers import docker, images
    client = docker.client(LabConfig.load().docker_host)
    quiet = lambda line: None  # noqa: E731
    out: dict[str, list[float]] = {"base (debootstrap + import)": [], "images, no cache": [],
                                   "images, cached": []}
    for i in range(runs):
        name = f"labkit-bench/debian:bench{i}"
        t0 = time.perf_counter()
        images.make_base(client, name, quiet)
        out["base (debootstrap + import)"].append(time.perf_counter() - t0)
        client.images.remove(name)  # the benchmark's own tag; the lab's base stays
        base_id = images.base_image(client, quiet)
        t0 = time.perf_counter()
        tags = [images.build(client, s, base_id, quiet, repo="labkit-bench", nocache=True)
                for s in images.SERVICES]
        out["images, no cache"].append(time.perf_counter() - t0)
        for t in tags:
            client.images.remove(t)
        t0 = time.perf_counter()
        images.build_all(client, images.SERVICES, quiet)
        out["images, cached"].append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--provider", default="native",
                    help="comma-separated: native, docker (each measured in the same run)")
    ap.add_argument("--build-runs", type=int, default=1,
                    help="cold and cached image builds (with docker among the providers)")
    ap.add_argument("--ring-runs", type=int, default=3,
                    help="cold and warm up of the Cassandra ring per provider (0: skip)")
    args = ap.parse_args()
    med = statistics.median
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"runs: {args.runs} (medians; min..max)")
    warm_of = {}
    for provider in args.provider.split(","):
        warm_of[provider] = run_provider(provider, args.runs)
    if "native" in warm_of and "docker" in warm_of:
        ratio = warm_of["docker"] / warm_of["native"]
        print(f"\nwarm up, docker / native: {ratio:.2f}x   target <= 2x")
    if args.ring_runs:
        print(f"\nCassandra ring, 3 nodes ({args.ring_runs} run(s); medians; min..max)")
        for provider in args.provider.split(","):
            for what, vals in ring_times(provider, args.ring_runs).items():
                print(f"  {provider:<7} {what:<5} up {med(vals):6.1f} s  "
                      f"({min(vals):.1f}..{max(vals):.1f})")
    if "docker" in warm_of and args.build_runs:
        print(f"\nimage builds ({args.build_runs} run(s); median):")
        for what, vals in image_builds(args.build_runs).items():
            print(f"  {what:<28} {med(vals):7.1f} s  ({min(vals):.1f}..{max(vals):.1f})")


def ring_times(provider: str, runs: int) -> dict[str, list[float]]:
    """Seconds for ``up --cassandra ring`` on a new lab (cold) and again after ``down`` (warm)."""
    base = Path(tempfile.mkdtemp(prefix="labkit-bench-ring-", dir="/tmp"))
    base.chmod(0o755)
    out: dict[str, list[float]] = {"cold": [], "warm": []}
    try:
        for i in range(runs):
            cfg = LabConfig.load(lab_dir=base / f"run{i}", provider=provider,
                                 services=("cassandra",), cassandra="ring")
            for what in ("cold", "warm"):
                t0 = time.perf_counter()
                lab = lk.Lab.up(cfg, progress=False)
                out[what].append(time.perf_counter() - t0)
                lab.down(progress=False)
            lk.Lab(cfg).down(purge=True, progress=False)
    finally:
        for d in base.iterdir():
            lk.Lab(LabConfig.load(lab_dir=d, provider=provider)).down(purge=True, progress=False)
        shutil.rmtree(base, ignore_errors=True)
    return out


def run_provider(provider: str, runs: int) -> float:
    """Cold, warm and reattach timings on one provider; print them; return the warm median."""
    base = Path(tempfile.mkdtemp(prefix="labkit-bench-", dir="/tmp"))
    base.chmod(0o755)
    cold, warm, reattach, per_service, phases = [], [], [], {}, []
    if provider == "docker":  # the images are built before the clock starts (timed apart)
        from labkit.providers import docker, images
        images.build_all(docker.client(LabConfig.load().docker_host))
    try:
        for i in range(runs):
            cfg = LabConfig.load(lab_dir=base / f"run{i}", followers=1, provider=provider,
                                 services=("postgres", "memcached", "rabbitmq"))
            t0 = time.perf_counter()
            lab = lk.Lab.up(cfg, progress=False)
            cold.append(time.perf_counter() - t0)
            for name, s in lab.timings_s.items():
                per_service.setdefault(name, []).append(s)
            if provider == "native":
                phases.append(rabbit_phases(cfg.lab_dir / "rabbitmq" / "log" / "rabbit.log"))
            t0 = time.perf_counter()
            lk.Lab.up(cfg, progress=False)
            reattach.append(time.perf_counter() - t0)
            lab.down(progress=False)
            t0 = time.perf_counter()
            lk.Lab.up(cfg, progress=False)
            warm.append(time.perf_counter() - t0)
            lk.Lab(cfg).down(purge=True, progress=False)
    finally:
        for d in base.iterdir():
            lk.Lab(LabConfig.load(lab_dir=d, provider=provider)).down(purge=True, progress=False)
        shutil.rmtree(base, ignore_errors=True)

    med = statistics.median
    print(f"\n[{provider}]")
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
    if keys:
        print("rabbitmq, seconds after its first log line (median):")
    for k in keys:
        print(f"  {k:<14} {med([p[k] for p in phases if k in p]):6.2f} s")
    return med(warm)


if __name__ == "__main__":
    main()
