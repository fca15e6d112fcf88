"""The router: a real HAProxy from the lab's own config, weights and states through its runtime API.

The backends here are tiny HTTP servers in this process (the pools are tested in
test_rollout.py); what is under test is HAProxy and how labkit drives it.
"""

from __future__ import annotations

import collections
import http.client
import http.server
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from labkit._proc import PortAllocator, listening, service_account
from labkit.cli import doctor_checks
from labkit.config import LabConfig
from labkit.deploy.router import Router, RouterError


class _Backend:
    """An HTTP server answering its own name, after ``delay_s``."""

    def __init__(self, port: int, name: str, delay_s: float = 0.0) -> None:
        outer = self
        self.health_delay_s = 0.0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                time.sleep(outer.health_delay_s if self.path == "/healthz" else outer.delay_s)
                body = name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.delay_s = delay_s
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def router(fresh_lab_dir):
    r = Router(fresh_lab_dir / f"router-{uuid.uuid4().hex[:6]}",
               user=service_account(LabConfig.load().service_user))
    r.start()
    backends = {s: _Backend(r.slot_ports[s], s) for s in r.slots}
    yield r, backends
    r.stop()
    for b in backends.values():
        b.close()
    assert not listening(r.host, r.port)


def _get(router: Router, n: int) -> collections.Counter:
    seen: collections.Counter = collections.Counter()
    conn = http.client.HTTPConnection(router.host, router.port, timeout=10)
    for _ in range(n):
        conn.request("GET", "/")
        resp = conn.getresponse()
        seen[resp.read().decode()] += 1
    conn.close()
    return seen


def test_haproxy_runs_from_the_labs_config_as_the_labs_account(router):
    r, _ = router
    assert r.ready() and r.info()["Name"] == "HAProxy"
    assert str(r.config_path).startswith(str(r.workdir)) and r.socket_path.exists()
    proc = r.procs[0].process()
    if os.geteuid() == 0:  # as root, HAProxy runs unprivileged
        assert proc.username() != "root"
    assert all(addr.startswith("127.0.0.1:") for addr in
               [r.address, *(f"127.0.0.1:{p}" for p in r.slot_ports.values())])


def near(count: int, n: int, share: float) -> bool:
    """``count`` of ``n`` weighted-random picks is within 4 standard deviations of ``share``."""
    return abs(count - n * share) <= 4 * (n * share * (1 - share)) ** 0.5 + 1


def test_slots_start_out_of_service_and_weights_split_requests(router):
    r, _ = router
    assert {row["status"] for row in r.stats().values()} == {"MAINT"}
    r.enable("a", weight=90)
    r.enable("b", weight=10)
    assert r.weights() == {"a": 90, "b": 10, **{s: 0 for s in r.slots if s not in "ab"}}
    got = _get(r, 400)
    assert set(got) == {"a", "b"} and near(got["b"], 400, 0.10)
    r.set_weights({"a": 50, "b": 50})
    assert near(_get(r, 400)["b"], 400, 0.5)


def test_shares_follow_the_weights_after_a_slot_went_to_zero():
    # A rollout's sequence; on HAProxy 2.6.12 `balance roundrobin` split the second 50/50
    # step 51:249. With weighted random each step gets its shares.
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        os.chmod(d, 0o755)
        r = Router(Path(d) / "r", slots=("a", "b", "c"),
                   user=service_account(LabConfig.load().service_user))
        r.start()
        backends = [_Backend(r.slot_ports[s], s) for s in r.slots]
        try:
            r.enable("a", 100), r.enable("b"), r.enable("c")
            for weights in [(98, 1, 1), (80, 10, 10), (0, 50, 50), (80, 10, 10), (0, 50, 50)]:
                r.set_weights(dict(zip("abc", weights)))
                got = _get(r, 300)
                for slot, w in zip("abc", weights):
                    assert near(got.get(slot, 0), 300, w / 100), (weights, got)
        finally:
            r.stop()
            for b in backends:
                b.close()


def test_a_slot_can_be_pointed_at_another_port(router):
    r, backends = router
    moved = _Backend(PortAllocator(r.host).take(), "moved")
    try:
        r.point("a", moved.server.server_address[1])
        r.enable("a", weight=100)          # the health check follows the new port too
        assert _get(r, 5) == {"moved": 5}
        assert r.stats()["a"]["addr"] == f"127.0.0.1:{moved.server.server_address[1]}"
    finally:
        moved.close()


def test_a_busy_pool_is_not_taken_out_of_service(router):
    # Found on a loaded machine: production's probe answered after 500 ms (its workers were
    # busy), HAProxy marked it DOWN and answered 503 itself. A probe finds dead pools only.
    r, backends = router
    r.enable("a", weight=100)
    backends["a"].health_delay_s = 1.0
    time.sleep(5 * (1.0 + r.check_ms / 1000))          # several slow probes in a row
    assert r.stats()["a"]["status"].startswith("UP")
    assert _get(r, 5) == {"a": 5}
    backends["a"].close()                              # a dead pool is still found
    deadline = time.monotonic() + 15
    while r.stats()["a"]["status"].startswith("UP") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert r.stats()["a"]["status"].startswith("DOWN")


def test_drain_waits_for_the_request_in_flight(router):
    r, backends = router
    r.enable("a", weight=50)
    r.enable("b", weight=50)
    backends["b"].delay_s = 1.5
    answers: list[str] = []

    def slow_client() -> None:
        while "b" not in answers:  # until one went to b (and took 1.5 s)
            answers.extend(_get(r, 1).elements())

    t = threading.Thread(target=slow_client)
    t.start()
    deadline = time.monotonic() + 5
    while r.stats()["b"]["scur"] == "0" and time.monotonic() < deadline:
        time.sleep(0.01)
    row = r.drain("b")                    # returns only once b has no session left
    assert row["scur"] == "0" and answers.count("b") == 1
    t.join()
    assert r.stats()["b"]["status"] == "MAINT"
    assert _get(r, 20) == {"a": 20}         # nothing goes to b any more


def test_bad_requests_are_refused_with_the_fix(router):
    r, _ = router
    with pytest.raises(ValueError, match="0 to 256"):
        r.set_weights({"a": 300})
    with pytest.raises(ValueError, match="this router has slots"):
        r.set_weights({"z": 1})
    with pytest.raises(ValueError, match="choose one of"):
        r.set_state("a", "up")
    with pytest.raises(RouterError, match="No such server"):
        r._command("set weight pools/nope 1")


def test_doctor_checks_haproxy():
    (row,) = [c for c in doctor_checks(LabConfig.load()) if c[0] == "haproxy"]
    assert row[1], row
