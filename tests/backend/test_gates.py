"""Feature gates on the real PostgreSQL and Memcached: stable buckets, rollout, overrides, changes."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import uuid

import pytest

from labkit.backend.gates import BUCKETS, GateStore, bucket, decide


@pytest.fixture
def store(lab, pg_db):
    prefix = f"t{uuid.uuid4().hex[:8]}"
    s = GateStore(lab.leader.dsn(pg_db), lab.cache_servers, prefix=prefix, local_ttl_s=0)
    s.install()
    yield s
    s.close()


def inconsistent_users(answers: list[tuple[int, bool]]) -> set[int]:
    """The users who got different answers on different requests (the gate's checker)."""
    seen: dict[int, set[bool]] = {}
    for user_id, on in answers:
        seen.setdefault(user_id, set()).add(on)
    return {u for u, values in seen.items() if len(values) > 1}


def test_the_checker_catches_an_inconsistent_history():
    assert inconsistent_users([(1, True), (2, False), (1, True)]) == set()
    assert inconsistent_users([(1, True), (2, False), (1, False)]) == {1}


_BUCKETS_IN_A_PROCESS = ("import sys; from labkit.backend.gates import bucket; "
                         "print([bucket('g', u) for u in range(1, 200)])")
_BROKEN_IN_A_PROCESS = "print([hash(('g', str(u))) % 10000 for u in range(1, 200)])"


def _in_fresh_process(code: str, hashseed: str) -> list[int]:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return eval(out.stdout)


def test_a_users_bucket_is_the_same_in_every_process():
    answers = [_in_fresh_process(_BUCKETS_IN_A_PROCESS, seed) for seed in ("1", "2", "random")]
    assert answers[0] == answers[1] == answers[2] == [bucket("g", u) for u in range(1, 200)]
    # The mistake this avoids: Python's hash() of a string is salted per process, so two
    # gunicorn workers would put the same user in different buckets.
    broken = [_in_fresh_process(_BROKEN_IN_A_PROCESS, seed) for seed in ("1", "2")]
    assert broken[0] != broken[1]


def test_percentages_pick_that_share_of_users_and_only_add_users():
    users = range(1, 20_001)
    on_at = {p: {u for u in users if decide({"percent": p, "overrides": {}}, "g", u)}
             for p in (1, 10, 50, 100)}
    for p, on in on_at.items():
        sd = math.sqrt(len(users) * p / 100 * (1 - p / 100))
        assert abs(len(on) - len(users) * p / 100) <= 4 * sd + 1, (p, len(on))
    assert on_at[1] <= on_at[10] <= on_at[50] <= on_at[100] == set(users)
    # Each gate picks its own users.
    other = {u for u in users if decide({"percent": 10, "overrides": {}}, "h", u)}
    assert len(other & on_at[10]) < 0.2 * len(on_at[10])
    assert 0 <= min(bucket("g", u) for u in users) and max(bucket("g", u) for u in users) < BUCKETS


def test_define_override_and_unknown_gates(store):
    assert store.enabled("not_defined_yet", 1) is False
    store.define("new_feed", percent=0)
    assert not any(store.enabled("new_feed", u) for u in range(1, 500))
    store.override("new_feed", 42, True)
    store.override("new_feed", 43, False)
    store.set_percent("new_feed", 100)
    assert store.enabled("new_feed", 42) and not store.enabled("new_feed", 43)
    assert store.enabled("new_feed", 44)
    store.override("new_feed", 43, None)
    assert store.enabled("new_feed", 43)
    with pytest.raises(KeyError, match="define"):
        store.set_percent("missing", 5)
    with pytest.raises(ValueError, match="lower-case"):
        store.define("New Feed")
    with pytest.raises(ValueError, match="0 to 100"):
        store.set_percent("new_feed", 120)


def test_a_change_is_seen_by_every_store_at_once_through_memcached(lab, store):
    other = GateStore(store.db.dsn, lab.cache_servers, prefix=store.prefix, local_ttl_s=0)
    store.define("compact", percent=0)
    assert not other.enabled("compact", 7)            # now cached in memcached: off
    assert other.cache.get(other.key("compact")) == {"percent": 0.0, "overrides": {}}
    store.override("compact", 7, True)                 # commit, then delete the item
    assert other.enabled("compact", 7)                 # the next read refills from PostgreSQL
    # The same answer every time for every user while nothing changes.
    answers = [(u, other.enabled("compact", u)) for _ in range(3) for u in range(1, 300)]
    assert inconsistent_users(answers) == set()
    other.close()


def test_a_worker_sees_a_change_once_its_local_copy_expires(lab, store, monkeypatch):
    import labkit.backend.gates as gates
    now = [1000.0]
    monkeypatch.setattr(gates.time, "monotonic", lambda: now[0])
    worker = GateStore(store.db.dsn, lab.cache_servers, prefix=store.prefix, local_ttl_s=1.0)
    store.define("compact", percent=0)
    assert not worker.enabled("compact", 7)
    store.set_percent("compact", 100)
    now[0] += 0.9
    assert not worker.enabled("compact", 7)            # its copy is 0.9 s old: still kept
    now[0] += 0.2
    assert worker.enabled("compact", 7)                # 1.1 s: asks memcached, sees it
    worker.close()
