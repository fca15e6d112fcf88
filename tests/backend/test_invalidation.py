"""The invalidation service on the real servers: the right key, and catch-up after a stop."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest

from labkit.backend import cache as c
from labkit.backend.invalidation import InvalidationService, keys_for_change, parse_commit_time


def test_parses_test_decoding_lines():
    line = "table public.media_likes: UPDATE: media_id[bigint]:42 count[bigint]:7"
    assert keys_for_change(line, "ig") == ["ig:likes:42"]
    assert keys_for_change("table public.profiles: DELETE: user_id[bigint]:3", "p") == ["p:profile:3"]
    assert keys_for_change("table public.other: INSERT: id[integer]:1", "ig") == []
    ts = parse_commit_time("COMMIT 731 (at 2026-11-21 14:50:00.25+00)")
    assert ts == dt.datetime(2026, 11, 21, 14, 50, 0, 250000, tzinfo=dt.timezone.utc).timestamp()
    assert parse_commit_time("COMMIT 731 (at 2026-11-21 20:20:00.25+05:30)") == ts


@pytest.fixture
def service(lab, pg_db):
    with lab.leader.connect(pg_db) as conn:
        c.install(conn)
        c.seed(conn, media=20, users=5)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    svc = InvalidationService.for_lab(lab, dbname=pg_db, prefix=prefix)
    svc.start()
    yield svc
    svc.stop()
    svc.drop_slot()


def test_update_deletes_exactly_the_affected_key(lab, pg_db, service):
    mc = c.connect_cache(lab.cache_servers)
    p = service.prefix
    for k in (f"{p}:likes:7", f"{p}:likes:8", f"{p}:profile:7"):
        mc.set(k, b"1", noreply=False)
    lab.leader.execute("UPDATE media_likes SET count = count + 1 WHERE media_id = 7", dbname=pg_db)
    [record] = service.wait_for_commits(1)
    assert record["keys"] == [f"{p}:likes:7"]
    assert record["delay_ms"] >= 0
    assert mc.get(f"{p}:likes:7") is None
    assert mc.get(f"{p}:likes:8") == b"1" and mc.get(f"{p}:profile:7") == b"1"


def test_catches_up_on_changes_made_while_stopped(lab, pg_db, service):
    mc = c.connect_cache(lab.cache_servers)
    p = service.prefix
    service.stop()
    assert not service.running()
    for media_id in (3, 4, 5):
        mc.set(f"{p}:likes:{media_id}", b"1", noreply=False)
        lab.leader.execute("UPDATE media_likes SET count = count + 1 WHERE media_id = %s",
                           (media_id,), dbname=pg_db)
    lab.leader.execute("DELETE FROM profiles WHERE user_id = 2", dbname=pg_db)
    mc.set(f"{p}:profile:2", b"x", noreply=False)
    time.sleep(0.1)
    assert mc.get(f"{p}:likes:3") == b"1"           # nobody is deleting while it is down
    service.start()
    records = service.wait_for_commits(4)
    assert [r["keys"] for r in records] == [[f"{p}:likes:3"], [f"{p}:likes:4"],
                                            [f"{p}:likes:5"], [f"{p}:profile:2"]]
    assert all(mc.get(f"{p}:likes:{m}") is None for m in (3, 4, 5))
    assert mc.get(f"{p}:profile:2") is None


def test_readiness_is_a_real_check(lab, service):
    assert service.ready()
    service.stop()
    assert not service.ready()
