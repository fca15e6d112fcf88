"""ClientLink on the real servers: a Toxiproxy link to the session's Memcached, cut and healed."""

from __future__ import annotations

import socket

import pytest

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
