"""p50 of a cached like-count read through labkit vs a raw pymemcache get on the same server.

    python benchmarks/cache_path.py [--runs 5] [--reads 5000]

Both read the same cached key from the lab's memcached over loopback with a plain
pymemcache ``Client``; labkit's read adds the key scheme, deserialization and its counters
(hits, latency). Target: labkit p50 <= 1.3x the raw get. Uses the lab of LABKIT_LAB_DIR
(started if needed) and a database of its own (``bench_cache``, the storage schema with a
small generated graph).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import labkit as lk
from labkit.backend import cache as c
from labkit.backend import datagen, likes, schema


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
    schema.create_database(lab.leader, "bench_cache")
    with lab.leader.connect("bench_cache") as conn:
        hot = datagen.generate(conn, users=100, likes=2_000, progress=False).hot_media_id
        count = likes.count(conn, hot)
    db = c.Database(lab.leader.dsn("bench_cache"), size=1)
    cached = c.CacheAside(c.connect_cache(lab.cache_servers), db, prefix="bench")
    raw = c.connect_cache(lab.cache_servers)
    assert cached.like_count(hot) == count      # the miss fills the cache; the rest are hits
    key = cached.key("likes", hot)
    for _ in range(2000):                        # warm both paths
        cached.like_count(hot), raw.get(key)
    ratios, ours, theirs = [], [], []
    for run in range(args.runs):
        cached.stats.reset()
        # Alternate the order so neither path always runs on a warmer CPU.
        pair = [("labkit", lambda: cached.like_count(hot)), ("raw", lambda: raw.get(key))]
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
    assert cached.stats.misses == 0
    db.close()
    lab.postgres.drop_database("bench_cache")


if __name__ == "__main__":
    main()
