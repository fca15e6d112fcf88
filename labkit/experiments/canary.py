"""The canary experiment: how each judge does on good and bad releases, over repeated deploys.

Introduced in notebooks/13_continuous_deployment.ipynb (benchmarks/canary.py runs it long).

One *run* deploys a release as the canary (beside a fresh baseline, ``labkit.deploy``), gives
it ``percent`` % of a fixed-rate load, and asks every judge for a verdict every
``check_every_s`` on the data since the shift, for at most ``max_s``. A judge *rolls back*
the canary when it says ``fail`` (the time is its detection time) or when its verdict at the
end is anything but ``pass`` (a canary that was not shown good is not promoted). The judges
see the same run, so their results are paired. Afterwards the canary is always rolled back.

Release kinds (a patch from ``labkit/deploy/patches`` on the working tree):

``good``      compact_like_count: a new feature behind a gate (a rollback is a false one)
``latency``   n_plus_one: one query per liker (an N+1)
``errors``    error_spike: a 500 on posts with exactly one comment
``leak``      memory_leak: every request kept in a list nothing trims

    labkit experiment canary --kinds good,latency,errors,leak --runs 3 --out canary.json

>>> rows = run_experiment(lab, kinds=("good", "latency"), runs=1)        # doctest: +SKIP
>>> print(table(summarize(rows)))                                        # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from labkit.deploy.deployment import Deployment
from labkit.deploy.judges import KayentaJudge, ThresholdJudge
from labkit.deploy.release import REPO, Release
from labkit.deploy.rollout import DecisionLog
from labkit.deploy.workload import Workload
from labkit.experiments.results import save as save_results
from labkit.web.config import WebConfig
from labkit.web.loadgen import OpenLoad

KINDS = {"good": "compact_like_count", "latency": "n_plus_one", "errors": "error_spike",
         "leak": "memory_leak"}
DEFAULT_DBNAME = "labkit_canary"


def default_judges() -> list[Any]:
    return [ThresholdJudge(), KayentaJudge()]


def analyze(dep: Deployment, release: Release, judges: Sequence[Any], *, kind: str = "?",
            percent: int = 10, max_s: float = 60.0, check_every_s: float = 2.0,
            point_s: float = 2.0, log: Callable[..., Any] | None = None) -> list[dict[str, Any]]:
    """One run: deploy ``release``, shift ``percent`` %, verdicts until all fail or ``max_s``.

    Returns one row per judge: ``failed_at_s`` (its first fail, seconds after the shift),
    ``final`` (its last verdict), ``rolled_back`` and ``decision_s`` (when it rolled back:
    at its first fail, or at ``max_s`` when it ended without a pass); and what the canary did
    over the run against the baseline (``p50_ratio``, ``p99_ratio``, ``error_ratio``).
    """
    log = log or (lambda event, **fields: None)
    dep.deploy(release)
    try:
        dep.set_canary_percent(percent)
        t0 = time.monotonic()
        failed: dict[str, float] = {}
        last: dict[str, Any] = {}
        while True:
            time.sleep(check_every_s)
            elapsed = time.monotonic() - t0
            windows = (dep.collector.window(dep.metrics_name("baseline"), t0, step_s=point_s),
                       dep.collector.window(dep.metrics_name("canary"), t0, step_s=point_s))
            for j in judges:
                if j.name in failed:
                    continue
                verdict = last[j.name] = j.judge(*windows)
                if verdict.decision == "fail":
                    failed[j.name] = elapsed
            log("analysis", release=release.name, kind=kind, percent=percent,
                elapsed_s=round(elapsed, 2), verdicts={n: v.to_dict() for n, v in last.items()})
            if len(failed) == len(judges) or elapsed >= max_s:
                break
        effect = _effect(*windows)
    finally:
        dep.rollback(f"analysis run of {release.name} ended")
    rows = []
    for j in judges:
        v = last[j.name]
        rolled_back = j.name in failed or v.decision != "pass"
        rows.append({"kind": kind, "release": release.name, "judge": j.name,
                     "percent": percent, "failed_at_s": failed.get(j.name),
                     "final": v.decision, "score": v.score, "reason": v.reason,
                     "rolled_back": rolled_back,
                     "decision_s": failed.get(j.name, max_s if rolled_back else None),
                     **effect})
    return rows


def _effect(baseline: Any, canary: Any) -> dict[str, float | None]:
    """The canary against the baseline over a whole run (all its requests together)."""
    b, c = baseline.total, canary.total
    if b is None or c is None:
        return {"p50_ratio": None, "p99_ratio": None, "error_ratio": None}
    return {"p50_ratio": c.p50_ms / b.p50_ms, "p99_ratio": c.p99_ms / b.p99_ms,
            "error_ratio": c.error_ratio}


def run_experiment(lab: Any, *, kinds: Sequence[str] = tuple(KINDS),
                   runs: int | dict[str, int] = 1,
                   percent: int = 10, max_s: float = 60.0, rate_per_s: float = 100.0,
                   check_every_s: float = 2.0, point_s: float = 2.0,
                   judges: Sequence[Any] | None = None, dbname: str = DEFAULT_DBNAME,
                   workdir_name: str = "canary-experiment",
                   progress: Callable[[dict], None] | None = None,
                   log_path: Path | None = None) -> list[dict[str, Any]]:
    """``runs`` runs of each release kind (or ``{kind: runs}``), interleaved, under one load."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"kinds {unknown}: choose from {', '.join(KINDS)}")
    counts = runs if isinstance(runs, dict) else {k: runs for k in kinds}
    schedule = [(r, k) for r in range(max(counts.values())) for k in kinds if r < counts[k]]
    judges = list(judges or default_judges())
    work = Workload.create(lab, dbname)
    log = DecisionLog(log_path)
    dep = Deployment.for_lab(lab, workdir_name, WebConfig.from_lab(lab, dbname),
                             warmup=work.requests(), log=log)
    rows: list[dict[str, Any]] = []
    try:
        releases = {k: Release.from_worktree(REPO, dep.releases_dir, patch=KINDS[k])
                    for k in kinds}
        dep.start(Release.from_worktree(REPO, dep.releases_dir))
        with OpenLoad(dep.router.host, dep.router.port, work.requests(),
                      rate_per_s=rate_per_s) as load:
            for run, kind in schedule:
                for row in analyze(dep, releases[kind], judges, kind=kind, percent=percent,
                                   max_s=max_s, check_every_s=check_every_s, point_s=point_s,
                                   log=log):
                    row["run"] = run
                    rows.append(row)
                    if progress:
                        progress(row)
        lost = load.unanswered()
        why = collections.Counter(f"{c.status} {c.error or 'no X-Release'}"[:60] for c in lost)
        for row in rows:
            row["unanswered_in_experiment"] = len(lost)
            row["unanswered_why"] = dict(why)
    finally:
        dep.stop()
    return rows


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per judge and release kind: runs, rollbacks, and the median time to the decision.

    For ``good`` releases a rollback is a false rollback; for the others a run without one
    is a missed regression.
    """
    out = []
    for judge in sorted({r["judge"] for r in rows}):
        for kind in [k for k in KINDS if any(r["kind"] == k for r in rows)]:
            mine = [r for r in rows if r["judge"] == judge and r["kind"] == kind]
            if not mine:
                continue
            back = [r for r in mine if r["rolled_back"]]
            times = [r["decision_s"] for r in back]
            out.append({"judge": judge, "kind": kind, "runs": len(mine),
                        "rolled_back": len(back), "rollback_rate": len(back) / len(mine),
                        "false_rollback_rate": len(back) / len(mine) if kind == "good" else None,
                        "missed_rate": None if kind == "good" else 1 - len(back) / len(mine),
                        "median_decision_s": statistics.median(times) if times else None})
    return out


def table(summary: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'judge':<10} {'release':<8} {'runs':>4} {'rolled back':>11} "
             f"{'false rollbacks':>15} {'missed':>7} {'median time to decide':>22}"]
    for s in summary:
        fr = "-" if s["false_rollback_rate"] is None else f"{s['false_rollback_rate']:.0%}"
        missed = "-" if s["missed_rate"] is None else f"{s['missed_rate']:.0%}"
        t = "-" if s["median_decision_s"] is None else f"{s['median_decision_s']:.1f} s"
        lines.append(f"{s['judge']:<10} {s['kind']:<8} {s['runs']:>4} {s['rolled_back']:>11} "
                     f"{fr:>15} {missed:>7} {t:>22}")
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], max_s: float = 60.0, ax: Any = None) -> Any:
    """Time to rollback per run, by release kind and judge (a missed regression at the top)."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.8))
    judges = sorted({r["judge"] for r in rows})
    kinds = [k for k in KINDS if any(r["kind"] == k for r in rows)]
    width = 0.8 / len(judges)
    for j, judge in enumerate(judges):
        xs, ys, marks = [], [], []
        for k, kind in enumerate(kinds):
            for r in (r for r in rows if r["judge"] == judge and r["kind"] == kind):
                xs.append(k + (j - (len(judges) - 1) / 2) * width)
                ys.append(r["decision_s"] if r["rolled_back"] else max_s * 1.08)
                marks.append(r["rolled_back"])
        ax.scatter([x for x, m in zip(xs, marks) if m], [y for y, m in zip(ys, marks) if m],
                   label=f"{judge}: rolled back", color=f"C{j}", marker="o")
        ax.scatter([x for x, m in zip(xs, marks) if not m],
                   [y for y, m in zip(ys, marks) if not m],
                   label=f"{judge}: kept (not rolled back)", color=f"C{j}", marker="x")
    ax.axhline(max_s, color="grey", lw=0.8, ls=":")
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set_ylabel("seconds at the canary's share until rollback")
    ax.set_title("Each judge on the same runs (x above the line: kept)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
    return ax


# ------------------------------------------------------------------------------- report
#: What `labkit report --quick` runs: one good and one erroring release, analysed 30 s each
#: (at 20 s the Kayenta judge had too few samples to roll the error spike back).
QUICK_ARGS = ("--kinds", "good,errors", "--runs", "1", "--max-s", "30")


def headline(rows: Sequence[dict[str, Any]]) -> list[str]:
    """A one-line summary per judge, then per judge and release kind: rollbacks, time to decide."""
    summary = summarize(rows)
    out = ["; ".join(f"{judge}: " + ", ".join(
        f"{s['kind']} rolled back {s['rolled_back']}/{s['runs']}" for s in summary
        if s["judge"] == judge) for judge in dict.fromkeys(s["judge"] for s in summary))]
    for s in summary:
        t = "" if s["median_decision_s"] is None else f", median {s['median_decision_s']:.1f} s"
        what = "false rollbacks" if s["kind"] == "good" else "rolled back"
        out.append(f"{s['judge']} on {s['kind']}: {what} {s['rolled_back']}/{s['runs']}{t}")
    return out


def plot_result(rows: Sequence[dict[str, Any]], ax: Any = None) -> Any:
    """``plot`` of saved rows (which do not keep ``--max-s``: the longest decision stands in)."""
    decided = [r["decision_s"] for r in rows if r["decision_s"] is not None]
    return plot(rows, max_s=max(decided, default=60.0), ax=ax)


# ------------------------------------------------------------------------------------ CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``labkit experiment canary``."""
    p.add_argument("--kinds", default=",".join(KINDS),
                   help=f"release kinds, comma-separated, from {','.join(KINDS)}")
    p.add_argument("--runs", type=int, default=1, help="runs of each kind")
    p.add_argument("--percent", type=int, default=10, help="the canary's share of requests")
    p.add_argument("--max-s", type=float, default=60.0, help="longest analysis of one run")
    p.add_argument("--rate", type=float, default=100.0, help="requests per second, fixed")
    p.add_argument("--log", type=Path, help="write every decision here (JSON lines)")
    p.add_argument("--out", type=Path, help="write the result rows here as JSON")


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with ``args`` (checked before any server starts), or None."""
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds or not all(k in KINDS for k in kinds) or not 1 <= args.runs <= 100:
        return f"--kinds: choose from {', '.join(KINDS)}; --runs: 1 to 100"
    if not 1 <= args.percent <= 50:
        return "--percent: 1 to 50 (the baseline gets as much as the canary)"
    return None


def run_cli(args: argparse.Namespace, lab: Any) -> int:
    """Run the experiment described by ``args`` on ``lab``; print the table."""
    started_s = time.time()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]

    def progress(row: dict) -> None:
        t = "-" if row["decision_s"] is None else f"{row['decision_s']:.0f} s"
        print(f"  run {row['run']} {row['kind']:<8} {row['judge']:<10} "
              f"{'rolled back' if row['rolled_back'] else 'kept':<11} {t:>5}  "
              f"{row['reason'][:70]}", flush=True)

    rows = run_experiment(lab, kinds=kinds, runs=args.runs, percent=args.percent,
                          max_s=args.max_s, rate_per_s=args.rate, progress=progress,
                          log_path=args.log)
    print(table(summarize(rows)))
    save_results(args, lab, "canary", rows, started_s=started_s)
    return 0
