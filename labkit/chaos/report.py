"""What a run under faults looked like: throughput, latency and errors over time, per fault.

Introduced in notebooks/12_backend_under_faults.ipynb.

``timeline`` bins the operations by when they were due (an open loop: a request that waited
belongs to the second it should have gone out in). An error is an operation without a
definite answer (``info``: no answer, a timeout, a 5xx); a ``fail`` (4xx) is a refusal the
client caused and is no error of the backend. ``fault_table`` gives, per fault window, the p99
and errors inside it and the time to recover: from the fault's end to the end of the last
second, before the next fault, whose p99 was above ``recovered_p99_ms`` or that had errors.

>>> rows = timeline(history)                                  # doctest: +SKIP
>>> fault_table(history, recovered_p99_ms=200)[0]["recover_s"] # doctest: +SKIP
1.0
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from labkit.backend.cache import percentile
from labkit.chaos.history import History, Op


def _p(values: list[float], q: float) -> float:
    return round(percentile(values, q), 1) if values else float("nan")


def summary(ops: list[Op], span_s: float | None = None) -> dict[str, Any]:
    """Counts, errors, throughput (answered per second) and latency percentiles of ``ops``."""
    done = [o.latency_ms for o in ops if o.done_s is not None]
    errors = sum(o.outcome == "info" for o in ops)
    if span_s is None:
        span_s = (max(o.due_s for o in ops) - min(o.due_s for o in ops)) if ops else 0.0
    return {"ops": len(ops), "errors": errors,
            "error_rate": round(errors / len(ops), 4) if ops else 0.0,
            "throughput_per_s": round(len(done) / span_s, 1) if span_s else float("nan"),
            "p50_ms": _p(done, 50), "p99_ms": _p(done, 99), "max_ms": _p(done, 100)}


def timeline(history: History, bin_s: float = 1.0) -> list[dict[str, Any]]:
    """One row per ``bin_s`` of due time: t_s, ops, ok, errors, p50/p90/p99 (ms)."""
    bins: dict[int, list[Op]] = {}
    for op in history.ops:
        bins.setdefault(int(op.due_s // bin_s), []).append(op)
    rows = []
    for b in range(max(bins, default=-1) + 1):
        ops = bins.get(b, [])
        done = [o.latency_ms for o in ops if o.done_s is not None]
        rows.append({"t_s": b * bin_s, "ops": len(ops),
                     "ok_per_s": sum(o.outcome == "ok" for o in ops) / bin_s,
                     "errors": sum(o.outcome == "info" for o in ops),
                     "p50_ms": _p(done, 50), "p90_ms": _p(done, 90), "p99_ms": _p(done, 99)})
    return rows


def fault_table(history: History, *, recovered_p99_ms: float = 200.0,
                bin_s: float = 1.0) -> list[dict[str, Any]]:
    """Per fault: its window, p99 and errors inside it, and the time to recover after it."""
    rows = timeline(history, bin_s)
    faults = sorted(history.faults, key=lambda f: f.start_s)
    end_of_run = max((o.due_s for o in history.ops), default=0.0)
    out = []
    for i, fault in enumerate(faults):
        inside = history.during(fault)
        until = faults[i + 1].start_s if i + 1 < len(faults) else end_of_run
        bad = [r["t_s"] + bin_s for r in rows
               if fault.start_s <= r["t_s"] and r["t_s"] + bin_s <= until
               and (r["errors"] or r["p99_ms"] > recovered_p99_ms)]
        recover_s = max(0.0, max(bad, default=fault.end_s) - fault.end_s)
        window = summary(inside, fault.end_s - fault.start_s)
        out.append({"fault": fault.name, "target": fault.target, "start_s": fault.start_s,
                    "end_s": fault.end_s, "p99_ms": window["p99_ms"],
                    "errors": window["errors"], "error_rate": window["error_rate"],
                    "recover_s": round(recover_s, 1),
                    "recovered": not bad or max(bad) < until})
    return out


def plot(history: History, path: str | Path | None = None, *, bin_s: float = 1.0,
         title: str = "the backend under faults") -> Any:
    """Throughput, latency percentiles and errors over time, fault windows shaded; a Figure.

    Saved as PNG at ``path`` when given.
    """
    import matplotlib
    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    rows = timeline(history, bin_s)
    t = [r["t_s"] for r in rows]
    fig, (ax_t, ax_l, ax_e) = plt.subplots(3, 1, sharex=True, figsize=(10, 8))
    ax_t.plot(t, [r["ok_per_s"] for r in rows], label="ok answers / s")
    ax_t.set_ylabel("throughput (1/s)")
    for q, style in (("p50_ms", ":"), ("p90_ms", "--"), ("p99_ms", "-")):
        ax_l.plot(t, [r[q] if not math.isnan(r[q]) else None for r in rows], style,
                  label=q.replace("_ms", ""))
    ax_l.set_yscale("log")
    ax_l.set_ylabel("latency from due (ms)")
    ax_e.bar(t, [r["errors"] / max(1, r["ops"]) for r in rows], width=bin_s, align="edge",
             color="tab:red")
    ax_e.set_ylabel("error rate")
    ax_e.set_xlabel("seconds since the load started")
    colors = matplotlib.colormaps["tab10"]
    for i, fault in enumerate(sorted(history.faults, key=lambda f: f.start_s)):
        for ax in (ax_t, ax_l, ax_e):
            ax.axvspan(fault.start_s, fault.end_s, color=colors(i % 10), alpha=0.2,
                       label=fault.name if ax is ax_t else None)
    ax_t.legend(loc="upper left", fontsize=7, ncol=3)
    ax_l.legend(loc="upper left", fontsize=7)
    ax_t.set_title(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
