"""Celery notifications on the real RabbitMQ and PostgreSQL: retries, kills, restarts, garbage."""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Callable

import amqp
import pytest

from labkit._proc import service_account
from labkit.backend import tasks
from labkit.backend.workers import CeleryWorkers
from labkit.services.rabbitmq import RabbitMQ


def wait_until(predicate: Callable[[], bool], timeout_s: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def count(lab, dbname: str, sql: str, params=None) -> int:
    return lab.leader.execute(sql, params, dbname=dbname)[0][0]


@pytest.fixture
def notify_db(lab, pg_db):
    with lab.leader.connect(pg_db) as conn:
        tasks.install(conn)
    return pg_db


@pytest.fixture
def make_workers(lab, notify_db):
    """Build CeleryWorkers on a queue of the test's own; all stopped and deleted afterwards."""
    made: list[CeleryWorkers] = []

    def make(broker_url: str | None = None, workdir=None, **kw) -> CeleryWorkers:
        queue = f"notify-{uuid.uuid4().hex[:8]}"
        w = CeleryWorkers(workdir or lab.config.lab_dir / f"celery-{queue}",
                          broker_url=broker_url or lab.broker_url,
                          dsn=lab.leader.dsn(notify_db), queue=queue, **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop()
        if w.settings["broker_url"] == lab.broker_url:
            with lab.rabbitmq.connect() as conn:
                ch = conn.channel()
                ch.queue_delete(w.queue)
                ch.queue_delete(f"{w.queue}.dead")


def test_retries_succeed_after_n_failures(lab, notify_db, make_workers):
    workers = make_workers(backoff_s=0.05, max_retries=5).start()
    with lab.leader.connect(notify_db) as conn:
        tasks.inject_failures(conn, liker_id=7, media_id=42, times=3)
    workers.app.tasks["notify_like"].delay(liker_id=7, media_id=42, owner_id=3)
    wait_until(lambda: count(lab, notify_db, "SELECT count(*) FROM notifications") == 1,
               what="the notification after 3 failures")
    attempts = lab.leader.execute("SELECT attempt, outcome FROM notify_attempts ORDER BY id",
                                  dbname=notify_db)
    assert attempts == [(1, "failed"), (2, "failed"), (3, "failed"), (4, "sent")]
    assert count(lab, notify_db, "SELECT count(*) FROM task_failures") == 0


def test_retries_give_up_after_the_limit_and_record_it(lab, notify_db, make_workers):
    workers = make_workers(backoff_s=0.05, max_retries=2).start()
    with lab.leader.connect(notify_db) as conn:
        tasks.inject_failures(conn, liker_id=7, media_id=42, times=100)
    workers.app.tasks["notify_like"].delay(liker_id=7, media_id=42, owner_id=3)
    wait_until(lambda: count(lab, notify_db, "SELECT count(*) FROM task_failures") == 1,
               what="the recorded failure")
    (reason, attempts), = lab.leader.execute("SELECT reason, attempts FROM task_failures",
                                             dbname=notify_db)
    assert reason.startswith("NotifierError") and attempts == 3
    assert count(lab, notify_db, "SELECT count(*) FROM notify_attempts") == 3
    assert count(lab, notify_db, "SELECT count(*) FROM notifications") == 0


def test_malformed_payloads_are_recorded_not_retried(lab, notify_db, make_workers):
    workers = make_workers(backoff_s=0.05).start()
    notify_like = workers.app.tasks["notify_like"]
    notify_like.delay(liker_id="seven", media_id=42, owner_id=3)
    notify_like.delay(liker_id=7, media_id=42, owner_id=3, colour="red")
    notify_like.apply_async(args=[1, 2, 3, 4])
    with lab.rabbitmq.connect() as conn:  # not a Celery task at all, then not even JSON
        for body in (b'{"hello": "world"}', b"{not json"):
            conn.channel().basic_publish(amqp.Message(body, content_type="application/json"),
                                         exchange=workers.queue, routing_key=workers.queue)
    notify_like.delay(liker_id=8, media_id=42, owner_id=3)  # a good one behind them
    wait_until(lambda: count(lab, notify_db, "SELECT count(*) FROM notifications") == 1
               and workers.queue_depth() == 0 and workers.dead_letters() == 2,
               what="the queue to drain")
    reasons = [r for (r,) in lab.leader.execute("SELECT reason FROM task_failures ORDER BY id",
                                                dbname=notify_db)]
    assert len(reasons) == 5, reasons
    assert reasons[0].startswith("MalformedPayload") and "liker_id" in reasons[0]
    assert "colour" in reasons[1] and reasons[2].startswith("TypeError")
    assert reasons[3] == "not a Celery task" and reasons[4].startswith("undecodable")
    assert count(lab, notify_db, "SELECT count(*) FROM notify_attempts") == 1


def test_the_push_service_dedups_by_idempotency_key(lab, notify_db):
    with lab.leader.connect(notify_db) as conn:
        assert tasks.push(conn, 3, 7, 42) and tasks.push(conn, 3, 7, 42)   # no key: both delivered
        assert tasks.push(conn, 3, 8, 42, idempotency_key="like:8:42") is True
        assert tasks.push(conn, 3, 8, 42, idempotency_key="like:8:42") is False
        rows = conn.execute("SELECT liker_id, delivered FROM pushes ORDER BY id").fetchall()
    assert rows == [(7, True), (7, True), (8, True), (8, False)]


def _pushes(lab, db, liker_id: int, media_id: int) -> tuple[int, int]:
    """(requests the push service received, pushes it delivered) for one like."""
    (requests, delivered), = lab.leader.execute(
        "SELECT count(*), count(*) FILTER (WHERE delivered) FROM pushes "
        "WHERE liker_id = %s AND media_id = %s", (liker_id, media_id), dbname=db)
    return requests, delivered


@pytest.mark.parametrize("idempotent", [False, True])
def test_a_task_killed_after_its_push_is_redelivered_and_pushes_again(lab, notify_db,
                                                                       make_workers, idempotent):
    """At-least-once: the redelivered task's push reaches the service twice; with the
    idempotency key the owner still gets it once."""
    workers = make_workers(workers=2, send_ms=2, idempotent_push=idempotent).start()
    with lab.leader.connect(notify_db) as conn:
        tasks.inject_crash(conn, liker_id=1, media_id=42)
    for liker in range(1, 11):
        workers.app.tasks["notify_like"].delay(liker_id=liker, media_id=42, owner_id=3)
    wait_until(lambda: count(lab, notify_db, "SELECT count(*) FROM notifications") == 10,
               what="10 notifications after the crash")
    assert sorted(workers.alive()) == [False, True], "the worker that ran like 1 died mid-task"
    assert _pushes(lab, notify_db, 1, 42) == ((2, 1) if idempotent else (2, 2))
    assert all(_pushes(lab, notify_db, liker, 42) == (1, 1) for liker in range(2, 11))
    outcomes = lab.leader.execute("SELECT outcome FROM notify_attempts WHERE dedup_key = "
                                  "'like:1:42'", dbname=notify_db)
    assert outcomes == [("sent",)]   # the killed run recorded nothing: it died before


def test_sigkilled_worker_loses_nothing_and_notifies_once(lab, notify_db, make_workers):
    workers = make_workers(workers=2, send_ms=2)
    tasks.declare_queues(workers.app)
    notify_like = workers.app.tasks["notify_like"]
    with workers.app.producer_or_acquire() as producer:
        for i in range(1, 1001):
            notify_like.apply_async(kwargs=dict(liker_id=i, media_id=42, owner_id=3),
                                    producer=producer)
    workers.start()
    sent = "SELECT count(*) FROM notifications"
    wait_until(lambda: count(lab, notify_db, sent) >= 200, what="200 notifications")
    workers.kill(0)
    at_kill = count(lab, notify_db, sent)
    wait_until(lambda: count(lab, notify_db, sent) == 1000, timeout_s=120,
               what="all 1000 notifications after the kill")
    assert at_kill < 1000, "the kill came after the run: make the run longer"
    assert workers.alive() == [False, True]
    assert count(lab, notify_db, "SELECT count(DISTINCT dedup_key) FROM notifications") == 1000
    delivered = "SELECT count(*), count(DISTINCT liker_id) FROM pushes WHERE delivered"
    assert lab.leader.execute(delivered, dbname=notify_db) == [(1000, 1000)]
    assert count(lab, notify_db, "SELECT count(*) FROM pushes") >= 1000   # repeats: received
    assert count(lab, notify_db, "SELECT count(*) FROM task_failures") == 0
    wait_until(lambda: workers.queue_depth() == 0, what="an empty queue")


def test_tasks_survive_a_broker_restart(lab, notify_db, make_workers, fresh_lab_dir):
    mq = RabbitMQ(fresh_lab_dir / "rabbitmq", username="restart",
                  password=secrets.token_urlsafe(12), server_bin=lab.config.rabbitmq_server_bin,
                  epmd_bin=lab.config.epmd_bin, user=service_account(lab.config.service_user))
    with mq:
        workers = make_workers(broker_url=mq.broker_url, workdir=fresh_lab_dir / "celery")
        tasks.declare_queues(workers.app)
        notify_like = workers.app.tasks["notify_like"]
        with workers.app.producer_or_acquire() as producer:
            for i in range(1, 201):
                notify_like.apply_async(kwargs=dict(liker_id=i, media_id=42, owner_id=3),
                                        producer=producer)
        assert workers.queue_depth() == 200
        mq.stop()
        mq.start()
        assert workers.queue_depth() == 200
        workers.start()
        wait_until(lambda: count(lab, notify_db, "SELECT count(*) FROM notifications") == 200,
                   what="the 200 tasks queued before the restart")
        workers.stop()
