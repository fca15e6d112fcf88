"""Toxiproxy 2.8, started from the installed binary: real TCP proxies with delay and partitions.

The lab uses it to put distance between the regions of notebook 10 (this kernel has no
``netem``, so delay cannot come from ``tc``). Its HTTP API (``/proxies``, ``/toxics``) is
small enough that a few ``urllib`` calls drive it: the Python client on PyPI
(toxiproxy-python) has not been released since 2020 and speaks an older API.

>>> from pathlib import Path
>>> with Toxiproxy(Path("/tmp/lab-toxi")) as toxi:                         # doctest: +SKIP
...     toxi.ensure_proxy("to-pg", listen="127.0.0.1:25432", upstream="127.0.0.1:5432")
...     toxi.set_latency("to-pg", delay_ms=40)      # 40 ms each way: +80 ms a round trip
...     toxi.set_enabled("to-pg", False)            # a partition: connections are cut
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from labkit._proc import PortAllocator, ServiceError, spawn
from labkit.services.base import NativeService


class Toxiproxy(NativeService):
    """One toxiproxy-server on loopback; its proxies are created over its API.

    Byte counts come from Toxiproxy's own Prometheus counters (``-proxy-metrics``), which a
    connection adds to when it closes. Toxiproxy cannot count requests (a CQL connection
    carries many), so callers count those themselves.
    """

    kind = "toxiproxy"

    def __init__(self, workdir: Path, *, port: int = 0, binary: str = "toxiproxy-server",
                 host: str = "127.0.0.1", user: str | None = None, timeout_s: float = 30.0) -> None:
        super().__init__(workdir, host=host, user=user, timeout_s=timeout_s)
        self.port, self.binary = port, binary

    @property
    def api_url(self) -> str:
        return f"http://{self.address}"

    def _launch(self) -> None:
        if not (shutil.which(self.binary) or Path(self.binary).is_file()):
            # No Debian package exists: bootstrap builds the pinned release with Go.
            raise ServiceError(f"{self.binary} not found; run `bash containers/bootstrap.sh` "
                               "(it builds Toxiproxy v2.8.0 with Go) or `brew install "
                               "toxiproxy` (macOS), or set toxiproxy_bin in lab.toml")
        if not self.port:
            self.port = PortAllocator(self.host).take()
        cmd = [self.binary, "-host", self.host, "-port", str(self.port), "-proxy-metrics"]
        # At its default level it logs every connection's every step (trace): warnings only.
        self.procs.append(spawn(self.name, cmd, cwd=self.workdir, log_path=self.log_path,
                                user=self.user, env={"LOG_LEVEL": "warn"}))

    def ready(self) -> bool:
        try:
            return "version" in self._call("GET", "/version", timeout_s=1.0)
        except ServiceError:  # not listening yet
            return False

    def version(self) -> str:
        # A `go install` build reports "git" (the release tag is set by the release build).
        return f"toxiproxy {self._call('GET', '/version')['version']}"

    def _state(self) -> dict[str, Any]:
        return {"port": self.port, "binary": self.binary}

    def _restore(self, state: dict[str, Any]) -> None:
        self.port, self.binary = state["port"], state.get("binary", self.binary)

    # -- the API ------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
              timeout_s: float = 5.0) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as r:
                text = r.read().decode()
        except urllib.error.HTTPError as e:
            raise ServiceError(f"toxiproxy {method} {path}: {e.code} {e.read().decode()[:200]}"
                               ) from None
        except OSError as e:
            raise ServiceError(f"toxiproxy at {self.address} does not answer ({e}); see "
                               "`labkit status`: it runs with the regions (`labkit up "
                               "--cassandra regions`) or the backend (`labkit up --backend`)"
                               ) from None
        if not text.strip():
            return {}
        return json.loads(text) if text.lstrip()[:1] in "[{" else text

    def proxies(self) -> dict[str, dict[str, Any]]:
        """Every proxy, by name: listen, upstream, enabled, toxics."""
        return self._call("GET", "/proxies")

    def ensure_proxy(self, name: str, *, listen: str, upstream: str) -> dict[str, Any]:
        """Create the proxy, or point an existing one at ``upstream`` (idempotent)."""
        have = self.proxies().get(name)
        if have is None:
            return self._call("POST", "/proxies",
                              {"name": name, "listen": listen, "upstream": upstream})
        if have["upstream"] != upstream or have["listen"] != listen:
            return self._call("POST", f"/proxies/{name}",
                              {"listen": listen, "upstream": upstream, "enabled": True})
        return have

    def set_latency(self, name: str, *, delay_ms: float, jitter_ms: float = 0) -> None:
        """Delay every byte by ``delay_ms`` in each direction (0 removes the delay)."""
        for stream in ("upstream", "downstream"):
            toxic = f"latency_{stream}"
            self._delete_toxic(name, toxic)
            if delay_ms > 0:
                self._call("POST", f"/proxies/{name}/toxics", {
                    "name": toxic, "type": "latency", "stream": stream, "toxicity": 1.0,
                    "attributes": {"latency": int(round(delay_ms)),
                                   "jitter": int(round(jitter_ms))}})

    def latency_ms(self, name: str) -> float:
        """The one-way delay the proxy adds now (upstream toxic), 0 when none."""
        toxics = self.proxies()[name].get("toxics") or []
        return float(next((t["attributes"]["latency"] for t in toxics
                           if t["name"] == "latency_upstream"), 0))

    def _delete_toxic(self, name: str, toxic: str) -> None:
        try:
            self._call("DELETE", f"/proxies/{name}/toxics/{toxic}")
        except ServiceError as e:
            if "404" not in str(e):
                raise

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Disabled, a proxy closes its connections and refuses new ones: a partition."""
        have = self.proxies()[name]
        self._call("POST", f"/proxies/{name}", {"listen": have["listen"],
                                                "upstream": have["upstream"],
                                                "enabled": enabled})

    def bytes_by_proxy(self) -> dict[str, int]:
        """Bytes each proxy has carried, both directions, over the connections that have closed."""
        # Prometheus text lines: toxiproxy_proxy_sent_bytes_total{direction=..,proxy="x",..} 187
        out: dict[str, int] = {}
        for line in self._call("GET", "/metrics").splitlines():
            m = re.match(r'toxiproxy_proxy_sent_bytes_total\{.*proxy="([^"]+)".*\}\s+(\S+)', line)
            if m:
                out[m[1]] = out.get(m[1], 0) + int(float(m[2]))
        return out
