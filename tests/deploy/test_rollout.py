"""Canary rollouts on the real servers: HAProxy, gunicorn pools of different releases, the lab's
PostgreSQL and Memcached, a fixed-rate load that records every request.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

import labkit
from labkit.backend.gates import GateStore
from labkit.deploy import (DecisionLog, Deployment, KayentaJudge, Plan, Release,
                           RolloutController, ThresholdJudge, Workload)
from labkit.deploy.release import REPO
from labkit.web import WebConfig
from labkit.web.loadgen import OpenLoad

RATE_PER_S = 100
FEATURE = "compact_like_count"


@pytest.fixture(scope="module")
def site(lab):
    """A workload database, a gate store of the deploy's own, and a deployment in production."""
    suffix = uuid.uuid4().hex[:8]
    work = Workload.create(lab, f"deploy_{suffix}", users=200)
    gates_db = lab.postgres.create_database(f"gates_{suffix}")
    gates = GateStore(lab.leader.dsn(gates_db), lab.cache_servers, prefix=suffix, local_ttl_s=0)
    gates.install()
    gates.define(FEATURE, percent=0)
    config = WebConfig.from_lab(lab, work.dbname).replace(gates={
        "dsn": lab.leader.dsn(gates_db), "cache_servers": lab.cache_servers, "prefix": suffix})
    log = DecisionLog(lab.config.lab_dir / f"deploy-{suffix}" / "decisions.jsonl")
    dep = Deployment.for_lab(lab, f"deploy-{suffix}", config, warmup=work.requests(), log=log)
    plain = Release.from_worktree(REPO, dep.releases_dir)
    dep.start(plain)
    yield {"dep": dep, "work": work, "gates": gates, "log": log, "plain": plain}
    dep.stop()
    gates.close()
    for db in (work.dbname, gates_db):
        lab.postgres.drop_database(db)


def release(site, patch: str | None) -> Release:
    return Release.from_worktree(REPO, site["dep"].releases_dir, patch=patch)


def plan() -> Plan:
    return Plan(steps=(1, 10, 50, 100), step_s=16, check_every_s=2, point_s=2)


def canary_share_by_window(load: OpenLoad, name: str, window_s: float = 5.0) -> list[float]:
    """The canary's share of the requests sent in each ``window_s`` while it served any."""
    times = [c.sent_s for c in load.calls if c.served_by == name]
    if not times:
        return []
    t, out = times[0], []
    while t < times[-1]:
        out.append(load.share(name, t, t + window_s))
        t += window_s
    return out


def test_each_pool_runs_its_own_release(site):
    dep, gates = site["dep"], site["gates"]
    canary = dep.deploy(release(site, FEATURE))
    try:
        seen = {role: dep.pool(role).describe() for role in ("production", "baseline", "canary")}
        # Production and the baseline import the same snapshot, in two processes; the canary
        # imports its own; none of them the labkit installed in this process.
        assert seen["production"]["labkit_file"] == seen["baseline"]["labkit_file"]
        assert seen["production"]["labkit_file"].startswith(str(site["plain"].path))
        assert seen["canary"]["labkit_file"].startswith(str(canary.release.path))
        assert labkit.__file__ not in {s["labkit_file"] for s in seen.values()}
        assert len({s["pid"] for s in seen.values()}) == 3
        # The canary's code has the feature (behind its gate); production's has not.
        user = site["work"].users[0]
        gates.override(FEATURE, user.user_id, True)
        time.sleep(1.2)  # the workers' local copies of the gate (1 s) have expired by now
        auth = {"Authorization": f"Token {user.token}"}
        path = f"/api/media/{site['work'].media_ids[0]}"
        assert "like_count_text" in json.loads(canary.get(path, auth)[1])
        assert "like_count_text" not in json.loads(dep.production.get(path, auth)[1])
    finally:
        gates.override(FEATURE, site["work"].users[0].user_id, None)
        dep.rollback("test over")


