"""ClientLink on the real servers: a Toxiproxy link to the session's Memcached, cut and healed."""

from __future__ import annotations

import socket
import uuid

import pytest

from labkit.backend import feeds
from labkit.backend.leases import make_lease
from labkit.backend.links import ClientLink
from labkit.services.memcached import memcached_command


def version(address: tuple[str, int]) -> bytes:
    return memcached_command(*address, b"version\r\n", timeout_s=5.0)


def test_a_cut_link_cuts_only_its_client_off_and_a_healed_one_carries_it_again(lab):
    link = ClientLink(lab.config.lab_dir / "links-test", "test-to-memcached",
                      upstreams=lab.cache_servers).start()
    try:
        address, = link.addresses
        assert address[0] == "127.0.0.1" and address != lab.cache_servers[0]
        assert version(address).startswith(b"VERSION ")
        # a helper of the lab: `labkit status` lists it, and checks it over its API
        row = {r["name"]: r for r in lab.helper_health()}[link.name]
        assert row["ok"] and row["kind"] == "toxiproxy", row

        open_conn = socket.create_connection(address, timeout=5.0)  # made before the cut...
        open_conn.sendall(b"version\r\n")
        assert open_conn.recv(100).startswith(b"VERSION ")
        link.cut()
        assert link.is_cut()
        with pytest.raises(OSError):            # ...new ones are refused
            version(address)
        try:                                    # ...and the open one was closed
            open_conn.sendall(b"version\r\n")
            assert open_conn.recv(100) == b""
        except OSError:
            pass                                # reset by the proxy: closed too
        finally:
            open_conn.close()
        assert lab.memcached[0].ready()         # the server itself still answers others

        link.heal()
        assert not link.is_cut() and version(address).startswith(b"VERSION ")
    finally:
        link.stop()
    assert link.name not in {r["name"] for r in lab.helper_health()}


def test_a_feed_page_is_read_from_its_source_while_the_client_is_cut_off(lab):
    """The web tier's page cache through a cut link: the page comes from its load, no error;
    a load that fails is not tried twice (that error is Cassandra's, not the cache's)."""
    link = ClientLink(lab.config.lab_dir / "links-feed-test", "feed-to-memcached",
                      upstreams=lab.cache_servers).start()
    try:
        cache = feeds.FeedCache(make_lease("meta", link.addresses),
                                prefix=f"cut{uuid.uuid4().hex[:6]}")
        page = feeds.FeedPage([feeds.FeedItem(1, 2)], None)
        loads: list[int] = []

        def load(viewer_id: int) -> feeds.FeedPage:
            loads.append(viewer_id)
            return page

        assert cache.first_page(7, lambda: load(7)) == page
        assert cache.first_page(7, lambda: load(7)) == page and loads == [7]  # cached
        link.cut()
        assert cache.first_page(7, lambda: load(7)) == page and loads == [7, 7]

        def broken() -> feeds.FeedPage:
            loads.append(-1)
            raise RuntimeError("cassandra timed out")
        link.heal()  # a new client: the old one keeps away from the server for 5 s
        cache = feeds.FeedCache(make_lease("meta", link.addresses), prefix=cache.prefix)
        with pytest.raises(RuntimeError, match="cassandra"):
            cache.first_page(8, broken)
        assert loads.count(-1) == 1
    finally:
        link.stop()
