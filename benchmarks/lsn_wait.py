"""Read latency that LSN-wait adds right after a write, at 0 ms and 200 ms injected lag.

Each cycle: a like on the leader (``labkit.backend.likes``, storage schema), then at once the
user's read of it. The same cycles run with no strategy (a plain follower read, stale at
200 ms) and with ``lsn_wait``; the figure is the difference of the median read latencies.
Prints medians over the runs.

    python benchmarks/lsn_wait.py [--cycles 50] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import labkit as lk
from labkit.backend import likes
from labkit.backend.replication import ReadRouter
from labkit.experiments.lag import prepare

DB = "bench_lsn"


def read_ms(lab, strategy: str, user_id: int, media_ids) -> list[float]:
    out = []
    with ReadRouter(lab.leader.dsn(DB), lab.follower.dsn(DB), strategy,
                    lsn_timeout_s=5.0) as router:
        for media_id in media_ids:
            router.write(user_id, lambda conn: likes.like(conn, user_id, media_id))
            t0 = time.perf_counter()
            router.read(user_id, lambda conn: likes.liked(conn, user_id, media_id))
            out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    lab = lk.up()
    lab.postgres.create_database(DB, replace=True)
    # One fresh post per cycle: every like is a real change (2 delays x 2 strategies x runs).
    (user_id,), media_ids = prepare(lab, DB, users=1, photos=4 * args.runs * args.cycles)
    posts = iter(media_ids)
    print(f"read latency right after a write, {args.cycles} cycles x {args.runs} runs")
    try:
        for delay_ms in (0, 200):
            lab.follower.set_delay(delay_ms)
            lab.follower.wait_replayed()
            plain, waited = [], []
            for _ in range(args.runs):
                batch = [next(posts) for _ in range(args.cycles)]
                plain.append(statistics.median(read_ms(lab, "none", user_id, batch)))
                batch = [next(posts) for _ in range(args.cycles)]
                waited.append(statistics.median(read_ms(lab, "lsn_wait", user_id, batch)))
            p, w = statistics.median(plain), statistics.median(waited)
            print(f"  lag {delay_ms:>3} ms: follower read {p:6.2f} ms, with LSN-wait {w:7.2f} ms"
                  f" -> added {w - p:7.2f} ms (median of {args.runs} run medians)")
    finally:
        lab.follower.set_delay(0)
        lab.follower.wait_replayed()
        lab.postgres.drop_database(DB)


if __name__ == "__main__":
    main()
