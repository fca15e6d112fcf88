"""Canary judges at 10% traffic: time to detect each regression, false rollbacks, missed ones.

    python benchmarks/canary.py [--good 20] [--bad 7] [--max-s 60] [--rate 100] [--out runs.json]

Each run deploys a release as the canary beside a fresh baseline (labkit.deploy), gives each
10% of a fixed-rate load (users reading posts, popular posts most), and takes a verdict from
both judges every 2 s on the data since the shift, for at most --max-s seconds
(labkit.experiments.canary.analyze). --good runs of a good release (a new feature behind a
gate) and --bad runs of each bad one (an N+1 latency regression, an error spike, a per-request
memory leak), interleaved so that all kinds see the same background load.

Printed per judge: the median time to detect each regression (seconds after the shift; with
the quartiles), the false-rollback rate over the good runs and the missed-regression rate over
the bad ones (with a 95% Wilson interval), and how large the latency regression really was
(canary p99 / baseline p99, and p50, over each run). Targets: a 2x p99 regression detected
within 60 s; false rollbacks <= 5%.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import labkit as lk
from labkit.experiments.canary import KINDS, run_experiment, summarize, table


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if not n:
        return (float("nan"), float("nan"))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def quartiles(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) < 4:
        return f"{statistics.median(values):.1f} s (n={len(values)})"
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return f"{q2:.1f} s [{q1:.1f}, {q3:.1f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--good", type=int, default=20, help="runs of the good release")
    ap.add_argument("--bad", type=int, default=7, help="runs of each of the 3 bad releases")
    ap.add_argument("--max-s", type=float, default=60.0, help="longest analysis of one run")
    ap.add_argument("--rate", type=float, default=100.0, help="requests/s through the router")
    ap.add_argument("--percent", type=int, default=10)
    ap.add_argument("--out", type=Path, help="write every run's rows here (JSON)")
    args = ap.parse_args()

    lab = lk.up(services=("postgres", "memcached"))
    runs = {"good": args.good, "latency": args.bad, "errors": args.bad, "leak": args.bad}
    t0 = time.monotonic()

    def progress(row: dict) -> None:
        t = "-" if row["decision_s"] is None else f"{row['decision_s']:.0f} s"
        print(f"[{time.monotonic() - t0:6.0f} s] run {row['run']:>2} {row['kind']:<8} "
              f"{row['judge']:<10} {'rolled back' if row['rolled_back'] else 'kept':<11} {t:>5}",
              file=sys.stderr, flush=True)

    rows = run_experiment(lab, kinds=tuple(KINDS), runs=runs, percent=args.percent,
                          max_s=args.max_s, rate_per_s=args.rate, progress=progress,
                          dbname="bench_canary")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")

    print(f"\n{len(rows) // 2} runs at {args.percent}% canary traffic, {args.rate:g} requests/s, "
          f"verdicts every 2 s for at most {args.max_s:g} s, in {time.monotonic() - t0:.0f} s "
          f"(machine shared with other work: figures vary between runs)\n")
    print(table(summarize(rows)))
    print()
    for judge in sorted({r["judge"] for r in rows}):
        mine = [r for r in rows if r["judge"] == judge]
        good = [r for r in mine if r["kind"] == "good"]
        bad = [r for r in mine if r["kind"] != "good"]
        fr = sum(r["rolled_back"] for r in good)
        missed = sum(not r["rolled_back"] for r in bad)
        lo, hi = wilson(fr, len(good))
        mlo, mhi = wilson(missed, len(bad))
        print(f"{judge}: false rollbacks {fr}/{len(good)} = {fr / max(1, len(good)):.0%} "
              f"(95% CI {lo:.0%}-{hi:.0%}); missed regressions {missed}/{len(bad)} = "
              f"{missed / max(1, len(bad)):.0%} (95% CI {mlo:.0%}-{mhi:.0%})")
        for kind in ("latency", "errors", "leak"):
            times = [r["decision_s"] for r in mine if r["kind"] == kind and r["rolled_back"]]
            print(f"    time to detect {kind:<8} median [quartiles]: {quartiles(times)}")
    lat = [r for r in rows if r["kind"] == "latency" and r["judge"] == "kayenta"]
    if lat:
        p99 = [r["p99_ratio"] for r in lat if r["p99_ratio"]]
        p50 = [r["p50_ratio"] for r in lat if r["p50_ratio"]]
        print(f"\nthe latency regression (canary / baseline over each run): p99 x"
              f"{statistics.median(p99):.2f} (range {min(p99):.2f}-{max(p99):.2f}), "
              f"p50 x{statistics.median(p50):.2f}")
        within = [r for r in lat if r["rolled_back"] and r["decision_s"] <= 60]
        print(f"target: a 2x p99 regression detected within 60 s: kayenta {len(within)}/"
              f"{len(lat)} runs")
    unanswered = rows[0]["unanswered_in_experiment"] if rows else 0
    print(f"requests without an answer during the whole benchmark: {unanswered}"
          + (f" {rows[0]['unanswered_why']}" if unanswered else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