def test_no_request_is_dropped_while_traffic_shifts_and_rolls_back(site):
    dep, work = site["dep"], site["work"]
    bad = release(site, "n_plus_one")
    steps = []
    with OpenLoad(dep.router.host, dep.router.port, work.requests(share_likes=0.1),
                  rate_per_s=RATE_PER_S) as load:
        dep.deploy(bad)
        for percent in (1, 10, 50, 10):
            dep.set_canary_percent(percent)
            steps.append((percent, time.monotonic()))
            time.sleep(3)
        steps.append((0, time.monotonic()))
        stats = dep.rollback("test: shifted back and forth")
    calls = load.calls                             # all answered: stop() waited for them
    assert len(calls) == load.scheduled > 3 * 4 * RATE_PER_S * 0.8
    assert load.unanswered() == []                 # every request got a pool's answer
    assert {c.status for c in calls} <= {200}      # likes included: nothing failed
    for (percent, t0), (_, t1) in zip(steps, steps[1:]):
        share = load.share(bad.name, t0 + 0.2, t1)  # of the requests sent in the step
        n = sum(t0 + 0.2 <= c.sent_s < t1 for c in calls)
        p = percent / 100                           # weighted random: binomial, 4 sd
        assert abs(share - p) <= 4 * (p * (1 - p) / n) ** 0.5 + 0.01, (percent, share, n)
    for role in ("canary", "baseline"):            # HAProxy saw no error on the drained slots
        assert stats[role]["econ"] == 0 and stats[role]["eresp"] == 0
        assert stats[role]["srv_abrt"] == 0


@pytest.mark.parametrize("patch, judge", [("n_plus_one", KayentaJudge()),
                                          ("error_spike", ThresholdJudge())])
def test_a_bad_canary_is_rolled_back_before_it_gets_more_than_10_percent(site, patch, judge):
    dep, work, log = site["dep"], site["work"], site["log"]
    bad = release(site, patch)
    ctl = RolloutController(dep, judge, plan=plan(), log=log)
    started = time.monotonic()
    with OpenLoad(dep.router.host, dep.router.port, work.requests(),
                  rate_per_s=RATE_PER_S) as load:
        outcome = ctl.run(bad)
    assert outcome.decision == "rolled_back" and outcome.percent <= 10, outcome
    assert dep.canary is None and dep.production.release == site["plain"]
    shifts = [e["percent"] for e in log.events("shift") if e["t"] >= started]
    assert shifts and max(shifts) <= 10
    assert sum(c.served_by == bad.name for c in load.calls) <= 0.1 * len(load.calls)
    assert max(canary_share_by_window(load, bad.name)) <= 0.15
    assert load.unanswered() == []
    rollback = [e for e in log.events("rollback") if e["release"] == bad.name][-1]
    assert rollback["evidence"]["decision"] == "fail" or "at 10%" in rollback["reason"] \
        or "at 1%" in rollback["reason"]


def test_a_good_canary_is_promoted(site):
    dep, work, log = site["dep"], site["work"], site["log"]
    good = release(site, FEATURE)
    ctl = RolloutController(dep, KayentaJudge(), plan=plan(), shadow=[ThresholdJudge()],
                            log=log)
    with OpenLoad(dep.router.host, dep.router.port, work.requests(),
                  rate_per_s=RATE_PER_S) as load:
        outcome = ctl.run(good)
    assert outcome.decision == "promoted", outcome.reason
    assert [s["percent"] for s in outcome.steps] == [1, 10, 50]
    assert dep.production.release == good and dep.canary is None and dep.baseline is None
    assert dep.router.weights()[dep.slots["production"]] == 100
    assert load.unanswered() == []
    analyses = [e for e in log.events("analysis") if e["release"] == good.name]
    assert analyses and all("shadow" in e for e in analyses)   # the evidence of every verdict
    assert analyses[-1]["shadow"][0]["decision"] == "pass"     # Instagram's judge passed it too


def test_the_gate_gives_a_user_the_same_answer_on_every_request(site):
    dep, work, gates = site["dep"], site["work"], site["gates"]
    if dep.production.release.patch != FEATURE:
        dep.deploy(release(site, FEATURE))
        dep.promote("test: the feature's code in production")
    gates.set_percent(FEATURE, 30)
    time.sleep(1.5)  # the workers' local copies of the gate (1 s) have expired by now
    with OpenLoad(dep.router.host, dep.router.port, work.requests(), rate_per_s=RATE_PER_S,
                  keep_body=True) as load:
        time.sleep(6)
    answers: dict[str, set[bool]] = {}
    for c in load.calls:
        assert c.status == 200, c
        answers.setdefault(c.tag, set()).add("like_count_text" in json.loads(c.body))
    assert len(answers) > 150 and all(len(a) == 1 for a in answers.values())
    on = sum(a == {True} for a in answers.values())
    assert 0.30 * len(answers) - 4 * (len(answers) * 0.21) ** 0.5 <= on <= \
        0.30 * len(answers) + 4 * (len(answers) * 0.21) ** 0.5
    gates.set_percent(FEATURE, 0)
