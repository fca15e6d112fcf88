"""Memcached on the real server: plain set/get and the meta protocol's lease flags."""

import socket
import uuid

from pymemcache.client.base import Client


def _key(prefix="k"):
    return f"{prefix}:{uuid.uuid4().hex[:12]}"


def test_set_get(lab):
    cache = Client(lab.cache_servers[0], connect_timeout=2, timeout=2)
    key = _key()
    assert cache.get(key) is None
    cache.set(key, b"42", expire=30)
    assert cache.get(key) == b"42"
    cache.delete(key)
    assert cache.get(key) is None


def _mg(host_port, key):
    with socket.create_connection(host_port, timeout=2) as s:
        s.sendall(f"mg {key} v c N30\r\n".encode())
        data = b""
        while data.count(b"\r\n") < 2:  # header line, then the (empty) value line
            data += s.recv(4096)
    return data.split(b"\r\n")[0].split()


def test_meta_get_vivify_answers_w_then_z(lab):
    key = _key("hot")
    first = _mg(lab.cache_servers[0], key)
    second = _mg(lab.cache_servers[0], key)
    assert first[0] == b"VA" and b"W" in first, first     # first client wins the refill
    assert second[0] == b"VA" and b"Z" in second and b"W" not in second, second  # others wait


def test_version_is_1_6(lab):
    assert lab.memcached[0].version().startswith("1.6")
