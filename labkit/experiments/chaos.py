"""The whole backend under an open-loop load while a nemesis breaks its parts; history checked.

Introduced in notebooks/12_backend_under_faults.ipynb.

    labkit experiment chaos --duration 60 --rate 8 --faults all --out chaos.json

One run: the backend is started fresh (``labkit.backend.stack.Backend``), the mix of
``labkit.chaos.load`` runs at ``--rate`` requests per second for ``--duration`` seconds while
the nemesis injects each of ``--faults`` in turn (evenly spread after a healthy warm-up, each
held ``--hold-s``), then the system is left to go quiet and the checkers read the history
(``labkit.chaos.checkers``). Written: ``OUT`` (JSON: parameters, the healthy
and whole-run figures, a row per second, a row per fault, the checkers' verdicts), ``OUT``
with ``.png`` (throughput, latency percentiles and error rate over time, faults shaded) and
``.history.jsonl`` (every operation and fault, ``History.load`` reads it back).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from labkit.chaos import checkers, load, nemesis, report
from labkit.chaos.history import History
from labkit.experiments.results import result_path
from labkit.experiments.results import save as save_results

DEFAULT_STALE_BOUND_S = 5.0


def run(lab: Any, *, duration_s: float = 60.0, rate_per_s: float = 10.0,
        faults: list[str] | None = None, hold_s: float = 5.0, seed: int = 0,
        stale_bound_s: float = DEFAULT_STALE_BOUND_S, recovered_p99_ms: float = 200.0,
        backend: Any = None) -> tuple[dict[str, Any], History]:
    """One run (see the module doc); the results as a dict, and the history.

    ``backend`` is a started ``Backend`` to reuse; by default a fresh one is started and
    stopped afterwards.
    """
    faults = list(nemesis.FAULTS) if faults is None else faults
    plan = nemesis.schedule(faults, duration_s, hold_s=hold_s)
    own = backend is None
    backend = lab.backend.start() if own else backend
    try:
        chaos = nemesis.Nemesis(backend, plan)
        history = load.record(backend.web, load.Mix(backend.data), rate_per_s=rate_per_s,
                              duration_s=duration_s, seed=seed, during=chaos.run)
        history.meta.update(backend=backend.name, faults=faults, hold_s=hold_s)
        quiet_s = backend.quiesce()
        verdicts = check(backend, history, stale_bound_s)
    finally:
        if own:
            backend.stop()
    first = min((f.start_s for f in history.faults), default=duration_s)
    healthy = [o for o in history.ops if o.due_s < first]
    result = {
        "params": {"duration_s": duration_s, "rate_per_s": rate_per_s, "faults": faults,
                   "hold_s": hold_s, "seed": seed, "stale_bound_s": stale_bound_s,
                   "recovered_p99_ms": recovered_p99_ms},
        "backend": {"database": backend.dbname, "key_prefix": backend.prefix,
                    "keyspace": backend.keyspace, "queue": backend.queue},
        "healthy": report.summary(healthy, first),
        "whole_run": report.summary(history.ops, duration_s),
        "generator_lag_s": history.meta.get("lag_s"),
        "quiesce_s": round(quiet_s, 1),
        "nemesis_errors": chaos.errors,
        "faults": report.fault_table(history, recovered_p99_ms=recovered_p99_ms),
        "timeline": report.timeline(history),
        "checkers": verdicts,
    }
    return result, history


def check(backend: Any, history: History, stale_bound_s: float) -> list[dict[str, Any]]:
    """The checkers' verdicts on ``history``, against the backend's database, cache and keyspace."""
    session = backend.lab.cassandra.connect(backend.keyspace)
    try:
        target = checkers.Target(dsn=backend.dsn, cache_servers=backend.lab.cache_servers,
                                 key_prefix=backend.prefix, session=session,
                                 keyspace=backend.keyspace)
        results = checkers.check_all(history, target, stale_bound_s=stale_bound_s)
    finally:
        session.cluster.shutdown()
    return [{"name": r.name, "ok": r.ok, "violations": r.violations, "stats": r.stats}
            for r in results]


def table(result: dict[str, Any]) -> str:
    """The per-fault rows as text, below the healthy figures."""
    h = result["healthy"]
    lines = [f"healthy: {h['throughput_per_s']}/s, p50 {h['p50_ms']} ms, p99 {h['p99_ms']} ms, "
             f"{h['errors']} errors",
             f"{'fault':<18} {'p99 ms':>9} {'errors':>7} {'recover s':>10}"]
    for row in result["faults"]:
        lines.append(f"{row['fault']:<18} {row['p99_ms']:>9} {row['errors']:>7} "
                     f"{row['recover_s']:>10}")
    return "\n".join(lines + verdict_lines(result))


def verdict_lines(result: dict[str, Any]) -> list[str]:
    """One line per checker: its name, ok or VIOLATED, and how many violations."""
    return [f"checker {v['name']}: {'ok' if v['ok'] else 'VIOLATED'} "
            f"({len(v['violations'])} violation(s))" for v in result["checkers"]]


def write(result: dict[str, Any], history: History, out: Path) -> list[Path]:
    """``out`` (JSON), ``out``.png and ``out``.history.jsonl; the paths written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    png = report.plot(history, out.with_suffix(".png"))
    import matplotlib.pyplot as plt
    plt.close(png)
    return [out, out.with_suffix(".png"), history.save(out.with_suffix(".history.jsonl"))]


