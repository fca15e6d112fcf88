"""GET /api/feed with its candidates from the viewer's Cassandra feed (notebook 09's source)."""

from __future__ import annotations

import uuid

import pytest

from labkit.backend import feeds, ranking, schema
from labkit.web import WebConfig, configure
from labkit.web import feed as feed_state

pytestmark = pytest.mark.cassandra


@pytest.fixture(scope="module")
def world(ring_lab):
    lab, tag = ring_lab, uuid.uuid4().hex[:8]
    db = schema.create_database(lab.leader, f"webcas_{tag}", followers=lab.followers)
    conn = lab.leader.connect(db, autocommit=True)
    reader = schema.create_user(conn, "reader")
    authors = [schema.create_user(conn, f"a{i}").user_id for i in range(4)]
    for a in authors:
        schema.follow(conn, reader.user_id, a)
    posts = {schema.create_media(conn, a, f"post {i} of {a}"): a for i in range(3) for a in authors}
    session = lab.cassandra.connect()
    config = feeds.FeedConfig.from_lab(lab, feeds.install(session, f"webcas_{tag}"),
                                       cache_prefix=f"web{tag}")
    fd = config.feeds(session)
    for m, a in posts.items():
        fd.deliver(m, a, [reader.user_id])
    lab.follower.wait_replayed()
    configure(WebConfig.from_lab(lab, db, feed_source="cassandra",
                                 cassandra_feeds=config.to_dict()))
    accounts = [(reader.user_id, "reader")] + [(a, f"a{i}") for i, a in enumerate(authors)]
    feed_state._model = ranking.FeedModel(accounts, private_ids=(), blocks=())
    yield {"reader": reader, "posts": posts, "feeds": fd, "config": config, "conn": conn,
           "authors": authors}
    feed_state._model = None
    feed_state._cassandra.clear()
    from django.db import connections
    connections.close_all()
    session.execute(f"DROP KEYSPACE {config.keyspace}", timeout=feeds.DDL_TIMEOUT_S)
    session.cluster.shutdown()
    conn.close()
    lab.postgres.drop_database(db)


def test_the_page_ranks_the_posts_of_the_cassandra_feed(world):
    from django.test import Client
    client = Client(HTTP_AUTHORIZATION=f"Token {world['reader'].token}")
    page = client.get("/api/feed?count=8").json()
    assert page["candidates"] == len(world["posts"])
    items = page["items"]
    assert len(items) == 8 and all(i["media_id"] in world["posts"] for i in items)
    assert all(i["user_id"] == world["posts"][i["media_id"]] and i["followed"] for i in items)
    assert all(i["caption"].startswith("post ") for i in items)


def test_a_new_post_written_and_invalidated_reaches_the_page(world):
    from django.test import Client
    client = Client(HTTP_AUTHORIZATION=f"Token {world['reader'].token}")
    client.get("/api/feed?count=5")  # the first page is cached now
    author = world["authors"][0]
    media_id = schema.create_media(world["conn"], author, "post new")
    world["feeds"].deliver(media_id, author, [world["reader"].user_id])
    world["config"].cache().invalidate([world["reader"].user_id])
    page = client.get("/api/feed?count=100").json()
    assert media_id in [i["media_id"] for i in page["items"]]
