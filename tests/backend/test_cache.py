"""Cache-aside on the real servers: key scheme, serialization, counters, stale reads."""

from __future__ import annotations

import uuid

import pytest

from labkit.backend import cache as c


@pytest.fixture
def likes(lab, pg_db):
    """A CacheAside over a seeded database of its own, under a key prefix of its own."""
    with lab.leader.connect(pg_db) as conn:
        c.install(conn)
        c.seed(conn, media=50, users=5)
    db = c.Database(lab.leader.dsn(pg_db), size=2)
    mc = c.connect_cache(lab.cache_servers)
    yield c.CacheAside(mc, db, prefix=f"t{uuid.uuid4().hex[:8]}")
    db.close()
    mc.close()


def test_key_scheme_and_serialization():
    assert c.cache_key("ig", "likes", 42) == "ig:likes:42"
    with pytest.raises(ValueError, match="choose one of"):
        c.cache_key("ig", "comments", 1)
    assert c.loads(c.dumps(420)) == 420
    assert c.loads(c.dumps({"user_id": 7, "username": "ana"})) == {"user_id": 7, "username": "ana"}
    assert c.TTL_S["likes"] < c.TTL_S["profile"] < c.TTL_S["media"]


def test_miss_then_hit_counts_and_one_db_query(likes):
    assert likes.like_count(7) == 70
    assert likes.like_count(7) == 70
    assert likes.profile(3) == {"user_id": 3, "username": "user3", "bio": ""}
    assert likes.media(4)["caption"] == "photo 4"
    s = likes.stats
    assert (s.hits, s.misses, s.db_queries) == (1, 3, 3)
    assert s.hit_ratio == pytest.approx(0.25)
    assert len(s.latencies_ms) == 4 and all(ms > 0 for ms in s.latencies_ms)
    assert likes.cache.get(likes.key("likes", 7)) == b"70"


def test_server_counts_the_same_queries(likes):
    with likes.db.connection() as conn:
        before = c.statement_calls(conn, "FROM media_likes WHERE media_id")
    for _ in range(5):
        likes.like_count(11)
    with likes.db.connection() as conn:
        assert c.statement_calls(conn, "FROM media_likes WHERE media_id") - before == 1


def test_skipping_invalidation_serves_a_stale_count(likes):
    assert likes.like_count(5) == 50
    likes.write_like_count(5, invalidate=False)
    assert likes.like_count(5) == 50          # stale: the database says 51
    likes.write_like_count(5)                 # with invalidation
    assert likes.like_count(5) == 52


def test_database_pool_is_bounded(lab, pg_db):
    with c.Database(lab.leader.dsn(pg_db), size=1, timeout_s=0.2) as db:
        with db.connection():
            with pytest.raises(TimeoutError, match="raise Database"):
                db.query_one("SELECT 1")
        assert db.query_one("SELECT 1") == (1,)
