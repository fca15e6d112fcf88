"""Read-your-writes on a real leader and follower with an injected replay delay."""

from __future__ import annotations

import itertools
import uuid

import pytest
from pymemcache.client.base import Client

from labkit.backend.replication import ReadRouter, RemoteMarkerCache, install
from labkit.experiments import lag

WRITE = "INSERT INTO ryw_likes (user_id, media_id) VALUES (%s, %s)"
READ = "SELECT count(*) FROM ryw_likes WHERE user_id = %s AND media_id = %s"


@pytest.fixture
def ryw_db(lab, pg_db):
    """pg_db with the demo tables, replicated, and the follower's delay reset afterwards."""
    with lab.leader.connect(pg_db) as conn:
        install(conn)
    assert lag.catch_up(lab)
    yield pg_db
    lab.follower.set_delay(0)
    lab.postgres.set_synchronous_commit("local")


def write_then_read(router: ReadRouter, cycles: int) -> list[bool]:
    """``cycles`` likes, each read back at once; True where the read missed the like."""
    stale, media_ids = [], itertools.count(1)
    for _ in range(cycles):
        media_id = next(media_ids)
        router.write(7, WRITE, (7, media_id))
        ((seen,),) = router.read(7, READ, (7, media_id))
        stale.append(seen == 0)
    return stale


def test_stale_reads_without_a_strategy(lab, ryw_db):
    lab.follower.set_delay(500)
    with ReadRouter(lab.leader.dsn(ryw_db), lab.follower.dsn(ryw_db), "none") as router:
        stale = write_then_read(router, 5)
        assert router.stats.leader_reads == 0
    assert all(stale), "a follower 500 ms behind showed a write it had not replayed yet"


def test_lsn_wait_never_reads_stale_at_500ms_lag(lab, ryw_db):
    lab.follower.set_delay(500)
    with ReadRouter(lab.leader.dsn(ryw_db), lab.follower.dsn(ryw_db), "lsn_wait",
                    lsn_timeout_s=5.0) as router:
        stale = write_then_read(router, 5)
        assert router.stats.follower_reads == 5 and router.stats.lsn_fallbacks == 0
    assert not any(stale)


def test_lsn_wait_falls_back_to_the_leader_after_its_timeout(lab, ryw_db):
    lab.follower.set_delay(1000)
    with ReadRouter(lab.leader.dsn(ryw_db), lab.follower.dsn(ryw_db), "lsn_wait",
                    lsn_timeout_s=0.05) as router:
        stale = write_then_read(router, 3)
        assert router.stats.lsn_fallbacks == 3 and router.last_source == "leader"
    assert not any(stale)


def test_pin_reads_the_leader_after_a_write_then_the_follower(lab, ryw_db):
    lab.follower.set_delay(500)
    with ReadRouter(lab.leader.dsn(ryw_db), lab.follower.dsn(ryw_db), "pin",
                    pin_s=30) as router:
        assert not any(write_then_read(router, 3))
        assert router.last_source == "leader"
        router.read(8, READ, (8, 1))  # a user who wrote nothing reads the follower
        assert router.last_source == "follower"


def test_remote_apply_makes_the_follower_current_at_commit(lab, ryw_db):
    with pytest.raises(RuntimeError, match="set_synchronous_commit"):
        ReadRouter(lab.leader.dsn(ryw_db), lab.follower.dsn(ryw_db), "remote_apply")
    lab.postgres.set_synchronous_commit("remote_apply")
    lab.follower.set_delay(200)
    with ReadRouter(lab.leader.dsn(ryw_db), lab.follower.dsn(ryw_db), "remote_apply") as router:
        assert not any(write_then_read(router, 3))
        assert router.stats.leader_reads == 0


def test_remote_marker_sends_the_next_miss_to_the_leader(lab, ryw_db):
    cache = Client(lab.cache_servers[0])
    key = f"bio:{uuid.uuid4().hex[:8]}"
    lab.leader.execute("INSERT INTO ryw_profiles (user_id, bio) VALUES (7, 'old')", dbname=ryw_db)
    assert lag.catch_up(lab)
    lab.follower.set_delay(500)
    update = "UPDATE ryw_profiles SET bio = %s WHERE user_id = 7"
    read = "SELECT bio FROM ryw_profiles WHERE user_id = 7"

    plain = RemoteMarkerCache(cache, lab.leader.dsn(ryw_db), lab.follower.dsn(ryw_db),
                              use_marker=False)
    plain.write(key, update, ("v1",))
    assert plain.read(key, read) == "old"          # refilled from the stale follower
    assert plain.read(key, read) == "old"          # ... and the cache now serves the stale value
    plain.close()

    marked = RemoteMarkerCache(cache, lab.leader.dsn(ryw_db), lab.follower.dsn(ryw_db))
    marked.write(key, update, ("v2",))
    assert marked.read(key, read) == "v2"
    assert marked.sources["leader"] == 1 and marked.sources["follower"] == 0
    assert marked.read(key, read) == "v2" and marked.sources["cache"] == 1
    lab.follower.set_delay(0)
    assert lag.catch_up(lab)
    cache.delete(key)
    assert marked.read(key, read) == "v2"          # caught up: the marker is dropped
    assert marked.sources["follower"] == 1 and cache.get(f"{key}:marker") is None
    marked.close()


def test_lag_experiment_rows(lab, ryw_db):
    rows = lag.run(lab, ryw_db, delays_ms=(300,), strategies=("none", "lsn_wait"), users=2,
                   rounds=2, lsn_timeout_s=5.0)
    by = {r["strategy"]: r for r in rows}
    assert by["none"]["stale_rate"] == 1.0 and by["lsn_wait"]["stale_rate"] == 0.0
    assert by["lsn_wait"]["leader_read_share"] == 0.0
    assert lab.follower.delay_ms() == 0 and lab.postgres.synchronous_commit() == "local"
    assert "lsn_wait" in lag.table(rows)
