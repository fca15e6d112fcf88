"""Throughput and latency of the like endpoint beside a constant Django endpoint, under gunicorn.

    python benchmarks/like_endpoint.py [--runs 5] [--duration 5] [--clients 16] [--workers 4]

Both endpoints are served the same way (one gunicorn, sync workers, 127.0.0.1) and driven by
the same closed-loop load generator (``labkit.web.loadgen``) on the same machine. The like
load is random users liking or unliking random media items of a generated graph (a
single-statement transaction on the leader each; tokens are checked on the follower once per
worker and then remembered for 30 s). Runs alternate between the endpoints, so both see the
same background load; printed figures are medians over --runs, and the throughput share is
also given as the median of the per-run (paired) shares, which is steadier on a busy machine.
Target: the like endpoint reaches >= 40% of the constant endpoint's requests/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import labkit as lk
from labkit.backend import datagen, schema
from labkit.web import WebConfig, WebServer
from labkit.web.loadgen import like_requests, run_load


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--dbname", default="bench_web")
    args = ap.parse_args()

    lab = lk.up()
    schema.create_database(lab.leader, args.dbname, followers=lab.followers[:1], shards=4)
    with lab.leader.connect(args.dbname) as conn:
        graph = datagen.generate(conn, users=1_000, likes=20_000, progress=False)
        tokens = [schema.create_user(conn, f"client{i}").token for i in range(200)]
    lab.follower.wait_replayed(timeout_s=30)
    config = WebConfig.from_lab(lab, args.dbname)
    loads = {"constant": lambda rng: ("GET", "/api/constant"),
             "like": like_requests(tokens, graph.media_ids)}
    results: dict[str, list] = {name: [] for name in loads}
    try:
        with WebServer(lab.config.lab_dir / "bench-web", config, workers=args.workers) as web:
            for name, make in loads.items():  # warm up: connections, imports, caches
                run_load(web.host, web.port, make, clients=args.clients, duration_s=1)
            for run in range(args.runs):
                for name, make in loads.items():
                    r = run_load(web.host, web.port, make, clients=args.clients,
                                 duration_s=args.duration, seed=run)
                    results[name].append(r)
                    print(f"run {run + 1} {name}: {r.summary()}", file=sys.stderr)
    finally:
        lab.leader.execute(f"DROP DATABASE IF EXISTS {args.dbname} WITH (FORCE)")

    print(f"machine: {os.cpu_count()} cores (server, PostgreSQL and load generator share them); "
          f"gunicorn sync workers={args.workers}, clients={args.clients}, "
          f"{args.duration:g} s per run, runs={args.runs}; medians")
    print(f"{'endpoint':<10} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}")
    med = {}
    for name, rs in results.items():
        med[name] = {k: statistics.median(getattr(r, k) for r in rs)
                     for k in ("rps", "p50_ms", "p95_ms", "p99_ms", "errors")}
        m = med[name]
        print(f"{name:<10} {m['rps']:>8.0f} {m['p50_ms']:>8.2f} {m['p95_ms']:>8.2f} "
              f"{m['p99_ms']:>8.2f} {m['errors']:>7.0f}")
    share = med["like"]["rps"] / med["constant"]["rps"]
    paired = statistics.median(lk_.rps / c.rps for lk_, c in zip(results["like"],
                                                                results["constant"]))
    print(f"like / constant throughput: {share:.0%} of the medians, {paired:.0%} median of "
          f"per-run shares (target >= 40%): {'met' if min(share, paired) >= 0.4 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
