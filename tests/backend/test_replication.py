"""Read-your-writes on a real leader and follower with an injected replay delay."""

from __future__ import annotations

import uuid

import pytest
from psycopg import sql
from pymemcache.client.base import Client

from labkit.backend import likes, schema
from labkit.backend.replication import ReadRouter, RemoteMarkerCache
from labkit.experiments import lag


@pytest.fixture
def ryw_db(lab, pg_db):
    """pg_db with the storage schema and 20 posts (replicated); delays reset afterwards."""
    users, media = lag.prepare(lab, pg_db, users=2, photos=20)
    yield pg_db, users, media
    lab.follower.set_delay(0)
    lab.postgres.set_synchronous_commit("local")


def write_then_read(router: ReadRouter, user_id: int, media_ids) -> list[bool]:
    """Like each post, read it back at once; True where the read missed the like."""
    stale = []
    for media_id in media_ids:
        router.write(user_id, lambda conn: likes.like(conn, user_id, media_id))
        stale.append(not router.read(user_id, lambda conn: likes.liked(conn, user_id, media_id)))
    return stale


def test_stale_reads_without_a_strategy(lab, ryw_db):
    db, (user, _), media = ryw_db
    lab.follower.set_delay(500)
    with ReadRouter(lab.leader.dsn(db), lab.follower.dsn(db), "none") as router:
        stale = write_then_read(router, user, media[:5])
        assert router.stats.leader_reads == 0
    assert all(stale), "a follower 500 ms behind showed a write it had not replayed yet"


def test_lsn_wait_never_reads_stale_at_500ms_lag(lab, ryw_db):
    db, (user, _), media = ryw_db
    lab.follower.set_delay(500)
    with ReadRouter(lab.leader.dsn(db), lab.follower.dsn(db), "lsn_wait",
                    lsn_timeout_s=5.0) as router:
        stale = write_then_read(router, user, media[:5])
        assert router.stats.follower_reads == 5 and router.stats.lsn_fallbacks == 0
    assert not any(stale)


def test_lsn_wait_falls_back_to_the_leader_after_its_timeout(lab, ryw_db):
    db, (user, _), media = ryw_db
    lab.follower.set_delay(1000)
    with ReadRouter(lab.leader.dsn(db), lab.follower.dsn(db), "lsn_wait",
                    lsn_timeout_s=0.05) as router:
        stale = write_then_read(router, user, media[:3])
        assert router.stats.lsn_fallbacks == 3 and router.last_source == "leader"
    assert not any(stale)


def test_pin_reads_the_leader_after_a_write_then_the_follower(lab, ryw_db):
    db, (user, other), media = ryw_db
    lab.follower.set_delay(500)
    with ReadRouter(lab.leader.dsn(db), lab.follower.dsn(db), "pin", pin_s=30) as router:
        assert not any(write_then_read(router, user, media[:3]))
        assert router.last_source == "leader"
        # A user who wrote nothing reads the follower (a SQL statement works as well).
        rows = router.read(other, sql.SQL("SELECT count FROM {}.media_likes WHERE media_id = %s")
                           .format(schema.schema_of(media[0])), (media[0],))
        assert router.last_source == "follower" and rows == [(0,)]


def test_remote_apply_makes_the_follower_current_at_commit(lab, ryw_db):
    db, (user, _), media = ryw_db
    with pytest.raises(RuntimeError, match="set_synchronous_commit"):
        ReadRouter(lab.leader.dsn(db), lab.follower.dsn(db), "remote_apply")
    lab.postgres.set_synchronous_commit("remote_apply")
    lab.follower.set_delay(200)
    with ReadRouter(lab.leader.dsn(db), lab.follower.dsn(db), "remote_apply") as router:
        assert not any(write_then_read(router, user, media[:3]))
        assert router.stats.leader_reads == 0


def test_remote_marker_sends_the_next_miss_to_the_leader(lab, ryw_db):
    db, (user, _), _ = ryw_db
    cache = Client(lab.cache_servers[0])
    key = f"bio:{uuid.uuid4().hex[:8]}"
    update = sql.SQL("UPDATE {}.users SET bio = %s WHERE id = %s").format(schema.schema_of(user))
    read = sql.SQL("SELECT bio FROM {}.users WHERE id = %s").format(schema.schema_of(user))
    lab.leader.execute(update, ("old", user), dbname=db)
    lab.follower.wait_replayed()
    lab.follower.set_delay(500)

    plain = RemoteMarkerCache(cache, lab.leader.dsn(db), lab.follower.dsn(db), use_marker=False)
    plain.write(key, update, ("v1", user))
    assert plain.read(key, read, (user,)) == "old"   # refilled from the stale follower
    assert plain.read(key, read, (user,)) == "old"   # ... and the cache now serves the stale value
    plain.close()

    marked = RemoteMarkerCache(cache, lab.leader.dsn(db), lab.follower.dsn(db))
    marked.write(key, update, ("v2", user))
    assert marked.read(key, read, (user,)) == "v2"
    assert marked.sources["leader"] == 1 and marked.sources["follower"] == 0
    assert marked.read(key, read, (user,)) == "v2" and marked.sources["cache"] == 1
    lab.follower.set_delay(0)
    lab.follower.wait_replayed()
    cache.delete(key)
    assert marked.read(key, read, (user,)) == "v2"   # caught up: the marker is dropped
    assert marked.sources["follower"] == 1 and cache.get(f"{key}:marker") is None
    marked.close()


def test_lag_experiment_rows(lab, ryw_db):
    db = ryw_db[0]
    rows = lag.run(lab, db, delays_ms=(300,), strategies=("none", "lsn_wait"), users=2,
                   rounds=2, lsn_timeout_s=5.0)
    by = {r["strategy"]: r for r in rows}
    assert by["none"]["stale_rate"] == 1.0 and by["lsn_wait"]["stale_rate"] == 0.0
    assert by["lsn_wait"]["leader_read_share"] == 0.0
    assert lab.follower.delay_ms() == 0 and lab.postgres.synchronous_commit() == "local"
    assert "lsn_wait" in lag.table(rows)
