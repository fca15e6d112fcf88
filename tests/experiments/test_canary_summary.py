"""The canary experiment's summary: false rollbacks, missed regressions, times (no servers)."""

import pytest

from labkit.experiments.canary import summarize, table


def row(judge, kind, rolled_back, decision_s=None):
    return {"judge": judge, "kind": kind, "rolled_back": rolled_back, "decision_s": decision_s}


def test_rates_and_times_per_judge_and_kind():
    rows = [row("kayenta", "good", False), row("kayenta", "good", True, 60.0),
            row("kayenta", "good", False), row("kayenta", "good", False),
            row("kayenta", "latency", True, 12.0), row("kayenta", "latency", True, 20.0),
            row("kayenta", "latency", False),
            row("instagram", "errors", True, 4.0), row("instagram", "leak", False)]
    got = {(s["judge"], s["kind"]): s for s in summarize(rows)}
    assert got["kayenta", "good"]["false_rollback_rate"] == 0.25
    assert got["kayenta", "good"]["missed_rate"] is None
    assert got["kayenta", "latency"]["missed_rate"] == pytest.approx(1 / 3)
    assert got["kayenta", "latency"]["median_decision_s"] == 16.0
    assert got["instagram", "leak"]["missed_rate"] == 1.0
    assert got["instagram", "leak"]["median_decision_s"] is None
    assert "25%" in table(summarize(rows))
