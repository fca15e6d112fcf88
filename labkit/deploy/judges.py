"""Two canary judges: Instagram's fixed thresholds, and a Kayenta-style comparison.

``ThresholdJudge`` (Instagram, "Continuous Deployment at Instagram"): the canary's own answers
over the window must be under 0.5% 5xx and at least 90% 2xx. It looks at nothing else, and
needs no baseline.

``KayentaJudge`` follows Netflix's NetflixACAJudge (Spinnaker's Kayenta), read from its source:
for each metric, the canary's per-interval series is compared with the baseline's by a
Mann-Whitney U test with a confidence interval on the shift (the Hodges-Lehmann estimate:
the median of all canary-minus-baseline differences). A metric is *High* when the interval's
lower end lies above ``tolerance * |estimate|`` (Kayenta: tolerance 0.25, confidence 0.98) and
the effect is large enough (mean ratio canary/baseline >= ``allowed_increase``; ignored when it
cannot be computed, as in Kayenta); *Low* mirrors it; the metric's ``direction`` says which of
the two fail it. Each group scores the share of its metrics that pass; the summary score is
the weighted sum of group scores; a failed *critical* metric makes it 0. The score is
classified by thresholds: >= ``pass_score`` pass, >= ``marginal_score`` marginal, else fail.

Where this judge departs from Kayenta, and why:
- ``min_points``: a metric with fewer values than that (after removing NaNs) on either side is
  *Nodata* (Kayenta only checks for empty series); a two-point Mann-Whitney means nothing.
  As in Kayenta, Nodata metrics do not count and half or more of them makes the whole
  verdict ``nodata`` (the controller keeps collecting, and fails a step that ends so).
- ``min_shift``: an absolute floor on the estimate (in the metric's unit). Kayenta's mean
  ratio is meaningless for a metric centred on zero (memory growth per request), where a
  fresh canary's few warm-up kilobytes would otherwise be significant.
- the interval comes from the order statistics of the pairwise differences with the normal
  approximation to U's distribution (Lehmann's method; no tie correction, so it is slightly
  conservative with ties). Kayenta inverts the same test numerically; the two agree up to
  the continuity correction. SciPy supplies U, its p-value and the normal quantile.

Introduced in notebooks/13_continuous_deployment.ipynb.

>>> judge = KayentaJudge()                                       # doctest: +SKIP
>>> judge.judge(baseline_window, canary_window).decision          # doctest: +SKIP
'fail'
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import stats

from labkit.deploy.collector import Window

DIRECTIONS = ("increase", "decrease", "either")
DECISIONS = ("pass", "marginal", "fail", "nodata")


# ---------------------------------------------------------------------------- statistics

@dataclass(frozen=True)
class Shift:
    """Mann-Whitney U of canary vs baseline, and the Hodges-Lehmann shift with its interval."""

    u: float
    p_value: float
    estimate: float
    ci_low: float
    ci_high: float
    confidence: float
    n_canary: int
    n_baseline: int


def hodges_lehmann(canary: Sequence[float], baseline: Sequence[float],
                   confidence: float = 0.95) -> tuple[float, float, float]:
    """(estimate, low, high): the shift canary - baseline and its distribution-free interval.

    The estimate is the median of the m*n differences; the interval runs from the k-th
    smallest to the k-th largest difference, k = floor(mn/2 - z * sqrt(mn(m+n+1)/12)), z the
    normal quantile for ``confidence`` (at least the extremes).
    """
    x, y = np.asarray(canary, float), np.asarray(baseline, float)
    m, n = len(x), len(y)
    if not m or not n:
        raise ValueError("hodges_lehmann needs values on both sides")
    diffs = np.sort(np.subtract.outer(x, y).ravel())
    z = stats.norm.ppf(0.5 + confidence / 2)
    k = int(math.floor(m * n / 2 - z * math.sqrt(m * n * (m + n + 1) / 12)))
    k = min(max(k, 1), len(diffs))
    return float(np.median(diffs)), float(diffs[k - 1]), float(diffs[len(diffs) - k])


def mann_whitney(canary: Sequence[float], baseline: Sequence[float],
                 confidence: float = 0.98) -> Shift:
    """The two-sided Mann-Whitney U test (SciPy) and the Hodges-Lehmann interval."""
    res = stats.mannwhitneyu(canary, baseline, alternative="two-sided")
    est, low, high = hodges_lehmann(canary, baseline, confidence)
    return Shift(float(res.statistic), float(res.pvalue), est, low, high, confidence,
                 len(canary), len(baseline))


def mean_ratio(canary: Sequence[float], baseline: Sequence[float]) -> float:
    """Kayenta's effect size: mean(canary) / mean(baseline); NaN when either mean is 0."""
    c, b = float(np.mean(canary)), float(np.mean(baseline))
    return c / b if c and b else float("nan")


