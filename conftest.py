"""Every pytest run, whatever it collects, gets a lab directory of its own.

Here at the repository's root (not in tests/) so that `pytest notebooks/05_x.ipynb` alone is
covered too: LABKIT_LAB_DIR points at a fresh temporary directory before anything runs, and
notebooks run under nbval inherit it, so their `lk.up()` reattaches to the session's servers
and never touches a student's lab (or another developer's, on a shared machine). The session
lab is stopped and purged at the end.
"""

from __future__ import annotations

import os
import shutil

import pytest

from labkit._labdir import make_temp

SESSION_PREFIX = "labkit-test-"


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        os.environ["LABKIT_LAB_DIR"] = str(make_temp(SESSION_PREFIX))
        os.environ.pop("LABKIT_CONFIG", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    lab_dir = os.environ.get("LABKIT_LAB_DIR", "")
    if lab_dir.startswith(f"/tmp/{SESSION_PREFIX}"):
        import labkit as lk
        from labkit.config import LabConfig
        lk.down(LabConfig.load(lab_dir=lab_dir), purge=True)
        shutil.rmtree(lab_dir, ignore_errors=True)
