"""COUNT(*) over the like rows vs one read of the denormalized counter, as likes grow.

    python benchmarks/counter_vs_count.py [--runs 3] [--repeat 15]

For each run, a fresh media item gets 10^3, 10^4, 10^5, 10^6 likes (COPY on the leader); at
each size both reads are timed on the follower (medians of --repeat reads, client side, so a
loopback round trip is included). Printed: the median over --runs of each figure.
Targets: the counter read stays within 2x of its 10^3 time; COUNT(*)/counter >= 200x at 10^6.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import labkit as lk
from labkit.backend import datagen, schema

SIZES = (10**3, 10**4, 10**5, 10**6)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--dbname", default="bench_counter")
    args = ap.parse_args()

    lab = lk.up()
    schema.create_database(lab.leader, args.dbname, followers=lab.followers[:1], shards=4)
    results: dict[int, list[dict[str, float]]] = {n: [] for n in SIZES}
    try:
        with lab.leader.connect(args.dbname) as conn, lab.follower.connect(args.dbname) as fconn:
            owner = schema.create_user(conn, "bench")
            for run in range(args.runs):
                media_id = schema.create_media(conn, owner.user_id, f"run {run}")
                for row in datagen.count_experiment(conn, fconn, media_id, SIZES,
                                                    repeat=args.repeat, progress=False):
                    results[row["likes"]].append(row)
                print(f"run {run + 1}/{args.runs} done", file=sys.stderr)
    finally:
        lab.leader.execute(f"DROP DATABASE IF EXISTS {args.dbname} WITH (FORCE)")

    med = {n: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
           for n, rows in results.items()}
    base = med[SIZES[0]]["counter_ms"]
    print(f"machine: {os.cpu_count()} cores; runs={args.runs}, reads per figure={args.repeat}; "
          "medians; reads on the follower")
    print(f"{'likes':>9} {'COUNT(*) ms':>12} {'counter ms':>11} {'ratio':>8} {'counter/1e3':>12}")
    for n in SIZES:
        m = med[n]
        print(f"{n:>9,} {m['count_star_ms']:>12.3f} {m['counter_ms']:>11.3f} "
              f"{m['count_star_ms'] / m['counter_ms']:>8.0f}x {m['counter_ms'] / base:>11.2f}x")
    worst = max(med[n]["counter_ms"] for n in SIZES) / base
    ratio = med[SIZES[-1]]["count_star_ms"] / med[SIZES[-1]]["counter_ms"]
    print(f"counter read: worst {worst:.2f}x its 10^3 time (target <= 2x): "
          f"{'met' if worst <= 2 else 'MISSED'}")
    print(f"ratio at 10^6: {ratio:.0f}x (target >= 200x): {'met' if ratio >= 200 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
