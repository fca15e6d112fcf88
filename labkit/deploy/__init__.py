"""Continuous deployment: releases side by side behind HAProxy, judged, rolled back or promoted.

This package sits between ``labkit.backend``/``labkit.web`` (what it deploys) and
``labkit.experiments`` (which repeats deploys to compare judges). Its parts, one concern each:

``release``     a release: ``labkit/`` from a git revision or the working tree, plus a patch
``pool``        ``ReleasePool``: a release under gunicorn, measured by ``harness`` (prometheus)
``router``      ``Router``: HAProxy, weights changed through its runtime API
``collector``   scrapes every pool's /metrics on an interval; per-interval series
``judges``      Instagram's thresholds and a Kayenta-style Mann-Whitney judge
``deployment``  baseline + canary pools behind the router: deploy, shift, roll back, promote
``rollout``     the controller: steps, analysis, automated rollback, decision log
``workload``    the traffic a canary is judged under (users reading popular posts)

Feature gates are an application building block and live in ``labkit.backend.gates``.

Introduced in notebooks/13_continuous_deployment.ipynb.
"""

from labkit.deploy.collector import Collector, Interval, Window, histogram_quantile
from labkit.deploy.deployment import Deployment
from labkit.deploy.judges import (KayentaJudge, MetricSpec, ThresholdJudge, Verdict,
                                  hodges_lehmann, mann_whitney)
from labkit.deploy.pool import ReleasePool
from labkit.deploy.release import Release, ReleaseError, patches
from labkit.deploy.rollout import DecisionLog, Outcome, Plan, RolloutController
from labkit.deploy.router import Router
from labkit.deploy.workload import Workload

__all__ = ["Collector", "DecisionLog", "Deployment", "Interval", "KayentaJudge", "MetricSpec",
           "Outcome", "Plan", "Release", "ReleaseError", "ReleasePool", "RolloutController",
           "Router", "ThresholdJudge", "Verdict", "Window", "Workload", "histogram_quantile",
           "hodges_lehmann", "mann_whitney", "patches"]