# --------------------------------------------------------------------------------- verdicts

@dataclass
class Verdict:
    """A judge's decision on a canary over one window, with the evidence it used."""

    judge: str
    decision: str          # pass, marginal, fail, nodata
    score: float | None
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class ThresholdJudge:
    """Instagram's canary check: under ``max_5xx_ratio`` 5xx and at least ``min_2xx_ratio`` 2xx.

    Judged on the canary's answers over the whole window; fewer than ``min_requests`` answers
    is ``nodata``.

    >>> ThresholdJudge().judge_counts({"2xx": 995, "5xx": 5}).decision
    'fail'
    """

    name = "instagram"

    def __init__(self, max_5xx_ratio: float = 0.005, min_2xx_ratio: float = 0.90,
                 min_requests: int = 20) -> None:
        if not 0 < max_5xx_ratio < 1 or not 0 < min_2xx_ratio <= 1:
            raise ValueError("give ratios between 0 and 1, e.g. max_5xx_ratio=0.005")
        self.max_5xx_ratio, self.min_2xx_ratio = max_5xx_ratio, min_2xx_ratio
        self.min_requests = min_requests

    def judge(self, baseline: Window, canary: Window) -> Verdict:
        return self.judge_counts(canary.counts(), baseline.counts())

    def judge_counts(self, canary: dict[str, float],
                     baseline: dict[str, float] | None = None) -> Verdict:
        n = sum(canary.values())
        evidence = {"canary": dict(canary), "baseline": dict(baseline or {}),
                    "max_5xx_ratio": self.max_5xx_ratio, "min_2xx_ratio": self.min_2xx_ratio}
        if n < self.min_requests:
            return Verdict(self.name, "nodata", None,
                           f"{n:.0f} canary answers, fewer than {self.min_requests}", evidence)
        r5, r2 = canary.get("5xx", 0) / n, canary.get("2xx", 0) / n
        evidence.update(ratio_5xx=r5, ratio_2xx=r2, answers=n)
        problems = []
        if r5 >= self.max_5xx_ratio:
            problems.append(f"5xx {r5:.2%} >= {self.max_5xx_ratio:.1%}")
        if r2 < self.min_2xx_ratio:
            problems.append(f"2xx {r2:.2%} < {self.min_2xx_ratio:.0%}")
        if problems:
            return Verdict(self.name, "fail", 0.0, "; ".join(problems), evidence)
        return Verdict(self.name, "pass", 100.0,
                       f"5xx {r5:.2%} < {self.max_5xx_ratio:.1%} and 2xx {r2:.2%} >= "
                       f"{self.min_2xx_ratio:.0%} over {n:.0f} answers", evidence)


