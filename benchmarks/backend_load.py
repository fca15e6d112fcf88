"""The highest rate the whole backend sustains healthy, then each fault at 70% of it.

    python benchmarks/backend_load.py [--runs 3] [--duration 20] [--rates 10,20,30,40,60,80]
                                      [--fault-duration 30] [--faults all] [--fault-rate R]

The backend of notebook 12 (``labkit.backend.stack``: gunicorn, leader + followers, memcached
with leases and the invalidation service, RabbitMQ + Celery, the Cassandra ring) under the
open-loop mix of ``labkit.chaos.load``. Step 1: each rate of ``--rates`` for ``--duration`` s,
``--runs`` times; a rate is sustained when the median over the runs of its p99 (from the due
time) is <= 200 ms and no run had an error; the highest such rate is R. Step 2: each fault
alone at 0.7 R, ``--runs`` times (``--fault-duration`` s, the fault a third of the way in,
held ``--hold-s``): the medians of p99 inside the window, error rate and time to recover.
Figures are medians over the runs, on whatever machine this runs on: say whether it was shared.
Target: zero violations of the durability, counter, notification and feed checkers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import labkit as lk
from labkit.chaos import load, nemesis, report
from labkit.experiments import chaos

P99_BOUND_MS = 200.0


def healthy(backend, rate: float, duration_s: float, seed: int) -> dict:
    history = load.record(backend.web, load.Mix(backend.data), rate_per_s=rate,
                          duration_s=duration_s, seed=seed)
    backend.quiesce()
    return report.summary(history.ops, duration_s)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per healthy run")
    ap.add_argument("--rates", default="10,20,30,40,60,80")
    ap.add_argument("--fault-duration", type=float, default=30.0)
    ap.add_argument("--hold-s", type=float, default=5.0)
    ap.add_argument("--faults", default="all")
    ap.add_argument("--fault-rate", type=float,
                    help="skip the search: run the faults at this rate (requests/s)")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    faults = nemesis.parse_faults(args.faults)

    lab = lk.up(cassandra="ring")
    backend = lab.backend.start()
    sustained = None
    try:
        healthy(backend, rates[0], 5, seed=99)  # warm up: connections, models, caches
        for rate in ([] if args.fault_rate else rates):
            runs = [healthy(backend, rate, args.duration, seed=i) for i in range(args.runs)]
            p99 = statistics.median(r["p99_ms"] for r in runs)
            errors = sum(r["errors"] for r in runs)
            ok = p99 <= P99_BOUND_MS and errors == 0
            print(f"rate {rate:g}/s: median p99 {p99:.0f} ms, errors {errors}, throughput "
                  f"{statistics.median(r['throughput_per_s'] for r in runs):.1f}/s "
                  f"-> {'sustained' if ok else 'NOT sustained'}", file=sys.stderr)
            if not ok:
                break
            sustained = rate
        if sustained is None and not args.fault_rate:
            print(f"not even {rates[0]:g}/s is sustained with p99 <= {P99_BOUND_MS:g} ms; "
                  "give the faults a rate with --fault-rate")
            return 1
        at = args.fault_rate or round(0.7 * sustained, 1)
        rows = []
        for fault in faults:
            runs = []
            for i in range(args.runs):
                plan = [(fault, args.fault_duration / 3, args.hold_s)]
                chaos_run = nemesis.Nemesis(backend, plan)
                history = load.record(backend.web, load.Mix(backend.data), rate_per_s=at,
                                      duration_s=args.fault_duration, seed=i,
                                      during=chaos_run.run)
                backend.quiesce()
                row = report.fault_table(history, recovered_p99_ms=P99_BOUND_MS)[0]
                verdicts = chaos.check(backend, history, stale_bound_s=5.0)
                row["violations"] = {v["name"]: len(v["violations"]) for v in verdicts}
                row["detail"] = history.faults[0].detail  # client-cut: gets_while_cut, reconnect_s
                runs.append(row)
                print(f"{fault} run {i + 1}: {row}", file=sys.stderr)
            rows.append((fault, runs))
    finally:
        backend.stop()

    print(f"machine: {os.cpu_count()} cores shared by every server, the backend and the load "
          f"generator; medians over {args.runs} runs")
    if sustained is not None:
        print(f"highest sustained rate (p99 <= {P99_BOUND_MS:g} ms, no errors): {sustained:g}/s")
    print(f"faults at {at:g}/s, each held {args.hold_s:g} s")
    print(f"{'fault':<18} {'p99 ms':>8} {'error rate':>11} {'recover s':>10}  violations")
    for fault, runs in rows:
        med = {k: statistics.median(r[k] for r in runs) for k in ("p99_ms", "error_rate",
                                                                   "recover_s")}
        violations = {k: max(r["violations"].get(k, 0) for r in runs)
                      for k in runs[0]["violations"]}
        print(f"{fault:<18} {med['p99_ms']:>8.0f} {med['error_rate']:>11.3f} "
              f"{med['recover_s']:>10.1f}  {violations}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
