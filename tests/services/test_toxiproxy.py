"""Distance between regions: Toxiproxy links carry real CQL, add their delay, and partition.

The session lab gets the ``regions`` topology (and with it Toxiproxy) the way a student's
notebook 10 does: ``lk.up(cassandra="regions")``. Delays are checked as lower bounds (a
round trip through a link delayed by d ms each way cannot take less than 2*d, however loaded
the machine), never as upper bounds on wall-clock time.
"""

from __future__ import annotations

import time

import pytest

import labkit as lk
from labkit.services.regions import RegionNetwork

pytestmark = pytest.mark.cassandra

QUERY = "SELECT release_version FROM system.local"


@pytest.fixture(scope="module")
def net(lab) -> RegionNetwork:
    network = lk.up(cassandra="regions", services=("postgres", "memcached")).regions
    yield network
    network.reset()


def _round_trips_ms(session, n: int = 8) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        session.execute(QUERY)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def test_status_shows_both_regions_and_every_link(net: RegionNetwork) -> None:
    lab = lk.up(cassandra="regions", services=("postgres", "memcached"))
    rows = {r["name"]: r for r in lab.health()}
    for name in ("cassandra-us-node1", "cassandra-eu-node1", "toxiproxy", "us-to-us",
                 "us-to-eu", "eu-to-us", "eu-to-eu"):
        assert rows[name]["ok"], rows[name]
    assert "40 ms/way" in rows["eu-to-us"]["version"]
    assert "0 ms/way" in rows["eu-to-eu"]["version"]


def test_the_driver_pays_the_configured_delay_across_regions(net: RegionNetwork) -> None:
    assert net.delay_ms_of("eu", "us") == 40
    cross = net.connect("eu", "us")
    local = net.connect("us", "us")
    # The driver talks to the proxy only: it never learns the cluster's own address.
    assert [h.endpoint.address for h in cross.cluster.metadata.all_hosts()] == ["127.0.0.1"]
    assert min(_round_trips_ms(cross)) >= 2 * 40
    assert min(_round_trips_ms(local)) < 2 * 40
    net.set_delay("eu", "us", 120)
    try:
        assert min(_round_trips_ms(cross, 4)) >= 2 * 120
    finally:
        net.set_delay("eu", "us", 40)
    cross.cluster.shutdown()
    local.cluster.shutdown()


def test_bytes_are_counted_per_link(net: RegionNetwork) -> None:
    before = net.settled_bytes_by_link()
    session = net.connect("us", "eu")
    _round_trips_ms(session, 3)
    session.cluster.shutdown()  # Toxiproxy counts a connection's bytes when it closes
    after = net.settled_bytes_by_link()
    assert after[("us", "eu")] > before[("us", "eu")]
    assert after[("eu", "us")] == before[("eu", "us")]


def test_a_partitioned_region_fails_fast_and_heals(net: RegionNetwork) -> None:
    from cassandra.cluster import NoHostAvailable

    session = net.connect("eu", "us", request_timeout_s=30)
    session.execute(QUERY)
    net.partition("us")
    try:
        t0 = time.perf_counter()
        with pytest.raises(NoHostAvailable):
            for _ in range(3):  # the closed connection is noticed on the first request
                session.execute(QUERY)
        # Refused, not timed out: far less than the 30 s request timeout a hang would take.
        assert time.perf_counter() - t0 < 15
        # Its own region's clients still reach it.
        local = net.connect("us", "us")
        local.execute(QUERY)
        local.cluster.shutdown()
    finally:
        net.heal("us")
    deadline = time.monotonic() + 30
    while True:  # the driver reconnects every second (ConstantReconnectionPolicy)
        try:
            session.execute(QUERY)
            break
        except NoHostAvailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    session.cluster.shutdown()
