"""`labkit reset` and `labkit status` on a lab left as a student leaves it halfway through 07.

A disposable lab of its own: reset drops every scratch database, which the session lab's
other tests still use.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import amqp
import psutil
import pytest
from pymemcache.client.base import Client

import labkit as lk
from labkit._proc import spawn


def _labkit(lab_dir, *args: str, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labkit.cli", "--lab-dir", str(lab_dir), *args],
                          capture_output=True, text=True, timeout=180, stdin=stdin)


def _make_a_mess(lab) -> psutil.Process:
    """What a student leaves behind: scratch data, a slot, a queue, a helper, lag, remote_apply."""
    lab.postgres.create_database("scratch_nb07")
    lab.leader.execute("SELECT pg_create_logical_replication_slot('inval_scratch', "
                       "'test_decoding')", dbname="scratch_nb07")
    lab.leader.execute("CREATE TABLE likes AS SELECT g AS id FROM generate_series(1, 20000) g",
                       dbname="scratch_nb07")  # WAL the inactive slot now holds
    with lab.rabbitmq.connect() as conn:
        ch = conn.channel()
        ch.queue_declare("notifications", durable=True, auto_delete=False)
        ch.basic_publish(amqp.Message(b"like 42", delivery_mode=2), routing_key="notifications")
    Client(lab.cache_servers[0]).set("like_count:42", b"7", noreply=False)
    workdir = lab.config.lab_dir / "celery-notify"
    workdir.mkdir()
    helper = spawn("celery-notify-0", [sys.executable, "-c", "import time; time.sleep(600)"],
                   cwd=workdir, log_path=workdir / "worker.log", user=None)
    lab.follower.set_delay(300)
    lab.postgres.set_synchronous_commit("remote_apply")
    return psutil.Process(helper.pid)


@pytest.mark.slow
def test_status_warns_and_reset_puts_the_lab_back(fresh_lab_dir):
    lab = lk.up(lab_dir=fresh_lab_dir, followers=1,
                services=("postgres", "memcached", "rabbitmq"))
    servers = {p.pid for svc in lab._services() for p in svc.procs}
    out = _labkit(fresh_lab_dir, "status")
    assert out.returncode == 0 and "not as `labkit up` left it" not in out.stdout, out.stdout

    helper = _make_a_mess(lab)
    out = _labkit(fresh_lab_dir, "status")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "follower1 applies every commit 300 ms late" in out.stdout
    assert "synchronous_commit is remote_apply, not the lab's local" in out.stdout
    assert re.search(r"replication slot inval_scratch \(logical, database scratch_nb07\) is "
                     r"inactive and holds [\d.]+ (kB|MB) of WAL", out.stdout), out.stdout
    assert f"helper processes still running: celery-notify-0 (pid {helper.pid})" in out.stdout

    # Not a terminal and no --yes: nothing is touched.
    out = _labkit(fresh_lab_dir, "reset")
    assert out.returncode == 2 and "--yes" in out.stderr, out.stdout + out.stderr
    assert "drop databases: scratch_nb07" in out.stdout and lab.follower.delay_ms() == 300
    assert helper.is_running()

    out = _labkit(fresh_lab_dir, "reset", "--yes")
    assert out.returncode == 0, out.stdout + out.stderr
    assert lab.follower.delay_ms() == 0
    assert lab.postgres.synchronous_commit() == lab.config.synchronous_commit == "local"
    assert lab.postgres.scratch_databases() == []
    slots = lab.postgres.replication_slots()
    assert [(s["name"], s["type"]) for s in slots] == [("follower1", "physical")]
    assert lab.rabbitmq.queues() == []
    assert Client(lab.cache_servers[0]).get("like_count:42") is None
    psutil.wait_procs([helper], timeout=5)
    assert not helper.is_running() or helper.status() == psutil.STATUS_ZOMBIE
    # The servers themselves were left alone, and are well.
    assert servers == {p.pid for svc in lk.attach(lab_dir=fresh_lab_dir)._services()
                       for p in svc.procs}
    assert all(r["ok"] for r in lab.health())
    out = _labkit(fresh_lab_dir, "status")
    assert "not as `labkit up` left it" not in out.stdout, out.stdout
    # Replication still works after the reset.
    lab.leader.execute("CREATE TABLE after_reset (x int)")
    deadline = time.monotonic() + 10
    while not lab.follower.execute("SELECT to_regclass('after_reset') IS NOT NULL")[0][0]:
        assert time.monotonic() < deadline, "the follower stopped replaying after the reset"
        time.sleep(0.05)
    assert lk.reset(lab_dir=fresh_lab_dir) == ["flush memcached-0"]


def test_reset_help_says_what_it_drops():
    out = subprocess.run([sys.executable, "-m", "labkit.cli", "reset", "--help"],
                         capture_output=True, text=True, timeout=60, env=os.environ.copy())
    text = " ".join(out.stdout.split())
    for words in ("DROP every database except postgres/template0/template1",
                  "logical replication slot", "DELETE every queue in the lab's RabbitMQ vhost",
                  "flush memcached", "stop helper processes", "--yes"):
        assert words in text, (words, out.stdout)
