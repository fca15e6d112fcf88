"""The like path end to end: the view commits the like, then queues `notify_like`; a Celery
worker on the lab's RabbitMQ stores exactly one notification for the media item's owner."""

from __future__ import annotations

import time
import uuid

from labkit.backend import schema, tasks
from labkit.backend.workers import CeleryWorkers
from labkit.web import WebConfig, configure


def test_a_new_like_queues_one_notification_for_the_owner(lab):
    db, queue = f"notify_{uuid.uuid4().hex[:8]}", f"likes-{uuid.uuid4().hex[:8]}"
    schema.create_database(lab.leader, db, followers=lab.followers, shards=4)
    with lab.leader.connect(db) as conn:
        tasks.install(conn)
        alice, bob = schema.create_user(conn, "alice"), schema.create_user(conn, "bob")
        media_id = schema.create_media(conn, alice.user_id, "sunset")
    configure(WebConfig.from_lab(lab, db, notify=True, notify_queue=queue))
    from django.test import Client
    client, auth = Client(), {"HTTP_AUTHORIZATION": f"Token {bob.token}"}
    workers = CeleryWorkers(lab.config.lab_dir / f"celery-{queue}", broker_url=lab.broker_url,
                            dsn=lab.leader.dsn(db), queue=queue)
    try:
        first = client.post(f"/api/media/{media_id}/like", **auth).json()
        double_tap = client.post(f"/api/media/{media_id}/like", **auth).json()
        assert first["changed"] and first["notification"] == "queued"
        assert not double_tap["changed"] and "notification" not in double_tap
        with workers:
            rows: list = []
            deadline = time.monotonic() + 30
            while not rows and time.monotonic() < deadline:
                rows = lab.leader.execute("SELECT owner_id, liker_id, media_id FROM notifications",
                                          dbname=db)
                time.sleep(0.1)
            assert rows == [(alice.user_id, bob.user_id, media_id)]
            assert workers.queue_depth() == 0
        assert lab.leader.execute("SELECT count(*) FROM notifications", dbname=db) == [(1,)]
    finally:
        workers.stop()
        workers.delete_queues()
        from django.db import connections
        connections.close_all()
        lab.leader.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
