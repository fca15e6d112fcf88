"""Continuous deployment: releases side by side behind HAProxy, judged, rolled back or promoted.

This package sits between ``labkit.backend``/``labkit.web`` (what it deploys) and
``labkit.experiments`` (which repeats deploys to compare judges). Its parts, one concern each:

``release``     a release: ``labkit/`` from a git revision or the working tree, plus a patch
``pool``        ``ReleasePool``: a release under gunicorn, measured by ``harness`` (prometheus)
``router``      ``Router``: HAProxy, weights changed through its runtime API
``collector``   scrapes every pool's /metrics on an interval; per-interval series
``judges``      Instagram's thresholds and a Kayenta-style Mann-Whitney judge
``deployment``  production, baseline and canary pools behind the router: deploy, shift, roll
                back, promote
``rollout``     the controller: steps, analysis, automated rollback, decision log
``workload``    the traffic a canary is judged under (users reading popular posts)

Feature gates are an application building block and live in ``labkit.backend.gates``.
Names are imported on first use, so ``labkit doctor`` can ask ``labkit.deploy.router`` for
HAProxy without the extras (SciPy, prometheus_client) the judges and the collector need.

Introduced in notebooks/13_continuous_deployment.ipynb.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Collector": "collector", "Interval": "collector", "Window": "collector",
    "histogram_quantile": "collector", "Deployment": "deployment",
    "KayentaJudge": "judges", "MetricSpec": "judges", "ThresholdJudge": "judges",
    "Verdict": "judges", "hodges_lehmann": "judges", "mann_whitney": "judges",
    "ReleasePool": "pool", "Release": "release", "ReleaseError": "release",
    "patches": "release", "DecisionLog": "rollout", "Outcome": "rollout", "Plan": "rollout",
    "RolloutController": "rollout", "Router": "router", "Workload": "workload",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'labkit.deploy' has no attribute {name!r}")
    return getattr(importlib.import_module(f"labkit.deploy.{_WHERE[name]}"), name)
