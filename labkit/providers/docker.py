"""The docker provider, to come: for now only whether a Docker engine answers here.

``labkit doctor`` asks the engine named by ``config.docker_host`` (``DOCKER_HOST``, else
``unix:///var/run/docker.sock``) for ``/_ping`` and ``/version`` over its HTTP API. The
provider itself (images built from ``containers/<svc>/Dockerfile``, containers through
testcontainers) joins later: this class in ``PROVIDERS`` (and "docker" in
``config.PROVIDERS``), and a ``docker(ctx, saved)`` builder on each service kind in
``labkit/lab/kinds/``. ``external.py`` shows the pattern for the servers: a lifecycle mixin
placed before each server class (``ExternalService``; here a container's start, stop,
``docker pause``) keeps every accessor and protocol-level method (SQL, CQL, AMQP) as it is.

Why these few lines and not the Docker SDK: no labkit dependency speaks to Docker yet; the
provider will bring the SDK (with testcontainers), and this check can then be
``docker.DockerClient(base_url=...).ping()``.
"""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import urlsplit

from labkit.config import LabConfig
from labkit.providers.base import Provider, Verdict

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


class DockerProvider(Provider):
    """Containers on a local Docker engine (to come; see the module docstring)."""

    name = "docker"
    manages = True

    def check(self, config: LabConfig) -> Verdict:
        try:
            version = engine_version(config.docker_host)
        except (OSError, ValueError) as e:
            return Verdict(self.name, False, f"no Docker engine answers at {config.docker_host} "
                                             f"({e}): {INSTALL}")
        return Verdict(self.name, True, f"Docker engine {version} answers at "
                                        f"{config.docker_host} (the provider itself is to come)")
