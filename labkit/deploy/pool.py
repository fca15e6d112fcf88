"""ReleasePool: one release of the web tier under gunicorn, measured by the pool harness.

The same gunicorn as ``labkit.web.WebServer`` (sync workers, the request budget, loopback),
with three differences: ``PYTHONPATH`` puts the release's snapshot first, so the workers run
the release's code (``labkit.deploy.release`` says why that cannot clash); the app is wrapped by
``labkit/deploy/harness.py`` (copied beside the config as ``labkit_pool_harness.py``), which
exports prometheus metrics from every worker; and readiness asks the harness which release
answers, so a leftover server on the port cannot pass for this one.

Introduced in notebooks/13_continuous_deployment.ipynb.

>>> pool = ReleasePool(workdir, release, WebConfig.from_lab(lab, "nb13"), port=41000)  # doctest: +SKIP
>>> pool.start().describe()["labkit_file"]                                          # doctest: +SKIP
'/var/lib/labkit/lab/deploy/releases/worktree-3f2a9c1e/labkit/__init__.py'
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from labkit.deploy.release import Release
from labkit.web.config import WebConfig
from labkit.web.server import WebServer

HARNESS = Path(__file__).resolve().parent / "harness.py"
HARNESS_MODULE = "labkit_pool_harness"


class ReleasePool(WebServer):
    """gunicorn with ``workers`` sync workers serving ``release`` on ``host:port``."""

    kind = "pool"

    def __init__(self, workdir: Path, release: Release, config: WebConfig, *, port: int = 0,
                 workers: int = 2, host: str = "127.0.0.1", timeout_s: float = 60.0) -> None:
        super().__init__(workdir, config, host=host, port=port, workers=workers,
                         timeout_s=timeout_s)
        self.release = release

    @property
    def name(self) -> str:
        return f"pool {self.release.name}"

    @property
    def metrics_dir(self) -> Path:
        return self.workdir / "prometheus"

    def _prepare(self) -> None:
        super()._prepare()
        shutil.copyfile(HARNESS, self.workdir / f"{HARNESS_MODULE}.py")
        # Multiprocess mode keeps one file per worker; a new pool starts from nothing.
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.metrics_dir.mkdir()

    def _app_spec(self, config_path: str) -> str:
        return f"{HARNESS_MODULE}:create_app({config_path!r}, {self.release.name!r})"

    def _config_options(self) -> list[str]:
        # The harness is this pool's gunicorn config (its hooks); WebServer's GC modes and
        # profiling (notebook 11) import labkit.web.hooks, which an older release may lack.
        return ["--config", f"python:{HARNESS_MODULE}"]

    def _environment(self) -> dict[str, str]:
        return {"PYTHONPATH": os.pathsep.join([str(self.release.path), str(self.workdir)]),
                "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)}

    def ready(self) -> bool:
        return self.describe(timeout_s=2.0).get("release") == self.release.name

    def describe(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """What a worker of this pool says it runs: release, pid and its ``labkit`` file."""
        status, body = self.get("/-/release", timeout_s=timeout_s)
        return json.loads(body) if status == 200 else {}

    def metrics_text(self, timeout_s: float = 5.0) -> str:
        """The pool's prometheus exposition (all workers merged)."""
        status, body = self.get("/metrics", timeout_s=timeout_s)
        if status != 200:
            raise RuntimeError(f"{self.name}: /metrics answered {status}")
        return body.decode()

    def version(self) -> str:
        return f"release {self.release.name} ({self.release.source})"

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "release": str(self.release.path)}