# ------------------------------------------------------------------------------------ CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``labkit experiment chaos``."""
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    p.add_argument("--rate", type=float, default=10.0, help="requests per second (open loop)")
    p.add_argument("--faults", default="all",
                   help=f"comma-separated, from {', '.join(nemesis.FAULTS)}; or all, or none")
    p.add_argument("--hold-s", type=float, default=5.0, help="how long each fault lasts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path,
                   help="results as JSON; the plot (.png) and history (.history.jsonl) beside "
                        "(default: beside the lab's saved results, <lab_dir>/results/chaos.*)")
    p.set_defaults(cassandra="ring")  # the lab it needs: the feeds live on the ring


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with ``args`` (checked before any server starts), or None."""
    try:
        faults = nemesis.parse_faults(args.faults)
    except ValueError as e:
        return f"--faults: {e}"
    if not 5 <= args.duration <= 3600:
        return f"--duration {args.duration:g}: choose 5 to 3600 seconds"
    if not 0 < args.rate <= 2000:
        return f"--rate {args.rate:g}: choose above 0 and up to 2000 requests per second"
    if not 0 < args.hold_s <= 120:
        return f"--hold-s {args.hold_s:g}: choose above 0 and up to 120 seconds"
    try:
        nemesis.schedule(faults, args.duration, hold_s=args.hold_s)
    except ValueError as e:
        return f"--duration/--faults: {e}"
    if args.out is not None and args.out.suffix != ".json":
        return f"--out {args.out}: give a .json path (the .png and .history.jsonl go beside)"
    return None


QUICK_ARGS = ("--duration", "40", "--rate", "6", "--faults", "gunicorn-kill,memcached-restart",
              "--hold-s", "3")


def headline(result: dict[str, Any]) -> list[str]:
    """The report's lines: healthy figures, each fault's cost, the checkers' verdicts."""
    h = result["healthy"]
    lines = [f"healthy at {result['params']['rate_per_s']:g}/s: p50 {h['p50_ms']} ms, "
             f"p99 {h['p99_ms']} ms, {h['errors']} errors"]
    lines += [f"{row['fault']}: p99 {row['p99_ms']} ms, {row['errors']} errors, recovered in "
              f"{row['recover_s']} s" for row in result["faults"]]
    return lines + verdict_lines(result)


def plot_result(result: dict[str, Any], ax: Any = None) -> Any:
    """p99 per second over the run, fault windows shaded (from the saved timeline)."""
    import matplotlib.pyplot as plt
    if ax is None:
        ax = plt.subplots(figsize=(8, 3.5))[1]
    rows = result["timeline"]
    ax.plot([r["t_s"] for r in rows], [r["p99_ms"] for r in rows], label="p99 ms")
    for row in result["faults"]:
        ax.axvspan(row["start_s"], row["end_s"], alpha=0.2, color="tab:red")
    ax.set_xlabel("seconds into the run (faults shaded)")
    ax.set_ylabel("p99 latency (ms)")
    ax.legend()
    return ax


def run_cli(args: argparse.Namespace, lab: Any) -> int:
    started_s = time.time()
    result, history = run(lab, duration_s=args.duration, rate_per_s=args.rate,
                          faults=nemesis.parse_faults(args.faults), hold_s=args.hold_s,
                          seed=args.seed)
    print(table(result))
    # Never into the working directory unasked (`labkit report` runs this wherever it is run).
    paths = write(result, history, args.out or result_path(lab.config.lab_dir, "chaos"))
    print("written: " + ", ".join(str(p) for p in paths))
    # The lab's saved results (the report reads them): with no --out, over the plain JSON above.
    save_results(argparse.Namespace(**{**vars(args), "out": None}), lab, "chaos", result,
                 started_s=started_s)
    return 0
