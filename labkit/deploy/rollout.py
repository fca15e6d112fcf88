"""The rollout controller: traffic steps, an analysis at each, automated rollback or promotion.

``RolloutController.run(release)`` deploys ``release`` as the canary (beside a fresh baseline
of production's release, see ``labkit.deploy.deployment``), then for each step of the plan
(1% -> 10% -> 50% of the requests by default) sets the router's weights and analyses the step:
every ``check_every_s`` the judge compares the canary's intervals since the step began with
the baseline's. A ``fail`` rolls back at once (weight 0, drain, canary stopped); at
the end of the step the verdict must be ``pass`` (a ``marginal`` or ``nodata`` one rolls back
too: a canary that cannot be shown good is not promoted, as Spinnaker's pass threshold
says). After the last step the canary is promoted to 100%. Shadow judges see the same
windows and are logged, never obeyed (how the notebook compares judges on one run).

Every decision goes to a JSON-lines log with its evidence: the weights HAProxy reports after
each shift, every verdict with each metric's statistics, the router's counters of the slot
a rollback or promotion drained.

Introduced in notebooks/13_continuous_deployment.ipynb.

>>> log = DecisionLog(lab.config.lab_dir / "deploy" / "decisions.jsonl")      # doctest: +SKIP
>>> dep = Deployment(..., log=log)                                            # doctest: +SKIP
>>> RolloutController(dep, KayentaJudge(), log=log).run(release).decision     # doctest: +SKIP
'rolled_back'
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from labkit.deploy.deployment import Deployment
from labkit.deploy.judges import Verdict
from labkit.deploy.release import Release


class DecisionLog:
    """Events as JSON lines (``path``, if given) and in memory (``entries``).

    Each entry has ``t`` (``time.monotonic()``, to line up with load histories), ``wall``
    (Unix time) and ``event``; ``log(event, **fields)`` is also the deployment's log hook.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else None
        self.entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, event: str, **fields: Any) -> dict[str, Any]:
        entry = {"t": round(time.monotonic(), 4), "wall": round(time.time(), 3),
                 "event": event, **fields}
        line = json.dumps(entry, default=str)
        with self._lock:
            self.entries.append(json.loads(line))
            if self.path:
                with open(self.path, "a") as f:
                    f.write(line + "\n")
        return entry

    def events(self, *names: str) -> list[dict[str, Any]]:
        return [e for e in self.entries if not names or e["event"] in names]

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


@dataclass(frozen=True)
class Plan:
    """Canary percentages and how each step is analysed.

    ``step_s``: how long a step is analysed before it may pass; ``check_every_s``: how often
    a verdict is taken (a fail acts at once); ``point_s``: the resolution of the series the
    judge compares (scrape intervals merged into points of that length: Kayenta's data points
    need enough requests each, or a 5% error rate is a median of zero); ``nodata_grace_s``: how
    much longer a step that ends with too little data may run (default: ``step_s``) before
    it counts as a failure.
    """

    steps: tuple[int, ...] = (1, 10, 50, 100)
    step_s: float = 30.0
    check_every_s: float = 2.0
    point_s: float = 2.0
    nodata_grace_s: float | None = None

    def __post_init__(self) -> None:
        if not self.steps or self.steps[-1] != 100 or list(self.steps) != sorted(self.steps) \
                or any(not 0 < s <= 50 for s in self.steps[:-1]):
            raise ValueError(f"steps={self.steps}: give increasing percentages up to 50 and "
                             "then 100 (promotion), e.g. (1, 10, 50, 100); the baseline gets "
                             "as much as the canary, so 50 is the most a step can give it")
        if not 0 < self.check_every_s <= self.step_s:
            raise ValueError("check_every_s must be above 0 and at most step_s")


@dataclass
class Outcome:
    """How a rollout ended, and when."""

    release: str
    decision: str                 # promoted or rolled_back
    percent: int                  # the canary's share when it was decided
    reason: str
    verdict: dict[str, Any] | None
    started_s: float              # monotonic time the canary first got traffic
    decided_s: float
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def time_to_decision_s(self) -> float:
        return self.decided_s - self.started_s


class RolloutController:
    """Runs a plan for one canary: shift, analyse, roll back or promote; logs each decision."""

    def __init__(self, deployment: Deployment, judge: Any, *, plan: Plan = Plan(),
                 shadow: Sequence[Any] = (), log: DecisionLog | None = None) -> None:
        self.deployment, self.judge, self.plan = deployment, judge, plan
        self.shadow = tuple(shadow)
        self.log = log or DecisionLog()

    def run(self, release: Release) -> Outcome:
        """Deploy ``release`` as the canary and take it through the plan."""
        dep = self.deployment
        dep.deploy(release)
        started = None
        steps: list[dict[str, Any]] = []
        for percent in self.plan.steps:
            if percent == 100:
                break
            dep.set_canary_percent(percent)
            t0 = time.monotonic()
            started = started or t0
            verdict, final = self._analyse(release, percent, t0)
            steps.append({"percent": percent, "decision": verdict.decision,
                          "elapsed_s": round(time.monotonic() - t0, 2)})
            if verdict.decision != "pass":
                why = (f"{self.judge.name}: {verdict.decision} at {percent}%"
                       + ("" if final else " (before the step ended)") + f": {verdict.reason}")
                dep.rollback(why, verdict.to_dict())
                return Outcome(release.name, "rolled_back", percent, why, verdict.to_dict(),
                               started, time.monotonic(), steps)
        started = started or time.monotonic()
        dep.promote(f"{self.judge.name}: passed every step", {"steps": steps})
        return Outcome(release.name, "promoted", 100, "passed every step", None, started,
                       time.monotonic(), steps)

    def _analyse(self, release: Release, percent: int, t0: float) -> tuple[Verdict, bool]:
        """Verdicts every ``check_every_s`` until a fail or the step's end; (last, ended)."""
        grace = self.plan.step_s if self.plan.nodata_grace_s is None else self.plan.nodata_grace_s
        end = t0 + self.plan.step_s
        while True:
            now = time.monotonic()
            final = now >= end - 1e-3
            if not final:
                time.sleep(min(self.plan.check_every_s, end - now))
                final = time.monotonic() >= end - 1e-3
            verdict = self.verdict(self.judge, t0)
            entry = {"release": release.name, "percent": percent, "final": final,
                     "elapsed_s": round(time.monotonic() - t0, 2), "judge": verdict.to_dict()}
            if self.shadow:
                entry["shadow"] = [self.verdict(j, t0).to_dict() for j in self.shadow]
            self.log("analysis", **entry)
            if final and verdict.decision == "nodata" and end < t0 + self.plan.step_s + grace:
                end = min(end + self.plan.check_every_s, t0 + self.plan.step_s + grace)
                continue  # too little data yet: keep collecting, up to the grace period
            if verdict.decision == "fail" or final:
                return verdict, final

    def verdict(self, judge: Any, since_s: float) -> Verdict:
        """``judge`` on the canary's and the baseline's intervals since ``since_s``."""
        dep = self.deployment
        col = dep.collector
        return judge.judge(col.window(dep.metrics_name("baseline"), since_s,
                                      step_s=self.plan.point_s),
                           col.window(dep.metrics_name("canary"), since_s,
                                      step_s=self.plan.point_s))
