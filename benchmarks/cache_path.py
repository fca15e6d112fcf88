"""p50 of a cached like-count read through labkit vs a raw pymemcache get on the same server.

    python benchmarks/cache_path.py [--runs 5] [--reads 5000]

Both read the same cached key from the lab's memcached over loopback with a plain
pymemcache ``Client``; labkit's read adds the key scheme, deserialization and its counters
(hits, latency). Target: labkit p50 <= 1.3x the raw get. Uses the lab of LABKIT_LAB_DIR
(started if needed) and a database of its own (``bench_cache``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import labkit as lk
from labkit.backend import cache as c


def p50_us(fn, reads: int) -> float:
    samples = []
    for _ in range(reads):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--reads", type=int, default=5000)
    args = p.parse_args()
    lab = lk.up()
    c.reset_database(lab.leader, "bench_cache")
    with lab.leader.connect("bench_cache") as conn:
        c.install(conn)
        c.seed(conn, media=100)
    db = c.Database(lab.leader.dsn("bench_cache"), size=1)
    likes = c.CacheAside(c.connect_cache(lab.cache_servers), db, prefix="bench")
    raw = c.connect_cache(lab.cache_servers)
    assert likes.like_count(42) == 420          # the miss fills the cache; the rest are hits
    key = likes.key("likes", 42)
    for _ in range(2000):                        # warm both paths
        likes.like_count(42), raw.get(key)
    ratios, ours, theirs = [], [], []
    for run in range(args.runs):
        likes.stats.reset()
        # Alternate the order so neither path always runs on a warmer CPU.
        pair = [("labkit", lambda: likes.like_count(42)), ("raw", lambda: raw.get(key))]
        if run % 2:
            pair.reverse()
        got = {name: p50_us(fn, args.reads) for name, fn in pair}
        ours.append(got["labkit"])
        theirs.append(got["raw"])
        ratios.append(got["labkit"] / got["raw"])
        print(f"run {run + 1}: labkit p50 {got['labkit']:.1f} us, raw get p50 {got['raw']:.1f} us, "
              f"ratio {ratios[-1]:.2f}")
    print(f"\nmedian over {args.runs} runs of {args.reads} reads ({os.cpu_count()} cores): "
          f"labkit {statistics.median(ours):.1f} us, raw {statistics.median(theirs):.1f} us, "
          f"ratio {statistics.median(ratios):.2f} (target <= 1.30)")
    assert likes.stats.misses == 0
    db.close()
    c.reset_database(lab.leader, "bench_cache")
    lab.leader.execute('DROP DATABASE IF EXISTS "bench_cache"')


if __name__ == "__main__":
    main()
