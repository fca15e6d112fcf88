"""Cache-aside on the real servers over the storage schema: keys, serialization, stale reads."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest

from labkit.backend import cache as c
from labkit.backend import datagen, ids, likes, schema


@pytest.fixture
def model(lab, pg_db):
    """pg_db with 4 shards: alice (shard 1) with 3 posts of 70, 80, 90 likes; bob (shard 3)."""
    with lab.leader.connect(pg_db) as conn:
        schema.install(conn, shards=4)
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        alice = schema.create_user(conn, "alice", shard=1, bio="sunsets")
        bob = schema.create_user(conn, "bob", shard=3)
        media = [schema.create_media(conn, alice.user_id, f"photo {i}") for i in range(3)]
        for m, n in zip(media, (70, 80, 90)):
            datagen.add_likes(conn, m, n, progress=False)
    return SimpleNamespace(db=pg_db, alice=alice.user_id, bob=bob.user_id, media=media)


@pytest.fixture
def cached(lab, model):
    """A CacheAside over the model's database (leader), under a key prefix of its own."""
    db = c.Database(lab.leader.dsn(model.db), size=2)
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


def test_reads_the_storage_schema_then_hits(cached, model):
    m = model.media[0]
    assert cached.like_count(m) == 70
    assert cached.like_count(m) == 70
    assert cached.profile(model.alice) == {"user_id": model.alice, "username": "alice",
                                           "bio": "sunsets"}
    assert cached.media(model.media[1]) == {"media_id": model.media[1], "user_id": model.alice,
                                            "caption": "photo 1"}
    s = cached.stats
    assert (s.hits, s.misses, s.db_queries) == (1, 3, 3)
    assert s.hit_ratio == pytest.approx(0.25)
    assert len(s.latencies_ms) == 4 and all(ms > 0 for ms in s.latencies_ms)
    assert cached.cache.get(cached.key("likes", m)) == b"70"
    assert b"token" not in cached.cache.get(cached.key("profile", model.alice))


def test_unknown_ids_are_none_and_not_cached(cached):
    missing_shard = ids.make_id(ms=1_000, shard=9, seq=1)   # a shard this database lacks
    missing_row = ids.make_id(ms=1_000, shard=2, seq=1)     # an installed shard, no such row
    for ident in (missing_shard, missing_row):
        assert cached.like_count(ident) is None
        assert cached.profile(ident) is None and cached.media(ident) is None
        assert cached.cache.get(cached.key("likes", ident)) is None


def test_server_counts_the_same_queries(cached, model):
    m = model.media[2]
    with cached.db.connection() as conn:
        before = c.statement_calls(conn, "media_likes WHERE media_id")
    for _ in range(5):
        cached.like_count(m)
    with cached.db.connection() as conn:
        assert c.statement_calls(conn, "media_likes WHERE media_id") - before == 1


def test_skipping_invalidation_serves_a_stale_count(lab, cached, model):
    m = model.media[1]
    assert cached.like_count(m) == 80
    assert cached.like(model.bob, m, invalidate=False) is True
    assert cached.like_count(m) == 80          # stale: the database says 81
    with lab.leader.connect(model.db) as conn:
        assert likes.count(conn, m) == 81
        fan = schema.create_user(conn, "fan").user_id
    assert cached.like(fan, m) is True          # with invalidation
    assert cached.like_count(m) == 82


def test_a_fill_read_before_a_write_lands_after_its_delete(lab, cached, model):
    """The stale-set race of notebook 03: the delete came first, the old value is cached."""
    m = model.media[0]

    def read_then_someone_likes():
        with cached.db.connection() as conn:
            value = likes.count(conn, m)      # the reader's database read: 70
        cached.like(model.bob, m)             # meanwhile: a like commits and deletes the key
        return value                          # then the reader's fill lands

    assert cached.read("likes", m, read_then_someone_likes) == 70
    assert cached.like_count(m) == 70         # cached, stale until its TTL
    with lab.leader.connect(model.db) as conn:
        assert likes.count(conn, m) == 71


def test_delete_prefix_sweeps_only_that_prefix(lab):
    mc = c.connect_cache(lab.cache_servers)
    p = f"t{uuid.uuid4().hex[:8]}"
    for k in (f"{p}:likes:1", f"{p}:likes:2", f"{p}:profile:1", f"{p}x:likes:1"):
        mc.set(k, b"1", noreply=False)
    assert c.delete_prefix(lab.cache_servers, f"{p}:likes:") == 2
    assert mc.get(f"{p}:likes:1") is None and mc.get(f"{p}:likes:2") is None
    assert mc.get(f"{p}:profile:1") == b"1" and mc.get(f"{p}x:likes:1") == b"1"
    assert c.delete_prefix(lab.cache_servers, f"{p}:likes:") == 0


def test_database_pool_is_bounded(lab, pg_db):
    with c.Database(lab.leader.dsn(pg_db), size=1, timeout_s=0.2) as db:
        with db.connection():
            with pytest.raises(TimeoutError, match="raise Database"):
                db.query_one("SELECT 1")
        assert db.query_one("SELECT 1") == (1,)
