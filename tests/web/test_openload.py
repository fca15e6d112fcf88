"""OpenLoad: a fixed arrival rate, every request recorded, and a checker that can fail."""

from __future__ import annotations

import http.server
import threading
import time

import pytest

from labkit._proc import PortAllocator
from labkit.web.loadgen import OpenLoad


class _Server:
    """Answers 200; with the X-Release header unless ``anonymous`` (like a router's own 503)."""

    def __init__(self, delay_s: float = 0.0, anonymous: bool = False) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                time.sleep(delay_s)
                self.send_response(200)
                if not anonymous:
                    self.send_header("X-Release", "v1")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_requests_go_out_at_the_rate_whatever_the_server_takes():
    server = _Server(delay_s=0.2)      # slower than the gap between requests
    try:
        with OpenLoad("127.0.0.1", server.port, "/", rate_per_s=50, clients=32) as load:
            time.sleep(2)
        calls = load.calls
    finally:
        server.close()
    assert len(calls) == load.scheduled > 10 and load.unanswered() == []
    gaps = [b.due_s - a.due_s for a, b in zip(calls, calls[1:])]
    assert all(g == pytest.approx(0.02) for g in gaps)        # due times: a fixed schedule
    assert min(c.latency_ms for c in calls) >= 200             # counted from the due time
    assert load.share("v1") == 1.0


def test_the_checker_catches_refused_and_anonymous_answers():
    closed = PortAllocator("127.0.0.1").take()                 # nothing listens there
    with OpenLoad("127.0.0.1", closed, "/", rate_per_s=20) as load:
        time.sleep(0.5)
    assert load.calls and len(load.unanswered()) == len(load.calls)
    assert all(c.status == 0 and c.error for c in load.unanswered())
    server = _Server(anonymous=True)
    try:
        with OpenLoad("127.0.0.1", server.port, "/", rate_per_s=20) as load:
            time.sleep(0.5)
    finally:
        server.close()
    assert load.calls and all(c.status == 200 for c in load.calls)
    assert len(load.unanswered()) == len(load.calls)           # 200, but not from a pool


def test_bad_parameters_name_the_fix():
    with pytest.raises(ValueError, match="rate"):
        OpenLoad("127.0.0.1", 1, "/", rate_per_s=0)
    with pytest.raises(ValueError, match="client threads"):
        OpenLoad("127.0.0.1", 1, "/", rate_per_s=1, clients=0)