@dataclass(frozen=True)
class MetricSpec:
    """How one metric is judged (Kayenta's per-metric ``analysisConfigurations``)."""

    metric: str
    direction: str = "increase"
    group: str = "default"
    allowed_increase: float = 1.0   # mean ratio the canary must reach to be High
    allowed_decrease: float = 1.0   # mean ratio it must fall to to be Low
    min_shift: float = 0.0          # |Hodges-Lehmann estimate| it must reach (metric's unit)
    critical: bool = False
    nan_strategy: str = "remove"    # or "replace" (NaN -> 0, for counts)

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction={self.direction!r}: choose one of {DIRECTIONS}")
        if self.nan_strategy not in ("remove", "replace"):
            raise ValueError(f"nan_strategy={self.nan_strategy!r}: choose remove or replace")


# The lab's canary config: errors (critical), latency, saturation. Latency and CPU may grow
# 20% before they count; a leak must reach 4 KB per request (a fresh canary warms up by less).
DEFAULT_METRICS = (
    MetricSpec("error_ratio", "increase", "errors", critical=True),
    MetricSpec("ok_ratio", "decrease", "errors"),
    MetricSpec("p50_ms", "increase", "latency", allowed_increase=1.2),
    MetricSpec("p99_ms", "increase", "latency", allowed_increase=1.2),
    MetricSpec("cpu_ms_per_request", "increase", "saturation", allowed_increase=1.2),
    MetricSpec("rss_kb_per_request", "increase", "saturation", min_shift=4.0, critical=True),
)
DEFAULT_GROUP_WEIGHTS = {"errors": 50.0, "latency": 30.0, "saturation": 20.0}


@dataclass
class MetricResult:
    """One metric's classification (Pass, High, Low, Nodata) and its statistics."""

    metric: str
    classification: str
    reason: str
    critical_failure: bool = False
    shift: Shift | None = None
    mean_ratio: float = float("nan")
    baseline_median: float = float("nan")
    canary_median: float = float("nan")
    n_baseline: int = 0
    n_canary: int = 0


