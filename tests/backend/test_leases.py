"""Leases on the real memcached: one refill per expiry, tokens, W/Z/X, stale windows."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from labkit.backend import leases as L
from labkit.experiments import herd


@pytest.fixture
def herd_dsn(lab, pg_db):
    return herd.prepare(lab.leader, pg_db)


def _key() -> str:
    return f"t{uuid.uuid4().hex[:10]}:likes:42"


@pytest.mark.parametrize("kind", ["tokens", "meta", "coalescing"])
def test_one_query_per_expiry_at_64_clients(lab, herd_dsn, kind):
    r = herd.run_herd(herd_dsn, lab.cache_servers, clients=64, lease=kind, rounds=2)
    assert r["errors"] == 0, r["error_samples"]
    assert r["queries"] == [1, 1]        # counted by PostgreSQL (pg_stat_statements)
    assert r["client_loads"] == [1, 1]


def test_without_protection_the_herd_queries_more_than_once(lab, herd_dsn):
    r = herd.run_herd(herd_dsn, lab.cache_servers, clients=64, lease="none", rounds=2)
    assert r["errors"] == 0, r["error_samples"]
    assert all(q > 1 for q in r["queries"]), r["queries"]


def test_token_set_needs_the_valid_token_and_delete_cancels_it(lab):
    lease, key = L.make_lease("tokens", lab.cache_servers), _key()
    token = L.LEASE_MARK + b"mine"
    assert lease.cache.add(key, token, expire=10, noreply=False)
    # One token per key per lease_ttl_s: a second client cannot take another.
    assert not lease.cache.add(key, L.LEASE_MARK + b"other", expire=10, noreply=False)
    assert not lease.set_with_token(key, L.LEASE_MARK + b"forged", 1, ttl_s=60)
    lease.invalidate(key)                                   # a write deletes: token cancelled
    assert not lease.set_with_token(key, token, 1, ttl_s=60)
    assert lease.get(key) is None
    assert lease.cache.add(key, token, expire=10, noreply=False)
    assert lease.set_with_token(key, token, 2, ttl_s=60)
    assert lease.get(key) == 2


def test_meta_win_then_z_then_cas_guarded_set(lab):
    from meta_memcache import Key, RequestFlags
    lease, key = L.make_lease("meta", lab.cache_servers), _key()
    first = lease.client.meta_get(Key(key), flags=lease._get_flags)
    second = lease.client.meta_get(Key(key), flags=lease._get_flags)
    assert first.flags.win is True and second.flags.win is False        # W, then Z
    stale_cas = RequestFlags(cache_ttl=60, cas_token=first.flags.cas_token + 1000)
    assert not L._is_success(lease.client.meta_set(Key(key), b"1", flags=stale_cas))
    ok = RequestFlags(cache_ttl=60, cas_token=first.flags.cas_token)
    assert L._is_success(lease.client.meta_set(Key(key), b"7", flags=ok))
    assert lease.get(key) == 7


@pytest.mark.parametrize("kind", ["tokens", "meta"])
def test_stale_value_only_within_its_window_and_never_after_a_newer_set(lab, kind):
    lease = L.make_lease(kind, lab.cache_servers, allow_stale=True, max_wait_s=0.05)
    key = _key()
    assert lease.read(key, lambda: 1, ttl_s=60) == 1
    lease.invalidate(key, stale_s=2)
    # A refill is under way (its lease is taken and not finished): others get the old value.
    refilling, release = threading.Event(), threading.Event()

    def slow_load():
        refilling.set()
        release.wait(5)
        return 2

    t = threading.Thread(target=lease.read, args=(key, slow_load, 60))
    t.start()
    assert refilling.wait(5)
    assert lease.read(key, lambda: pytest.fail("a waiter must not query"), ttl_s=60) == 1
    assert lease.stats.stale_served == 1
    release.set()
    t.join(5)
    # The newer value is set: the stale one is never served again.
    assert lease.read(key, lambda: pytest.fail("hit expected"), ttl_s=60) == 2
    lease.invalidate(key)                      # a plain delete: no stale copy kept
    assert lease.read(key, lambda: 3, ttl_s=60) == 3

    # Past the window the stale value is gone: a reader waits, then loads the fresh value.
    lease.invalidate(key, stale_s=1)
    other = L.make_lease(kind, lab.cache_servers, allow_stale=True, max_wait_s=0.05)
    time.sleep(2.1)   # memcached expires items on whole-second boundaries
    assert other.read(key, lambda: 4, ttl_s=60) == 4
    assert other.stats.stale_served == 0


def test_coalescing_shares_one_refill_between_threads(lab):
    lease, key = L.make_lease("coalescing", lab.cache_servers), _key()
    calls, gate = [], threading.Barrier(16)

    def load():
        calls.append(1)
        time.sleep(0.05)
        return 5

    results = []

    def client():
        gate.wait()
        results.append(lease.read(key, load, ttl_s=60))

    threads = [threading.Thread(target=client) for _ in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert results == [5] * 16 and len(calls) == 1


def test_unknown_kind_names_the_choices(lab):
    with pytest.raises(ValueError, match="none, tokens, meta, coalescing"):
        L.make_lease("zookeeper", lab.cache_servers)
