"""Akkio vs static placement vs full replication: the issue's figures, medians over runs.

    python benchmarks/akkio.py [--runs 3] [--users 40] [--duration-s 30] [--rate 20] [--out r.json]

Starts (or reattaches to) the lab's regions (``cassandra="regions"``: two clusters, Toxiproxy
links 40 ms each way) with PostgreSQL and Memcached, and runs ``labkit.experiments.akkio``
--runs times. Printed per policy, the median over runs of: cross-region request share and
megabytes, read and write p50/p99, rows stored (both regions), migrations, lookup p50/p99
on a cache hit and a miss (as the client sees it, and inside the service), and lost writes (the history check). Then the targets:
Akkio cuts cross-region requests by >= 50% against static; its read p99 is within 1.5x of
full replication while it stores <= 0.6x of what full replication stores; a cached lookup
takes <= 1 ms p99.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import labkit as lk
from labkit.experiments.akkio import POLICIES, Workload, run_experiment

FIGURES = ("cross_share", "cross_mb", "read_p50_ms", "read_p99_ms", "write_p50_ms",
           "write_p99_ms", "rows_total", "migrations", "lookup_hit_p50_ms", "lookup_hit_p99_ms",
           "lookup_miss_p50_ms", "lookup_miss_p99_ms", "inside_hit_p50_ms", "inside_hit_p99_ms",
           "inside_miss_p50_ms", "inside_miss_p99_ms", "lost_writes")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--users", type=int, default=40)
    ap.add_argument("--duration-s", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    lab = lk.up(cassandra="regions", services=("postgres", "memcached"))
    w = Workload(users=args.users, duration_s=args.duration_s, rate=args.rate)
    runs = []
    for i in range(args.runs):
        runs.append(run_experiment(lab, w))
        print(f"run {i + 1}/{args.runs} done", flush=True)
    med = {p: {f: statistics.median(r["policies"][p]["summary"][f] for r in runs)
               for f in FIGURES} for p in POLICIES}
    print(f"medians over {args.runs} runs ({args.users} users, {args.duration_s:g} s at "
          f"{args.rate:g} req/s per policy)")
    print(f"{'figure':<20}" + "".join(f"{p:>12}" for p in POLICIES))
    for f in FIGURES:
        print(f"{f:<20}" + "".join(f"{med[p][f]:>12.3f}" for p in POLICIES))
    s, a, r = med["static"], med["akkio"], med["replicated"]
    cut = 1 - a["cross_share"] / s["cross_share"] if s["cross_share"] else float("nan")
    print("\ntargets:")
    print(f"  cross-region requests cut vs static: {cut:.0%} (target >= 50%)")
    print(f"  read p99 akkio / replicated: {a['read_p99_ms'] / r['read_p99_ms']:.2f}x "
          f"(target <= 1.5x)")
    print(f"  storage akkio / replicated: {a['rows_total'] / r['rows_total']:.2f}x "
          f"(target <= 0.6x)")
    print(f"  cached lookup p99 (akkio): {a['lookup_hit_p99_ms']:.2f} ms seen by the client "
          f"(HTTP to the service included), {a['inside_hit_p99_ms']:.2f} ms inside the service "
          "(target <= 1 ms)")
    if args.out:
        args.out.write_text(json.dumps(runs, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
