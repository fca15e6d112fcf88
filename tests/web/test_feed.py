"""The feed endpoint on the real PostgreSQL: candidates, visibility, ranking, errors.

The page is checked against what the rules say (seen, blocked and private-unfollowed posts
never shown; best score first; at most two posts per author), through Django's test client
and once under gunicorn, with the pure and the compiled kernel giving the same page.
"""

from __future__ import annotations

import json
import uuid

import pytest

from labkit.backend import datagen, ranking, schema
from labkit.web import WebConfig, WebServer, configure
from labkit.web import feed as feed_state


@pytest.fixture(scope="module")
def world(lab):
    """A small graph, a reader following 60 accounts, and a model with chosen privacy/blocks."""
    db = f"feed_{uuid.uuid4().hex[:10]}"
    schema.create_database(lab.leader, db, followers=lab.followers, shards=4)
    with lab.leader.connect(db) as conn:
        graph = datagen.generate(conn, users=300, media_per_user=4, follows_per_user=5,
                                 likes=3_000, progress=False, seed=5)
        reader, = datagen.add_readers(conn, graph, n=1, follows=60, among=200)
        followed = [r[0] for r in conn.execute(
            f"SELECT followee_id FROM {schema.shard_schema(schema.ids.shard_of(reader.user_id))}"
            ".follows WHERE follower_id = %s", (reader.user_id,))]
    lab.follower.wait_replayed()
    with lab.follower.connect(db) as fconn:
        source = ranking.PostgresCandidates(fconn)
        candidates = source.candidates(reader.user_id)
        not_followed = sorted(set(candidates.owner_ids) - set(followed) - {reader.user_id})
        assert not_followed, "the fixture needs suggested posts from accounts not followed"
        # One followed author blocks the reader, one private account is not followed.
        blocker, private_stranger = followed[0], not_followed[0]
        accounts = []
        for shard in schema.shards(fconn):
            accounts += fconn.execute(f"SELECT id, username FROM {schema.shard_schema(shard)}"
                                      ".users").fetchall()
    model = ranking.FeedModel(accounts, private_ids={private_stranger, followed[1]},
                              blocks=[(blocker, reader.user_id)])
    config = WebConfig.from_lab(lab, db)
    configure(config)
    feed_state._model = model  # this process's model: the one with the chosen rules
    yield {"db": db, "reader": reader, "followed": followed, "blocker": blocker,
           "private_stranger": private_stranger, "private_followed": followed[1],
           "model": model, "candidates": candidates, "config": config}
    feed_state._model = None
    from django.db import connections
    connections.close_all()
    lab.postgres.drop_database(db)


@pytest.fixture
def client(world):
    from django.test import Client
    return Client(HTTP_AUTHORIZATION=f"Token {world['reader'].token}")


def test_a_page_follows_the_rules(world, client):
    r = client.get("/api/feed?count=30")
    assert r.status_code == 200, r.content
    page = r.json()
    items = page["items"]
    assert len(items) == 30 and page["candidates"] == len(world["candidates"])
    authors = [i["user_id"] for i in items]
    assert world["blocker"] not in authors and world["private_stranger"] not in authors
    assert all(authors.count(a) <= 2 for a in authors)
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)
    assert all(i["caption"] and i["username"] for i in items)
    assert all(i["followed"] == (i["user_id"] in world["followed"]) for i in items)
    # The hidden ones were really candidates: the filters, not the query, removed them.
    owners = set(world["candidates"].owner_ids)
    assert {world["blocker"], world["private_stranger"], world["private_followed"]} <= owners
    assert page["visible"] < page["candidates"]


def test_a_followed_private_account_is_visible(world, client):
    everything = client.get("/api/feed?count=100").json()["items"]
    by_author = {i["user_id"] for i in everything}
    # Everything visible of a followed private account can reach the page (two at most).
    mine = [m for m, o in zip(world["candidates"].media_ids, world["candidates"].owner_ids)
            if o == world["private_followed"]]
    assert not mine or world["private_followed"] in by_author


def test_seen_posts_are_not_shown_again(world, client):
    first = [i["media_id"] for i in client.get("/api/feed?count=10").json()["items"]]
    seen = ",".join(map(str, first))
    second = [i["media_id"] for i in client.get(f"/api/feed?count=10&seen={seen}").json()["items"]]
    assert len(second) == 10 and not set(first) & set(second)


@pytest.mark.parametrize("query, status, message", [
    ("count=abc", 400, "give a number of posts"), ("count=0", 400, "1 to 100"),
    ("seen=12,xyz", 400, "is not an ID"), ("seen=" + ",".join(["1"] * 1001), 400, "at most 1000"),
])
def test_bad_parameters_are_4xx_with_the_fix(world, client, query, status, message):
    r = client.get(f"/api/feed?{query}")
    assert r.status_code == status and message in r.json()["error"], r.content


def test_the_feed_needs_a_token(world):
    from django.test import Client
    assert Client().get("/api/feed").status_code == 401


def test_under_gunicorn_both_kernels_serve_the_same_page(lab, world):
    pages = {}
    headers = {"Authorization": f"Token {world['reader'].token}"}
    for kernel in ("pure", "compiled"):
        config = world["config"].replace(feed_kernel=kernel)
        with WebServer(lab.config.lab_dir / "feed-web", config, workers=1) as web:
            status, body = web.get("/api/feed?count=25", headers)
        assert status == 200, body
        # The server built its own model (random privacy and blocks): compare items, not rules.
        pages[kernel] = [(i["media_id"], i["score"]) for i in json.loads(body)["items"]]
    # A second later every post is a second older: scores move in the 6th digit.
    pure, compiled = dict(pages["pure"]), dict(pages["compiled"])
    assert list(pure) == list(compiled) and len(pure) == 25
    assert all(compiled[m] == pytest.approx(pure[m], abs=1e-3) for m in pure)


def test_the_ranker_takes_any_candidate_source(world):
    """A source that is not PostgreSQL (as notebook 09's Cassandra feeds will be)."""
    c = world["candidates"]

    class Fixed:
        def candidates(self, viewer_id):
            return ranking.Candidates(c.media_ids[:50], c.owner_ids[:50], c.like_counts[:50],
                                      c.followee_ids)

        def details(self, media_ids):
            return {m: {"caption": f"cached {m}"} for m in media_ids}

    page = ranking.feed_page(Fixed(), world["model"], world["reader"].user_id, count=5)
    assert page["candidates"] == 50 and len(page["items"]) == 5
    assert all(i["caption"] == f"cached {i['media_id']}" for i in page["items"])
