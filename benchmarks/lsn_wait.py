"""Read latency that LSN-wait adds right after a write, at 0 ms and 200 ms injected lag.

Each cycle: a like on the leader, then at once the user's read of it. The same cycles run with
no strategy (a plain follower read, stale at 200 ms) and with ``lsn_wait``; the figure is the
difference of the median read latencies. Prints medians over the runs.

    python benchmarks/lsn_wait.py [--cycles 50] [--runs 3]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import labkit as lk
from labkit.backend.replication import ReadRouter, install
from labkit.experiments.lag import READ_SQL, WRITE_SQL, catch_up

DB = "bench_lsn"


def read_ms(lab, strategy: str, cycles: int, media_ids) -> list[float]:
    out = []
    with ReadRouter(lab.leader.dsn(DB), lab.follower.dsn(DB), strategy,
                    lsn_timeout_s=5.0) as router:
        for _ in range(cycles):
            media_id = next(media_ids)
            router.write(1, WRITE_SQL, (1, media_id))
            t0 = time.perf_counter()
            router.read(1, READ_SQL, (1, media_id))
            out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    lab = lk.up()
    lab.postgres.create_database(DB)
    with lab.leader.connect(DB) as conn:
        install(conn)
        conn.execute("TRUNCATE ryw_likes")
    catch_up(lab)  # the follower must have the database before the first read
    media_ids = itertools.count(1)
    print(f"read latency right after a write, {args.cycles} cycles x {args.runs} runs")
    try:
        for delay_ms in (0, 200):
            lab.follower.set_delay(delay_ms)
            catch_up(lab)
            plain, waited = [], []
            for _ in range(args.runs):
                plain.append(statistics.median(read_ms(lab, "none", args.cycles, media_ids)))
                waited.append(statistics.median(read_ms(lab, "lsn_wait", args.cycles, media_ids)))
            p, w = statistics.median(plain), statistics.median(waited)
            print(f"  lag {delay_ms:>3} ms: follower read {p:6.2f} ms, with LSN-wait {w:7.2f} ms"
                  f" -> added {w - p:7.2f} ms (median of {args.runs} run medians)")
    finally:
        lab.follower.set_delay(0)
        catch_up(lab)


if __name__ == "__main__":
    main()