class KayentaJudge:
    """Per-metric Mann-Whitney with a Hodges-Lehmann interval; weighted score; thresholds."""

    name = "kayenta"

    def __init__(self, metrics: Sequence[MetricSpec] = DEFAULT_METRICS,
                 group_weights: dict[str, float] | None = None, *, pass_score: float = 95.0,
                 marginal_score: float = 75.0, confidence: float = 0.98,
                 tolerance: float = 0.25, min_points: int = 6) -> None:
        if not 0 <= marginal_score <= pass_score <= 100:
            raise ValueError("need 0 <= marginal_score <= pass_score <= 100")
        if not 0.5 < confidence < 1:
            raise ValueError(f"confidence={confidence}: choose between 0.5 and 1 (Kayenta 0.98)")
        self.metrics = tuple(metrics)
        weights = dict(DEFAULT_GROUP_WEIGHTS if group_weights is None else group_weights)
        if sum(weights.values()) > 100.0001:
            raise ValueError(f"group weights {weights} add up to more than 100")
        self.group_weights = weights
        self.pass_score, self.marginal_score = pass_score, marginal_score
        self.confidence, self.tolerance, self.min_points = confidence, tolerance, min_points

    # ---------------------------------------------------------------------- one metric
    def classify(self, spec: MetricSpec, baseline: Sequence[float],
                 canary: Sequence[float]) -> MetricResult:
        """Kayenta's MannWhitneyClassifier on two series of one metric."""
        b, c = _clean(baseline, spec.nan_strategy), _clean(canary, spec.nan_strategy)
        r = MetricResult(spec.metric, "Nodata", "", n_baseline=len(b), n_canary=len(c))
        if len(b) < self.min_points or len(c) < self.min_points:
            r.reason = (f"{len(c)} canary / {len(b)} baseline values, fewer than "
                        f"{self.min_points}")
            return r
        r.baseline_median, r.canary_median = float(np.median(b)), float(np.median(c))
        r.mean_ratio = mean_ratio(c, b)
        if sorted(b) == sorted(c) or len(set(b) | set(c)) == 1:
            r.classification, r.reason = "Pass", "canary and baseline values are the same"
            return r
        s = r.shift = mann_whitney(c, b, self.confidence)
        bound = self.tolerance * abs(s.estimate)
        big_enough = abs(s.estimate) >= spec.min_shift
        ratio = r.mean_ratio
        high = (spec.direction in ("increase", "either") and s.ci_low > bound and big_enough
                and (math.isnan(ratio) or ratio >= spec.allowed_increase))
        low = (spec.direction in ("decrease", "either") and s.ci_high < -bound and big_enough
               and (math.isnan(ratio) or ratio <= spec.allowed_decrease))
        interval = (f"shift {s.estimate:+.4g} [{s.ci_low:+.4g}, {s.ci_high:+.4g}] at "
                    f"{s.confidence:.0%}, mean ratio {ratio:.3g}, p={s.p_value:.2g}")
        if high or low:
            r.classification = "High" if high else "Low"
            r.critical_failure = spec.critical
            r.reason = f"{spec.metric} {r.classification}: {interval}"
        else:
            r.classification, r.reason = "Pass", interval
        return r

    # --------------------------------------------------------------------- the verdict
    def judge(self, baseline: Window, canary: Window) -> Verdict:
        results = [self.classify(spec, baseline.series(spec.metric), canary.series(spec.metric))
                   for spec in self.metrics]
        return self.score(results)

    def score(self, results: list[MetricResult]) -> Verdict:
        """Group scores, the weighted summary, critical failures and the classification."""
        specs = {s.metric: s for s in self.metrics}
        groups: dict[str, list[str]] = {}
        for r in results:
            groups.setdefault(specs[r.metric].group, []).append(r.classification)
        group_scores = {}
        for g, labels in groups.items():
            judged = [x for x in labels if x != "Nodata"]
            group_scores[g] = 100.0 * judged.count("Pass") / len(judged) if judged else None
        unweighted = [g for g in groups if g not in self.group_weights]
        rest = (100.0 - sum(self.group_weights.values())) / len(unweighted) if unweighted else 0
        summary = sum((100.0 if s is None else s) * self.group_weights.get(g, rest) / 100
                      for g, s in group_scores.items())
        evidence = {"groups": group_scores, "metrics": [_metric_evidence(r) for r in results]}
        failed = [r for r in results if r.classification in ("High", "Low")]
        critical = [r for r in failed if r.critical_failure]
        nodata = sum(r.classification == "Nodata" for r in results)
        if critical:
            return Verdict(self.name, "fail", 0.0, f"critical: {critical[0].reason}", evidence)
        if nodata * 2 >= len(results):
            return Verdict(self.name, "nodata", None,
                           f"{nodata} of {len(results)} metrics without enough data", evidence)
        summary = round(summary, 2)
        why = "; ".join(r.reason for r in failed) or "every metric passed"
        if summary >= self.pass_score:
            decision = "pass"
        elif summary >= self.marginal_score:
            decision = "marginal"
        else:
            decision = "fail"
        return Verdict(self.name, decision, summary, f"score {summary:g}: {why}", evidence)


def _clean(values: Sequence[float], strategy: str) -> list[float]:
    if strategy == "replace":
        return [0.0 if math.isnan(v) else float(v) for v in values]
    return [float(v) for v in values if not math.isnan(v)]


def _metric_evidence(r: MetricResult) -> dict[str, Any]:
    out = {"metric": r.metric, "classification": r.classification, "reason": r.reason,
           "critical_failure": r.critical_failure, "mean_ratio": r.mean_ratio,
           "baseline_median": r.baseline_median, "canary_median": r.canary_median,
           "n_baseline": r.n_baseline, "n_canary": r.n_canary}
    if r.shift:
        out.update(estimate=r.shift.estimate, ci=[r.shift.ci_low, r.shift.ci_high],
                   p_value=r.shift.p_value, u=r.shift.u)
    return out
