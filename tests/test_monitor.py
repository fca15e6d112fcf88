"""The dashboard's figures, gathered from the session lab's real servers (not the widget's looks)."""

from __future__ import annotations

import uuid

import amqp
import pytest

from labkit import monitor as d
from labkit.backend import likes, schema
from labkit.backend.cache import connect_cache
from labkit.backend.invalidation import InvalidationService
from labkit.backend.workers import CeleryWorkers


def test_health_and_follower_lag_in_ms_and_bytes(lab):
    lab.follower.set_delay(400, settle=True)      # commits reach the follower 400 ms late
    try:
        lab.leader.execute("SELECT txid_current()")   # a commit, held back on the follower
        f = d.gather(lab)
    finally:
        lab.follower.set_delay(0)
        lab.follower.wait_replayed()
    assert f.healthy and not f.errors, f.errors
    names = {r["name"] for r in f.servers}
    assert {"postgres-leader", "memcached-0", "rabbitmq"} <= names, names
    [fol] = f.followers
    assert fol["name"] == f"postgres-{lab.follower.name}" and fol["delay_ms"] == 400
    assert fol["lag_bytes"] > 0 and fol["lag_ms"] >= 300, fol
    after = d.gather(lab)
    assert after.followers[0]["lag_bytes"] == 0 and after.followers[0]["lag_ms"] == 0


def test_queue_depths_of_named_queues_and_of_the_workers_queues(lab, pg_db):
    queue = f"dash_{uuid.uuid4().hex[:8]}"
    workers = CeleryWorkers(lab.config.lab_dir / f"celery-{queue}", broker_url=lab.broker_url,
                            dsn=lab.leader.dsn(pg_db), queue=f"{queue}-tasks", workers=1).start()
    try:
        with lab.rabbitmq.connect() as conn:
            ch = conn.channel()
            ch.queue_declare(queue, durable=False, auto_delete=False)
            try:
                for i in range(3):
                    ch.basic_publish(amqp.Message(f"m{i}".encode()), routing_key=queue)
                ch.basic_get(queue, no_ack=False)   # delivered, not acked: no longer ready
                depths = d.gather(lab, queues=[queue, "no-such-queue"]).queues
            finally:
                ch.queue_delete(queue)
    finally:
        workers.stop()
        workers.delete_queues()
    assert depths == {queue: {"ready": 2, "consumers": 0},
                      f"{queue}-tasks": {"ready": 0, "consumers": 1},
                      f"{queue}-tasks.dead": {"ready": 0, "consumers": 0}}, depths


def test_cache_hit_ratio_since_a_snapshot(lab):
    cache = connect_cache(lab.cache_servers)
    key = f"dash:{uuid.uuid4().hex}"
    cache.set(key, b"1")
    before = d.gather(lab)
    for _ in range(3):
        assert cache.get(key) == b"1"               # 3 hits
    assert cache.get(key + ":missing") is None      # 1 miss
    after = d.gather(lab)
    assert after.cache["hits"] - before.cache["hits"] == 3
    assert after.cache["misses"] - before.cache["misses"] == 1
    assert after.hit_ratio(since=before) == pytest.approx(0.75)
    assert 0 <= after.hit_ratio() <= 1


def test_invalidation_delay_of_the_recorded_services(lab, pg_db):
    with lab.leader.connect(pg_db) as conn:
        schema.install(conn, shards=2)
        alice = schema.create_user(conn, "alice", shard=1).user_id
        media = schema.create_media(conn, alice, "photo")
    svc = InvalidationService.for_lab(lab, dbname=pg_db, prefix=f"t{uuid.uuid4().hex[:8]}")
    svc.start()
    try:
        with lab.leader.connect(pg_db) as conn:
            for _ in range(2):
                likes.like(conn, alice, media)
                likes.unlike(conn, alice, media)
        records = svc.wait_for_commits(4)
        f = d.gather(lab)
    finally:
        svc.stop()
        svc.drop_slot()
    fig = f.invalidation[svc.name]
    delays = sorted(r["delay_ms"] for r in records)
    assert fig["commits"] == len(records) >= 4
    assert delays[0] <= fig["p50_ms"] <= fig["p99_ms"] == delays[-1]
    assert fig["last_ms"] == records[-1]["delay_ms"]
    assert svc.name not in d.gather(lab).invalidation   # a stopped service is no longer shown


def test_the_refresh_thread_stops_cleanly(lab):
    dash = d.Dashboard(lab, interval_s=0.1, duration_s=60).start()
    try:
        first = dash.refreshes
        dash.refresh()
        assert dash.refreshes == first + 1 and dash.running
        assert "follower lag" in dash.body.value and "cache" in dash.body.value, dash.body.value
    finally:
        dash.stop()
    assert not dash.running and "stopped" in dash.status.value
    n = dash.refreshes
    short = d.Dashboard(lab, interval_s=0.1, duration_s=0.5).start()
    short._thread.join(30)
    assert not short.running and "stopped" in short.status.value   # ends by itself
    assert dash.refreshes == n                      # nothing refreshes a stopped dashboard


def test_a_dashboard_refuses_a_bad_interval(lab):
    with pytest.raises(ValueError, match="interval_s=0"):
        d.Dashboard(lab, interval_s=0)
