"""The invalidation service on the real servers: storage-schema changes to the cache's keys."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from types import SimpleNamespace

import pytest
from psycopg import sql

from labkit.backend import cache as c
from labkit.backend import likes, schema
from labkit.backend.invalidation import (InvalidationService, keys_for_change,
                                         parse_commit_time, prefixes_for_truncate)


def test_parses_test_decoding_lines():
    line = "table shard_0002.media_likes: UPDATE: media_id[bigint]:42 count[bigint]:7"
    assert keys_for_change(line, "ig") == ["ig:likes:42"]
    assert keys_for_change("table shard_0001.users: DELETE: id[bigint]:3", "p") == ["p:profile:3"]
    media = "table shard_0001.media: INSERT: id[bigint]:9 user_id[bigint]:3 caption[text]:'x'"
    assert keys_for_change(media, "p") == ["p:media:9"]          # id, not user_id
    assert keys_for_change("table shard_0001.follows: INSERT: follower_id[bigint]:1", "ig") == []
    # Only the storage schema's shards are cached: a table of the same name elsewhere is not.
    assert keys_for_change("table public.media_likes: UPDATE: media_id[bigint]:42", "ig") == []
    assert prefixes_for_truncate("table shard_0001.media_likes: TRUNCATE: (no-flags)", "ig") == [
        "ig:likes:"]
    assert prefixes_for_truncate("table shard_0001.media, shard_0001.media_likes, "
                                 "shard_0001.comments: TRUNCATE: cascade", "ig") == [
        "ig:likes:", "ig:media:"]
    assert prefixes_for_truncate("table public.media: TRUNCATE: (no-flags)", "ig") == []
    assert keys_for_change("table shard_0001.media_likes: TRUNCATE: (no-flags)", "ig") == []
    ts = parse_commit_time("COMMIT 731 (at 2026-11-21 14:50:00.25+00)")
    assert ts == dt.datetime(2026, 11, 21, 14, 50, 0, 250000, tzinfo=dt.timezone.utc).timestamp()
    assert parse_commit_time("COMMIT 731 (at 2026-11-21 20:20:00.25+05:30)") == ts


@pytest.fixture
def model(lab, pg_db):
    """pg_db with the storage schema: alice (shard 1) with 3 posts, bob (shard 2)."""
    with lab.leader.connect(pg_db) as conn:
        schema.install(conn, shards=4)
        alice = schema.create_user(conn, "alice", shard=1).user_id
        bob = schema.create_user(conn, "bob", shard=2).user_id
        media = [schema.create_media(conn, alice, f"photo {i}") for i in range(3)]
    return SimpleNamespace(db=pg_db, alice=alice, bob=bob, media=media)


@pytest.fixture
def service(lab, model):
    prefix = f"t{uuid.uuid4().hex[:8]}"
    svc = InvalidationService.for_lab(lab, dbname=model.db, prefix=prefix)
    svc.start()
    yield svc
    svc.stop()
    svc.drop_slot()


def test_a_like_deletes_exactly_the_key_the_cache_uses(lab, model, service):
    mc = c.connect_cache(lab.cache_servers)
    reader = c.CacheAside(mc, c.Database(lab.leader.dsn(model.db), size=1),
                          prefix=service.prefix)
    m, other = model.media[0], model.media[1]
    assert reader.like_count(m) == 0 and reader.like_count(other) == 0
    assert reader.profile(model.alice)["username"] == "alice"
    with lab.leader.connect(model.db) as conn:
        likes.like(conn, model.bob, m)           # the like path of notebook 01, no cache in sight
    [record] = service.wait_for_commits(1)
    assert record["keys"] == [reader.key("likes", m)]
    assert record["delay_ms"] >= 0
    assert mc.get(reader.key("likes", m)) is None
    assert mc.get(reader.key("likes", other)) == b"0"
    assert reader.like_count(m) == 1              # refilled with the new count
    with lab.leader.connect(model.db) as conn:
        likes.unlike(conn, model.bob, m)
        conn.execute(sql.SQL("UPDATE {}.users SET bio = 'hi' WHERE id = %s").format(
            schema.schema_of(model.alice)), (model.alice,))
    records = service.wait_for_commits(3)
    assert records[1]["keys"] == [reader.key("likes", m)]
    assert records[2]["keys"] == [reader.key("profile", model.alice)]
    assert reader.like_count(m) == 0 and reader.profile(model.alice)["bio"] == "hi"
    reader.db.close()


def test_truncate_invalidates_every_key_of_its_kinds(lab, model, service):
    mc = c.connect_cache(lab.cache_servers)
    p = service.prefix
    keys = [c.cache_key(p, "likes", m) for m in model.media] + [
        c.cache_key(p, "media", model.media[0]), c.cache_key(p, "profile", model.alice)]
    for k in keys:
        mc.set(k, b"1", noreply=False)
    shard = schema.schema_of(model.media[0])
    lab.leader.execute(sql.SQL("TRUNCATE {}.media_likes").format(shard), dbname=model.db)
    [record] = service.wait_for_commits(1)
    assert record["swept_prefixes"] == [f"{p}:likes:"] and record["swept_keys"] == 3
    assert all(mc.get(k) is None for k in keys[:3])
    assert mc.get(keys[3]) == b"1" and mc.get(keys[4]) == b"1"   # other kinds are kept


def test_catches_up_on_changes_made_while_stopped(lab, model, service):
    mc = c.connect_cache(lab.cache_servers)
    p = service.prefix
    service.stop()
    assert not service.running()
    with lab.leader.connect(model.db) as conn:
        for m in model.media:
            mc.set(c.cache_key(p, "likes", m), b"1", noreply=False)
            likes.like(conn, model.bob, m)
        conn.execute(sql.SQL("DELETE FROM {}.users WHERE id = %s").format(
            schema.schema_of(model.bob)), (model.bob,))
    mc.set(c.cache_key(p, "profile", model.bob), b"x", noreply=False)
    time.sleep(0.1)
    assert mc.get(c.cache_key(p, "likes", model.media[0])) == b"1"   # nobody deletes while down
    service.start()
    records = service.wait_for_commits(4)
    assert [r["keys"] for r in records] == [[c.cache_key(p, "likes", m)] for m in model.media] + [
        [c.cache_key(p, "profile", model.bob)]]
    assert all(mc.get(c.cache_key(p, "likes", m)) is None for m in model.media)
    assert mc.get(c.cache_key(p, "profile", model.bob)) is None


def test_readiness_is_a_real_check(lab, service):
    assert service.ready()
    service.stop()
    assert not service.ready()
