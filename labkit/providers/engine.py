"""Whether a Docker engine answers, without the Docker SDK (``labkit doctor``, the docker provider).

``labkit doctor`` asks the engine named by ``config.docker_host`` (``DOCKER_HOST``, else
``unix:///var/run/docker.sock``) for ``/_ping`` and ``/version`` over its HTTP API. These few
lines rather than the SDK: a native lab's doctor stays free of the SDK's import (and works
where the docker extras are not installed), and says why the provider cannot run.
"""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import urlsplit


INSTALL = ("install a Docker engine (`apt-get install docker.io`, then start dockerd) or point "
           "docker_host (LABKIT_DOCKER_HOST, or DOCKER_HOST) at one")


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket: how the Docker engine listens by default."""

    def __init__(self, path: str, timeout_s: float) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def engine_version(docker_host: str, timeout_s: float = 3.0) -> str:
    """The version of the Docker engine at ``docker_host``; raises OSError if none answers."""
    url = urlsplit(docker_host)
    if url.scheme == "unix":
        conn: http.client.HTTPConnection = _UnixHTTPConnection(url.path, timeout_s)
    elif url.scheme in ("tcp", "http"):
        conn = http.client.HTTPConnection(url.hostname or "", url.port or 2375, timeout=timeout_s)
    else:
        raise OSError(f"labkit checks engines at unix:// and tcp:// addresses, not {docker_host}")
    try:
        conn.request("GET", "/_ping")
        ping = conn.getresponse()
        body = ping.read()
        if ping.status != 200 or body.strip() != b"OK":
            raise OSError(f"/_ping answered {ping.status} {body[:80]!r}, not a Docker engine's OK")
        conn.request("GET", "/version")
        return json.loads(conn.getresponse().read()).get("Version", "?")
    finally:
        conn.close()

