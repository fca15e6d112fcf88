"""WebServer: the Django project under gunicorn, on 127.0.0.1 and a free port, as a lab process.

Introduced in notebooks/02_web_tier.ipynb.
"""

from __future__ import annotations

import http.client
import sys
from pathlib import Path
from typing import Any

import psutil

from labkit._proc import PortAllocator
from labkit.services.base import HelperService
from labkit.web.config import WebConfig
from labkit.web.hooks import check_gc_mode, config_file


class WebServer(HelperService):
    """gunicorn serving ``labkit.web`` with ``workers`` sync worker processes.

    Runs as the current user (the interpreter may live where the lab's server account cannot
    go), in ``workdir`` under the lab directory, so ``labkit down`` sweeps it too.

    >>> cfg = WebConfig.from_lab(lab, dbname="instagram")                   # doctest: +SKIP
    >>> with WebServer(lab.config.lab_dir / "web", cfg, workers=2) as web:  # doctest: +SKIP
    ...     web.get("/api/constant")
    (200, b'{"ok": true}')
    """

    kind = "web"

    def __init__(self, workdir: Path, config: WebConfig, *, host: str = "127.0.0.1",
                 port: int = 0, workers: int = 4, timeout_s: float = 60.0,
                 preload: bool = False, gc_mode: str = "default",
                 profile_dir: Path | None = None) -> None:
        """``preload``: load the app once in the master and fork the workers from it
        (gunicorn's ``preload_app``). ``gc_mode``: default, freeze or disabled, and
        ``profile_dir``: cProfile each worker into it (both: ``labkit.web.hooks``)."""
        super().__init__(workdir, host=host, user=None, timeout_s=timeout_s)
        self.config, self.port, self.workers = config, port, workers
        self.preload, self.gc_mode = preload, check_gc_mode(gc_mode)
        self.profile_dir = Path(profile_dir).resolve() if profile_dir else None

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def _prepare(self) -> None:
        if not self.port:
            self.port = PortAllocator(self.host).take()
        self.config.write(self.workdir / "web.json")
        profile_dir = str(self.profile_dir) if self.profile_dir else None
        if self.profile_dir:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "gunicorn.conf.py").write_text(config_file(self.gc_mode, profile_dir))

    def _launch(self) -> None:
        config_path = str((self.workdir / "web.json").resolve())
        # gunicorn's own kill switch sits behind the request budget, for code that ignores it.
        hard_timeout_s = int(self.config.time_budget_s + 10)
        cmd = [sys.executable, "-m", "gunicorn", "--bind", self.address,
               "--workers", str(self.workers), "--worker-class", "sync",
               "--timeout", str(hard_timeout_s), "--graceful-timeout", "5",
               "--backlog", "512", "--log-level", "warning",
               *self._config_options(), *(["--preload"] if self.preload else []),
               *_no_control_socket(), self._app_spec(config_path)]
        self.procs.append(self.spawn_process("gunicorn", cmd, env=self._environment()))

    # Hooks for a server that runs other code the same way (labkit.deploy.pool.ReleasePool).
    def _app_spec(self, config_path: str) -> str:
        """gunicorn's WSGI application argument."""
        return f"labkit.web.wsgi:create_app({config_path!r})"

    def _config_options(self) -> list[str]:
        """gunicorn's config: the file ``_prepare`` wrote (GC mode, profiling hooks)."""
        return ["--config", str((self.workdir / "gunicorn.conf.py").resolve())]

    def _environment(self) -> dict[str, str]:
        return {}

    def ready(self) -> bool:
        status, _ = self.get("/healthz", timeout_s=2.0)
        return status == 200

    def probe(self) -> dict[str, Any]:
        return {"http": self.url("/healthz")}

    def version(self) -> str:
        import django
        import gunicorn
        return f"gunicorn {gunicorn.__version__}, Django {django.get_version()}"

    def get(self, path: str, headers: dict[str, str] | None = None,
            timeout_s: float = 30.0) -> tuple[int, bytes]:
        """One HTTP GET on loopback: (status, body)."""
        return self.request("GET", path, headers=headers, timeout_s=timeout_s)

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                timeout_s: float = 30.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def worker_pids(self) -> list[int]:
        """The pids of the gunicorn workers now running (the master's children)."""
        master = self.procs[0].process() if self.procs else None
        if master is None:
            return []
        try:
            return sorted(p.pid for p in master.children())
        except psutil.Error:
            return []

    def _state(self) -> dict[str, Any]:
        return {"port": self.port}

    def _restore(self, state: dict[str, Any]) -> None:
        self.port = state["port"]


def _no_control_socket() -> list[str]:
    # gunicorn >= 25 opens a control socket at one fixed path per user; two servers would clash.
    from gunicorn.config import KNOWN_SETTINGS
    return ["--no-control-socket"] if any(
        s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []
