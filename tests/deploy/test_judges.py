"""The judges' statistics on known samples, and each judge failing a bad canary, passing a good one.

No servers here: the windows are built from intervals, as the collector builds them.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics

import numpy as np
import pytest
from scipy import stats

from labkit.deploy.collector import Interval, Window, histogram_quantile
from labkit.deploy.judges import (KayentaJudge, MetricSpec, ThresholdJudge, hodges_lehmann,
                                  mann_whitney, mean_ratio)


# ------------------------------------------------------------------------------ statistics

def test_hodges_lehmann_is_the_median_of_all_pairwise_differences():
    rng = random.Random(3)
    for m, n in ((1, 1), (3, 4), (7, 5), (20, 13)):
        x = [rng.expovariate(1) for _ in range(m)]
        y = [rng.expovariate(2) for _ in range(n)]
        brute = statistics.median(a - b for a, b in itertools.product(x, y))
        assert hodges_lehmann(x, y)[0] == pytest.approx(brute)


def test_hand_computed_interval():
    # differences 1, 2, 3: estimate 2; with 3 pairs the 95% interval is the whole range.
    assert hodges_lehmann([1, 2, 3], [0], 0.95) == (2.0, 1.0, 3.0)
    # m = n = 10: k = floor(50 - 1.96 * sqrt(100 * 21 / 12)) = 24, the 24th smallest and
    # largest of the 100 differences (i - j for i, j in 0..9, shifted by 5).
    diffs = sorted(i + 5 - j for i in range(10) for j in range(10))
    est, low, high = hodges_lehmann([i + 5 for i in range(10)], list(range(10)), 0.95)
    assert (est, low, high) == (5.0, diffs[23], diffs[100 - 24])


def test_an_exact_shift_is_estimated_exactly_and_covered():
    x = [0.3, 1.7, 2.2, 4.0, 5.5, 9.1]
    est, low, high = hodges_lehmann([v + 3 for v in x], x, 0.98)
    assert est == pytest.approx(3.0)
    assert low < 3.0 < high


def test_the_interval_covers_the_true_shift_as_often_as_its_confidence():
    rng = np.random.default_rng(7)
    covered = sum(lo <= 0.5 <= hi for lo, hi in (
        hodges_lehmann(rng.exponential(1, 15) + 0.5, rng.exponential(1, 20), 0.95)[1:]
        for _ in range(400)))
    # Lehmann's interval without tie correction is a little conservative.
    assert 0.92 <= covered / 400 <= 0.995


def test_u_and_p_are_scipys_and_u_counts_the_pairs():
    x, y = [1.0, 4.0, 6.0, 6.0, 9.0], [2.0, 3.0, 6.0, 7.0]
    r = mann_whitney(x, y)
    pairs = sum((a > b) + 0.5 * (a == b) for a, b in itertools.product(x, y))
    assert r.u == pairs
    assert r.p_value == pytest.approx(stats.mannwhitneyu(x, y).pvalue)


def test_mean_ratio_is_nan_when_a_mean_is_zero():
    assert mean_ratio([2, 4], [1, 2]) == 2
    assert math.isnan(mean_ratio([0, 0], [1, 2])) and math.isnan(mean_ratio([1], [0]))


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = [(0.001, 10), (0.002, 20), (float("inf"), 20)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.001)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.0015)
    assert histogram_quantile(1.0, [(0.001, 1), (float("inf"), 2)]) == 0.001  # +Inf: last bound
    assert math.isnan(histogram_quantile(0.5, [(0.001, 0), (float("inf"), 0)]))


# --------------------------------------------------------------------- windows to judge

def interval(t: float, *, n: int = 100, errors: int = 0, latency_ms: float = 3.0,
             cpu_ms: float = 1.5, leak_kb: float = 0.0) -> Interval:
    """One second of a pool: ``n`` answers all at ``latency_ms``, as a histogram."""
    bounds = [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, float("inf")]
    buckets = tuple((b, float(n) if latency_ms / 1000 <= b else 0.0) for b in bounds)
    return Interval(t, t + 1, {"2xx": n - errors, "5xx": errors}, buckets, n * cpu_ms / 1000,
                    n * cpu_ms / 1000, n * leak_kb * 1024, 100e6, 2)


def window(name: str, points: int = 12, seed: int = 0, **bad: float) -> Window:
    """``points`` intervals with noise; ``bad`` overrides a quantity (errors, latency_ms...)."""
    rng = random.Random(seed)
    out = []
    for t in range(points):
        q = {"latency_ms": rng.uniform(2, 6), "cpu_ms": rng.uniform(1.2, 1.8),
             "leak_kb": rng.uniform(-0.5, 1.0), "errors": 0}
        for k, v in bad.items():
            q[k] = v * rng.uniform(0.8, 1.2) if k != "errors" else int(v)
        out.append(interval(float(t), **q))
    return Window(name, out)


def test_threshold_judge_uses_instagrams_numbers():
    j = ThresholdJudge()
    assert j.judge_counts({"2xx": 996, "5xx": 4}).decision == "pass"       # 0.4% 5xx
    assert j.judge_counts({"2xx": 995, "5xx": 5}).decision == "fail"       # 0.5%: not under
    assert j.judge_counts({"2xx": 890, "4xx": 110}).decision == "fail"     # 89% 2xx
    assert j.judge_counts({"2xx": 900, "4xx": 100}).decision == "pass"     # 90% 2xx
    assert j.judge_counts({"2xx": 10, "5xx": 5}).decision == "nodata"      # too few answers


def test_threshold_judge_fails_a_bad_canary_and_passes_a_good_one():
    j = ThresholdJudge()
    assert j.judge(window("b"), window("c", errors=5)).decision == "fail"
    assert j.judge(window("b"), window("c", seed=1)).decision == "pass"
    # ...and it cannot see a latency regression or a leak: it only reads status codes.
    assert j.judge(window("b"), window("c", latency_ms=12)).decision == "pass"
    assert j.judge(window("b"), window("c", leak_kb=20)).decision == "pass"


@pytest.mark.parametrize("bad, metric, decision", [
    ({"errors": 5}, "error_ratio", "fail"),              # critical metric: score 0
    ({"latency_ms": 12}, "p50_ms", "fail"),              # p50 and p99: latency group lost
    ({"leak_kb": 20}, "rss_kb_per_request", "fail"),     # critical metric
    ({"cpu_ms": 4}, "cpu_ms_per_request", "marginal"),   # one of two saturation metrics: 90
])
def test_kayenta_does_not_pass_a_bad_canary(bad, metric, decision):
    v = KayentaJudge().judge(window("b"), window("c", seed=1, **bad))
    assert v.decision == decision, v.reason
    failed = [m["metric"] for m in v.evidence["metrics"] if m["classification"] != "Pass"]
    assert metric in failed


def test_kayenta_passes_a_good_canary():
    for seed in range(1, 21):
        v = KayentaJudge().judge(window("b"), window("c", seed=seed))
        assert v.decision == "pass", (seed, v.reason)


def test_kayenta_classifier_rules():
    j = KayentaJudge(min_points=6)
    up = MetricSpec("m", "increase")
    base = [10, 11, 9, 10, 12, 10, 11, 9]
    high = [20, 22, 19, 21, 20, 23, 20, 22]
    assert j.classify(up, base, high).classification == "High"
    assert j.classify(up, base, list(base)).classification == "Pass"          # identical
    assert j.classify(MetricSpec("m", "decrease"), base, high).classification == "Pass"
    assert j.classify(MetricSpec("m", "either"), high, base).classification == "Low"
    assert j.classify(up, base[:5], high).classification == "Nodata"          # < min_points
    # Significant but smaller than the effect size allows (mean ratio 1.1 < 1.2): passes.
    assert j.classify(MetricSpec("m", "increase", allowed_increase=1.2), base,
                      [v * 1.1 for v in base]).classification == "Pass"
    assert j.classify(MetricSpec("m", "increase", min_shift=15), base,
                      high).classification == "Pass"
    # NaN intervals (no request) are removed, or replaced by 0 for counts.
    with_nan = high + [float("nan")] * 3
    assert j.classify(up, base, with_nan).n_canary == 8
    assert j.classify(MetricSpec("m", nan_strategy="replace"), base, with_nan).n_canary == 11


def test_kayenta_scoring_weights_critical_and_nodata():
    specs = [MetricSpec("error_ratio", group="errors", critical=True),
             MetricSpec("p50_ms", group="latency"), MetricSpec("p99_ms", group="latency"),
             MetricSpec("cpu_ms_per_request", group="saturation")]
    j = KayentaJudge(specs, {"errors": 50, "latency": 30, "saturation": 20},
                     pass_score=95, marginal_score=75)
    base = window("b")
    one_latency = j.judge(base, window("c", seed=1, cpu_ms=4))       # saturation fails: 80
    assert (one_latency.decision, one_latency.score) == ("marginal", 80.0)
    latency = j.judge(base, window("c", seed=1, latency_ms=12))       # both latency: 70
    assert (latency.decision, latency.score) == ("fail", 70.0)
    critical = j.judge(base, window("c", seed=1, errors=5))
    assert (critical.decision, critical.score) == ("fail", 0.0)
    nodata = j.judge(Window("b", base.intervals[:3]), Window("c", base.intervals[:3]))
    assert nodata.decision == "nodata"


def test_bad_configuration_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="direction"):
        MetricSpec("p50_ms", "up")
    with pytest.raises(ValueError, match="more than 100"):
        KayentaJudge(group_weights={"errors": 80, "latency": 40})
    with pytest.raises(ValueError, match="confidence"):
        KayentaJudge(confidence=1.5)
    with pytest.raises(KeyError, match="choose from"):
        window("b").series("latency")
