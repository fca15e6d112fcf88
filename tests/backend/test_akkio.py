"""Akkio-style placement on the real regional clusters, location database and cache.

The session lab gets the ``regions`` topology (Toxiproxy links, 40 ms each way between
regions), PostgreSQL and Memcached; each test uses users of its own in one keyspace.
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest

import labkit as lk
from labkit.backend.akkio import (AccessCounters, AkkioClient, Fenced, Location,
                                  LocationCache, LocationDB, MigrationPolicy, PlacementService,
                                  RegionStore, RegionUnavailable, cache_prefix, sign_up)
from labkit.backend.cache import connect_cache

KEYSPACE = "akkio_test"
_users = itertools.count(1000)


# ------------------------------------------------------------------------- the policy alone
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_counters_forget_what_left_the_window() -> None:
    clock = Clock()
    counters = AccessCounters(window_s=10, clock=clock)
    for _ in range(3):
        counters.record(1, "eu")
    clock.now = 5
    assert counters.record(1, "us") == {"eu": 3, "us": 1}
    clock.now = 12
    assert counters.counts(1) == {"us": 1}


def test_a_short_trip_moves_nothing_a_long_stay_moves_the_user() -> None:
    policy = MigrationPolicy(threshold=10, ratio=2, min_stay_s=5)
    assert policy.decide({"us": 2, "eu": 9}, home="us", stayed_s=60) is None   # short trip
    assert policy.decide({"us": 2, "eu": 10}, home="us", stayed_s=60) == "eu"
    assert policy.decide({"us": 6, "eu": 10}, home="us", stayed_s=60) is None  # home still asks
    assert policy.decide({"us": 0, "eu": 50}, home="us", stayed_s=1) is None   # just moved
    with pytest.raises(ValueError, match="ratio"):
        MigrationPolicy(ratio=0.5)


# ---------------------------------------------------------------------- on the real servers
@pytest.fixture(scope="module")
def world(lab):
    lab = lk.up(cassandra="regions", services=("postgres", "memcached"))
    dbname = lab.postgres.create_database("akkio_test", replace=True)
    svc = PlacementService.for_lab(lab, dbname=dbname, keyspace=KEYSPACE).start()
    net = lab.regions
    stores = {c: {r: RegionStore(r, net.connect(c, r), KEYSPACE) for r in net.regions}
              for c in net.regions}
    for s in stores["us"].values():
        s.create()
    for s in stores["eu"].values():
        s._prepare()
    db = LocationDB(lab.leader.dsn(dbname))
    yield {"lab": lab, "svc": svc, "stores": stores, "db": db, "net": net,
           "clients": {r: AkkioClient(r, stores[r], svc.client()) for r in net.regions},
           "cache": LocationCache(connect_cache(lab.cache_servers), cache_prefix(KEYSPACE))}
    svc.stop()
    net.close()
    lab.postgres.drop_database(dbname)


def _new_user(world, region: str = "us", items: int = 3) -> int:
    user = next(_users)
    sign_up(world["db"], world["stores"][region], user, region)
    for i in range(items):
        world["clients"][region].append(user, i)
    return user


def test_data_is_found_after_a_migration(world) -> None:
    user = _new_user(world, "us", items=5)
    assert world["clients"]["eu"].read(user) == [4, 3, 2, 1, 0]
    assert world["clients"]["eu"].records[-1].crossed == 1
    moved = world["svc"].client().migrate(user, "eu")
    assert moved["moved"] and moved["rows"] == 5 and moved["version"] == 2
    assert world["clients"]["eu"].read(user) == [4, 3, 2, 1, 0]
    rec = world["clients"]["eu"].records[-1]
    assert (rec.served_by, rec.crossed, rec.stale) == ("eu", 0, 0)
    with pytest.raises(Fenced):  # the old copy is gone
        world["stores"]["us"]["us"].read(user, 1)
    assert world["db"].get(user) == Location(user, "eu", 2, False)


def test_a_half_copied_region_serves_nothing(world) -> None:
    user = _new_user(world, "us", items=2)
    dst = world["stores"]["eu"]["eu"]
    dst.load(user, 2, world["stores"]["eu"]["us"].export(user))
    with pytest.raises(Fenced, match="copying"):
        dst.read(user, 2)
    with pytest.raises(Fenced):
        dst.append(user, 2, 99)
    dst.drop(user)


def test_a_write_during_the_migration_is_not_lost(world) -> None:
    user = _new_user(world, "us", items=20)
    writer = AkkioClient("us", world["stores"]["us"], world["svc"].client())
    acked, stop = [], threading.Event()

    def write() -> None:
        for media_id in itertools.count(100):
            if stop.is_set():
                return
            t0 = time.monotonic()
            writer.append(user, media_id)
            acked.append((media_id, t0, time.monotonic()))

    thread = threading.Thread(target=write)
    thread.start()
    while len(acked) < 3:
        time.sleep(0.01)
    started = time.monotonic()
    world["svc"].client().migrate(user, "eu")
    ended = time.monotonic()
    time.sleep(0.3)
    stop.set()
    thread.join()
    during = [m for m, t0, t1 in acked if t0 < ended and t1 > started]
    assert during, "no write overlapped the migration: the test did not test it"
    after = [m for m, t0, t1 in acked if t0 > ended]
    assert after
    found = set(world["clients"]["eu"].read(user, limit=10_000))
    assert {m for m, *_ in acked} <= found
    assert set(range(20)) <= found
    # Writes sent to the old region during the move were refused there and sent again.
    assert any(r.stale or r.served_by == "eu" for r in writer.records)


def test_a_stale_cache_entry_is_detected_and_re_resolved(world) -> None:
    user = _new_user(world, "us", items=2)
    world["svc"].client().migrate(user, "eu")
    # A lookup that raced the move left the old location in the cache.
    world["cache"].put(Location(user, "us", 1))
    client = world["clients"]["eu"]
    assert client.read(user) == [1, 0]
    rec = client.records[-1]
    assert rec.cache == "hit"          # the stale entry was used...
    assert rec.stale == 1              # ...the old region refused it...
    assert rec.crossed == 1            # ...after one request across to it...
    assert rec.served_by == "eu"       # ...and the re-resolved location served the read
    assert world["cache"].get(user) == Location(user, "eu", 2)


def test_a_partitioned_region_fails_fast_with_a_clear_error(world) -> None:
    user = _new_user(world, "us", items=1)
    client = world["clients"]["eu"]
    client.read(user)
    world["net"].partition("us")
    try:
        t0 = time.monotonic()
        with pytest.raises(RegionUnavailable, match=r"region us.*heal\('us'\)"):
            for _ in range(3):
                client.read(user)
        assert time.monotonic() - t0 < 10  # the driver's request timeout is 10 s: no hang
        assert world["clients"]["us"].read(user) == [0]  # its own region still serves it
    finally:
        world["net"].heal("us")
    deadline = time.monotonic() + 30
    while True:
        try:
            assert client.read(user) == [0]
            break
        except RegionUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_the_service_moves_a_user_that_keeps_being_asked_from_afar(world) -> None:
    lab = world["lab"]
    svc = PlacementService.for_lab(lab, dbname="akkio_test", keyspace=KEYSPACE,
                                   policy=MigrationPolicy(threshold=5, ratio=2, min_stay_s=0),
                                   window_s=30).start()
    try:
        user = _new_user(world, "us", items=1)
        client = AkkioClient("eu", world["stores"]["eu"], svc.client())
        deadline = time.monotonic() + 60
        while world["db"].get(user).region != "eu":
            client.read(user)
            assert time.monotonic() < deadline, svc.client().stats()
        assert svc.client().stats()["migrations"] == 1
        for _ in range(3):
            client.read(user)
        assert client.records[-1].served_by == "eu" and client.records[-1].crossed == 0
    finally:
        svc.stop()
