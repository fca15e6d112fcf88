"""The feed's hot kernel in Python, Cython and C; the feed endpoint before/after; COW per GC setting.

    python benchmarks/speedups.py [--runs 5] [--duration 5] [--clients 4] [--workers 2]
                                  [--users 20000] [--memory-runs 3] [--steps 4]
                                  [--requests-per-step 500]

1. Kernel: ``feedscore.score_candidates`` on real candidates of heavy readers (about 1,300
   posts each), every built variant timed interleaved in the same run; medians of --runs.
2. Endpoint: ``GET /api/feed`` under gunicorn (sync workers, no preload) with the pure and
   the compiled kernel, runs alternating so both see the same background load; requests/s
   and the workers' CPU seconds per 1,000 requests (their own CPU time, from the kernel).
3. Memory: a preloading gunicorn (ranking model in the master) per GC setting (default,
   freeze, disabled); each worker's USS growth per 1,000 requests it served, with a full
   collection at the end of every step, as a long-lived worker eventually runs
   (``labkit.experiments.worker_memory``); medians of --memory-runs.

Targets (issue 13): Cython >= 20x pure Python and within 2x of C; endpoint CPU per request
down >= 20%; gc.freeze() cuts private-memory growth per worker by >= 50%.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import labkit as lk
from labkit import speedups
from labkit.backend import datagen, ranking, schema
from labkit.experiments import feed_speed, worker_memory
from labkit.web import WebConfig, WebServer
from labkit.web.loadgen import get_requests


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per endpoint run")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--memory-runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--requests-per-step", type=int, default=500)
    ap.add_argument("--dbname", default="bench_speedups")
    args = ap.parse_args()

    lab = lk.up()
    status, = speedups.status()
    print(f"feedscore kernel: {status.active} ({status.reason})", file=sys.stderr)
    if status.active != "cython":
        print("the compiled kernel is not built; nothing to compare", file=sys.stderr)
        return 1
    lab.postgres.create_database(args.dbname, replace=True)
    try:
        with lab.leader.connect(args.dbname) as conn:
            schema.install(conn, shards=4)
            graph = datagen.generate(conn, users=args.users, media_per_user=2,
                                     follows_per_user=5, likes=2 * args.users, progress=False)
            readers = datagen.add_readers(conn, graph, n=20, follows=300)
        lab.follower.wait_replayed(timeout_s=30)
        with lab.follower.connect(args.dbname) as fconn:
            kernel_rows = kernels(fconn, readers, args.runs)
        config = WebConfig.from_lab(lab, args.dbname, preload_feed_model=True)
        request = get_requests("/api/feed", [r.token for r in readers])
        endpoint_rows = endpoint(lab, config, request, args)
        memory_rows = memory(lab, config, request, args)
    finally:
        lab.postgres.drop_database(args.dbname)
    report(args, kernel_rows, endpoint_rows, memory_rows)
    return 0


def kernels(fconn, readers, runs: int) -> dict[str, list[dict]]:
    model = ranking.FeedModel.load(fconn)
    source = ranking.PostgresCandidates(fconn)
    out: dict[str, list[dict]] = {}
    for run in range(runs):
        reader = readers[run % len(readers)]
        candidates = source.candidates(reader.user_id)
        timed = feed_speed.time_kernels(ranking.kernel_args(candidates, model, reader.user_id))
        for name, t in timed.items():
            out.setdefault(name, []).append({**t, "candidates": len(candidates)})
        print(f"kernel run {run + 1}: " + ", ".join(
            f"{k} {v['median_s'] * 1e6:.0f} us" for k, v in timed.items()), file=sys.stderr)
    return out


def endpoint(lab, config, request, args) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"pure": [], "compiled": []}
    servers = {k: WebServer(lab.config.lab_dir / f"bench-feed-{k}", config.replace(feed_kernel=k),
                            workers=args.workers) for k in out}
    try:
        for server in servers.values():
            server.start()
            feed_speed.endpoint_cost(server, request, clients=args.clients, duration_s=2)
        for run in range(args.runs):
            for kernel, server in servers.items():
                r = feed_speed.endpoint_cost(server, request, clients=args.clients,
                                             duration_s=args.duration, seed=run)
                out[kernel].append(r)
                print(f"endpoint run {run + 1} {kernel}: {r['rps']:.0f} req/s, "
                      f"{r['cpu_s_per_1k']:.2f} CPU s per 1k", file=sys.stderr)
    finally:
        for server in servers.values():
            server.stop()
    return out


def memory(lab, config, request, args) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for run in range(args.memory_runs):
        rows = worker_memory.run(config, lab.config.lab_dir / "bench-cow", request,
                                 workers=args.workers, steps=args.steps,
                                 requests_per_step=args.requests_per_step, clients=args.clients)
        for s in worker_memory.summarize(rows):
            out.setdefault(s["gc_mode"], []).append(s)
            print(f"memory run {run + 1} {s['gc_mode']}: {s}", file=sys.stderr)
    return out


def med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def report(args, kernel_rows, endpoint_rows, memory_rows) -> None:
    print(f"machine: {os.cpu_count()} cores shared by gunicorn, PostgreSQL and the load "
          f"generator (and, here, other engineers' servers); medians of {args.runs} runs "
          f"(memory: {args.memory_runs})")
    n = int(med(kernel_rows["python"], "candidates"))
    print(f"\n1. feedscore.score_candidates, ~{n} candidates per call")
    print(f"{'variant':<8} {'us/call':>9} {'x pure':>8}")
    for name, rows in kernel_rows.items():
        print(f"{name:<8} {med(rows, 'median_s') * 1e6:>9.1f} {med(rows, 'speedup'):>8.1f}")
    cy = med(kernel_rows["cython"], "speedup")
    cy_vs_c = med(kernel_rows["cython"], "median_s") / med(kernel_rows["c"], "median_s")
    print(f"Cython {cy:.1f}x pure (target >= 20x): {'met' if cy >= 20 else 'MISSED'}; "
          f"Cython time / C time {cy_vs_c:.2f} (target <= 2): "
          f"{'met' if cy_vs_c <= 2 else 'MISSED'}")

    print(f"\n2. GET /api/feed, {args.workers} sync workers, {args.clients} clients, "
          f"{args.duration:g} s per run")
    print(f"{'kernel':<9} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU s/1k req':>13}")
    for kernel, rows in endpoint_rows.items():
        print(f"{kernel:<9} {med(rows, 'rps'):>7.0f} {med(rows, 'p50_ms'):>7.1f} "
              f"{med(rows, 'p99_ms'):>7.1f} {med(rows, 'cpu_s_per_1k'):>13.2f}")
    cut = 1 - med(endpoint_rows["compiled"], "cpu_s_per_1k") / med(endpoint_rows["pure"],
                                                                     "cpu_s_per_1k")
    print(f"CPU per request down {cut:.0%} (target >= 20%): {'met' if cut >= 0.2 else 'MISSED'}")

    print(f"\n3. private memory (USS) per worker, preloaded master, {args.workers} workers, "
          f"{args.steps} x {args.requests_per_step} requests, a full collection per step")
    print(f"{'gc':<9} {'USS start':>9} {'USS end':>8} {'shared end':>10} {'MB/1k req':>9}")
    for gc_mode, rows in memory_rows.items():
        print(f"{gc_mode:<9} {med(rows, 'uss_start_mb'):>9.1f} {med(rows, 'uss_end_mb'):>8.1f} "
              f"{med(rows, 'shared_end_mb'):>10.1f} {med(rows, 'uss_growth_mb_per_1k'):>9.2f}")
    freeze_cut = 1 - (med(memory_rows["freeze"], "uss_growth_mb_per_1k")
                      / med(memory_rows["default"], "uss_growth_mb_per_1k"))
    print(f"gc.freeze() cuts USS growth per worker by {freeze_cut:.0%} (target >= 50%): "
          f"{'met' if freeze_cut >= 0.5 else 'MISSED'}")


if __name__ == "__main__":
    raise SystemExit(main())
