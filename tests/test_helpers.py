"""Helper processes notebooks start are in the state file while they run, and `labkit status` lists them.

A disposable lab of its own: `labkit reset` drops every scratch database, which the session
lab's other tests still use.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest

import labkit as lk
from labkit.backend.invalidation import InvalidationService
from labkit.backend.workers import CeleryWorkers
from labkit.web.config import WebConfig
from labkit.web.server import WebServer


def _labkit(lab_dir, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labkit.cli", "--lab-dir", str(lab_dir), *args],
                          capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)


def _helper_rows(status: str) -> dict[str, list[str]]:
    """name -> columns of `labkit status`'s helper table."""
    lines = status.splitlines()
    if not any(l.startswith("helper ") for l in lines):
        return {}
    start = next(i for i, l in enumerate(lines) if l.startswith("helper "))
    return {l.split()[0]: l.split() for l in lines[start + 1:] if l.strip()}


def _recorded(lab) -> dict[str, dict]:
    return json.loads(lab.config.state_file.read_text()).get("helpers", {})


@pytest.mark.slow
def test_status_lists_the_helpers_a_notebook_started(fresh_lab_dir):
    lab = lk.up(lab_dir=fresh_lab_dir, followers=0, services=("postgres", "memcached", "rabbitmq"))
    db = lab.postgres.create_database("helpers_nb")
    web = WebServer(fresh_lab_dir / "web", WebConfig.from_lab(lab, dbname=db), workers=1).start()
    inval = InvalidationService.for_lab(lab, dbname=db).start()
    workers = CeleryWorkers(fresh_lab_dir / "celery-notify", broker_url=lab.broker_url,
                            dsn=lab.leader.dsn(db), queue="notify", workers=2).start()
    helpers = {web: "web", inval: "invalidation", workers: "celery"}

    # Recorded in the state file, by another process's reading of it.
    recorded = _recorded(lab)
    assert {h["kind"] for h in recorded.values()} == {"web", "invalidation", "celery"}
    out = _labkit(fresh_lab_dir, "status")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = _helper_rows(out.stdout)
    for h, kind in helpers.items():
        cols = rows[h.name]
        assert cols[1] == "ok" and kind in cols and str(h.procs[0].pid) in " ".join(cols), out.stdout
    assert web.address in out.stdout and "queue notify" in out.stdout

    # Its probe is a real check: a frozen web server still has its processes, yet is DOWN.
    family = [psutil.Process(web.procs[0].pid), *psutil.Process(web.procs[0].pid).children()]
    for p in family:
        p.send_signal(signal.SIGSTOP)
    try:
        row = {r["name"]: r for r in lab.helper_health()}[web.name]
        assert not row["ok"] and "error" in row["why"], row
    finally:
        for p in family:
            p.send_signal(signal.SIGCONT)
    # A worker killed: the helper is DOWN, and says how many of its processes are gone.
    workers.kill(0)
    psutil.wait_procs([psutil.Process(workers.procs[0].pid)], timeout=10)
    row = {r["name"]: r for r in lab.helper_health()}[workers.name]
    assert not row["ok"] and "1 of 2 process(es) gone" in row["why"], row

    # Stopped through its object: no longer recorded, no longer listed.
    workers.stop()
    assert workers.name not in {h["name"] for h in _recorded(lab).values()}
    assert workers.name not in _helper_rows(_labkit(fresh_lab_dir, "status").stdout)

    # `labkit reset` stops the others (they carry the lab's marker) and forgets them.
    out = _labkit(fresh_lab_dir, "reset", "--yes")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "stop helper processes" in out.stdout
    assert _recorded(lab) == {}
    assert not web.procs[0].alive() and not inval.procs[0].alive()
    assert _helper_rows(_labkit(fresh_lab_dir, "status").stdout) == {}

    # `labkit down` stops whatever still runs, and names the helpers it recorded.
    web = WebServer(fresh_lab_dir / "web", WebConfig.from_lab(lab, dbname="postgres"),
                    workers=1).start()
    pid = web.procs[0].pid
    out = _labkit(fresh_lab_dir, "down")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"its helpers ({web.name})" in out.stdout and str(pid) in out.stdout, out.stdout
    assert not web.procs[0].alive()


def test_a_helper_outside_any_lab_records_nothing(tmp_path):
    from labkit import _labdir
    assert _labdir.find_lab(tmp_path) is None
    web = WebServer(tmp_path / "web", WebConfig(leader={"host": "127.0.0.1"}))
    web._record(lambda lab_dir, key: pytest.fail("recorded outside a lab"))
    assert not (tmp_path / "state.json").exists() and not os.listdir(tmp_path)
