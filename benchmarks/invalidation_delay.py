"""Commit -> delete delay of the invalidation service, p50 and p99 over 1,000 updates.

    python benchmarks/invalidation_delay.py [--updates 1000] [--rate 200] [--runs 3]

Each update is one like on the leader (``labkit.backend.likes``: like row and counter in one
transaction, storage schema) at ``--rate`` updates per second; the service (a separate
process reading a logical slot) deletes the cached count and records commit timestamp ->
delete time. Target: p99 <= 100 ms. Uses the lab of LABKIT_LAB_DIR (started if needed) and
a database of its own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import labkit as lk
from labkit.backend import cache as c
from labkit.backend import likes, schema
from labkit.backend.invalidation import InvalidationService

DB = "bench_invalidation"


def one_run(lab, updates: int, rate: float, poll_ms: float) -> tuple[float, float, float]:
    schema.create_database(lab.leader, DB)
    with lab.leader.connect(DB) as conn:
        fans = [schema.create_user(conn, f"fan{i}").user_id for i in range(updates // 100 + 1)]
        poster = schema.create_user(conn, "poster").user_id
        media = [schema.create_media(conn, poster) for _ in range(100)]
    svc = InvalidationService.for_lab(lab, dbname=DB, prefix="bench", poll_ms=poll_ms)
    svc.delays_path.unlink(missing_ok=True)
    svc.start()
    try:
        mc = c.connect_cache(lab.cache_servers)
        with lab.leader.connect(DB) as conn:
            t_next = time.perf_counter()
            for i in range(updates):
                media_id = media[i % 100]
                mc.set(c.cache_key("bench", "likes", media_id), b"0")
                likes.like(conn, fans[i // 100], media_id)
                t_next += 1 / rate
                time.sleep(max(0.0, t_next - time.perf_counter()))
        svc.wait_for_commits(updates, timeout_s=60)
        delays = svc.delays_ms()
    finally:
        svc.stop()
        svc.drop_slot()
    q = statistics.quantiles(delays, n=100, method="inclusive")
    return statistics.median(delays), q[98], max(delays)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--updates", type=int, default=1000)
    p.add_argument("--rate", type=float, default=200.0, help="updates per second")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--poll-ms", type=float, default=10.0)
    args = p.parse_args()
    lab = lk.up()
    p50s, p99s = [], []
    for run in range(args.runs):
        p50, p99, worst = one_run(lab, args.updates, args.rate, args.poll_ms)
        p50s.append(p50)
        p99s.append(p99)
        print(f"run {run + 1}: {args.updates} updates, commit->delete p50 {p50:.1f} ms, "
              f"p99 {p99:.1f} ms, max {worst:.1f} ms")
    print(f"\nmedian over {args.runs} runs ({os.cpu_count()} cores, poll {args.poll_ms} ms): "
          f"p50 {statistics.median(p50s):.1f} ms, p99 {statistics.median(p99s):.1f} ms "
          f"(target p99 <= 100 ms)")
    lab.postgres.drop_database(DB)


if __name__ == "__main__":
    main()
