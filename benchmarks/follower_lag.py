"""What follower.lag() says right after a write, beside how long the write takes to show up there.

    python benchmarks/follower_lag.py [--writes 7] [--delays 0,500,2000]

For each injected replay delay (``set_delay(..., settle=True)``: the delay is in force), each
write is one INSERT on the leader, then at once ``lag()`` (the heartbeat figure), then a poll
of the follower on an open connection until the row is visible. A truthful lag is about the
visibility time (it errs high by at most one heartbeat interval, 100 ms). Prints medians and
ranges over the writes. Uses the lab of LABKIT_LAB_DIR (started if needed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import labkit as lk

TABLE = "bench_follower_lag"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--writes", type=int, default=7)
    p.add_argument("--delays", default="0,500,2000", help="replay delays in ms, comma-separated")
    args = p.parse_args()
    lab = lk.up()
    follower = lab.follower
    lab.leader.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY)")
    print(f"lag() right after a write vs the write's visibility on the follower, "
          f"{args.writes} writes per delay ({os.cpu_count()} cores, shared machine)")
    print(f"{'delay ms':>9}{'lag() ms':>10}{'range':>14}{'visible ms':>12}{'range':>14}"
          f"{'lag() call ms':>15}")
    try:
        with follower.connect() as fconn:
            for delay_ms in (int(d) for d in args.delays.split(",")):
                follower.set_delay(delay_ms, settle=True)
                lags, visible, calls = [], [], []
                for _ in range(args.writes):
                    (row,), = lab.leader.execute(f"INSERT INTO {TABLE} DEFAULT VALUES RETURNING id")
                    t0 = time.perf_counter()
                    lags.append(follower.lag().ms)
                    calls.append((time.perf_counter() - t0) * 1000)
                    while not fconn.execute(f"SELECT 1 FROM {TABLE} WHERE id = %s",
                                            (row,)).fetchone():
                        time.sleep(0.001)
                    visible.append((time.perf_counter() - t0) * 1000)
                print(f"{delay_ms:>9}{statistics.median(lags):>10.0f}"
                      f"{f'{min(lags):.0f}-{max(lags):.0f}':>14}{statistics.median(visible):>12.0f}"
                      f"{f'{min(visible):.0f}-{max(visible):.0f}':>14}"
                      f"{statistics.median(calls):>15.1f}")
    finally:
        follower.set_delay(0)
        follower.wait_replayed()
        lab.leader.execute(f"DROP TABLE IF EXISTS {TABLE}")


if __name__ == "__main__":
    main()
