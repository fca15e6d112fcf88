"""A client's link to a server through Toxiproxy, so that a fault can cut exactly that client off.

Introduced in notebooks/12_backend_under_faults.ipynb.

The backend's web tier reaches Memcached through a ``ClientLink`` (``web-to-memcached``),
while the invalidation service and the Celery workers, which delete keys, reach it directly.
``cut()`` disables the link's proxies: Toxiproxy closes their connections and refuses new
ones, so the web tier's cache client fails at once (no hang) and its reads fall back to the
databases; ``heal()`` enables them again. The Toxiproxy server is one of the backend's helper
processes: on 127.0.0.1, recorded in the lab's state file (``labkit status`` lists it,
``labkit down`` stops it), started and stopped with the backend. It only ever proxies to the
upstreams it is given: the lab's own servers.

>>> link = ClientLink(lab_dir / "backend/chaos/link", "web-to-memcached",
...                   upstreams=lab.cache_servers).start()      # doctest: +SKIP
>>> link.addresses                                            # doctest: +SKIP
[('127.0.0.1', 41873)]
>>> link.cut(); link.is_cut()                                 # doctest: +SKIP
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from labkit._proc import PortAllocator
from labkit.services.base import HelperService
from labkit.services.toxiproxy import Toxiproxy


class ClientLink(HelperService, Toxiproxy):
    """One Toxiproxy server with a proxy per upstream: ``<link>-<i>`` listens on ``addresses[i]``.

    A helper process (``HelperService``: recorded while it runs) that is a ``Toxiproxy`` (its
    start, readiness check and API). Runs as the current user, like the other helpers.
    """

    kind = "toxiproxy"

    def __init__(self, workdir: Path, link: str, *, upstreams: Sequence[tuple[str, int]],
                 host: str = "127.0.0.1", binary: str = "toxiproxy-server",
                 timeout_s: float = 30.0) -> None:
        Toxiproxy.__init__(self, workdir, host=host, binary=binary, user=None,
                           timeout_s=timeout_s)
        if not upstreams:
            raise ValueError(f"link {link}: give at least one upstream (host, port)")
        self.link, self.upstreams = link, [(h, int(p)) for h, p in upstreams]
        self.listen_ports: list[int] = []

    @property
    def name(self) -> str:
        return f"toxiproxy-{self.link}"

    @property
    def proxy_names(self) -> list[str]:
        return [f"{self.link}-{i}" for i in range(len(self.upstreams))]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where the client connects instead of the upstreams, in the same order."""
        return [(self.host, port) for port in self.listen_ports]

    def _prepare(self) -> None:
        ports = PortAllocator(self.host)
        self.port = self.port or ports.take()
        self.listen_ports = self.listen_ports or [ports.take() for _ in self.upstreams]

    def start(self) -> "ClientLink":
        super().start()  # the server answers, and is recorded as a helper
        for name, (host, port), upstream in zip(self.proxy_names, self.addresses, self.upstreams):
            self.ensure_proxy(name, listen=f"{host}:{port}", upstream="{}:{}".format(*upstream))
            self.set_enabled(name, True)  # a restart of a cut link starts healed
        return self

    def probe(self) -> dict[str, Any]:
        return {"http": f"{self.api_url}/version"}

    def cut(self) -> None:
        """Close the client's connections and refuse new ones (every proxy of the link)."""
        for name in self.proxy_names:
            self.set_enabled(name, False)

    def heal(self) -> None:
        for name in self.proxy_names:
            self.set_enabled(name, True)

    def is_cut(self) -> bool:
        have = self.proxies()
        return not any(have[name]["enabled"] for name in self.proxy_names)

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "link": self.link, "upstreams": self.upstreams,
                "listen_ports": self.listen_ports}

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self.listen_ports = list(state.get("listen_ports", []))
