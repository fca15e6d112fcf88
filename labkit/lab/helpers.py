"""The lab's helper processes: what notebooks start beside the servers, and how to find them.

Invalidation services, Celery workers, gunicorn: processes spawned in the lab directory
carry the lab's marker (``LABKIT_LAB_ID``), so ``down`` sweeps them and ``reset`` stops
them, whether or not anything recorded them.
"""

from __future__ import annotations

from pathlib import Path

import psutil

from labkit import _labdir
from labkit._proc import PROCESS_ENV, Proc, marked_processes


def marked_helpers(lab_dir: Path, servers: list[Proc]) -> list[psutil.Process]:
    """Processes that carry the lab's marker but are none of its ``servers`` (or their children)."""
    marker = _labdir.read_marker(lab_dir)
    if marker is None:
        return []
    names, pids = {p.name for p in servers}, {p.pid for p in servers}
    out = []
    for p in marked_processes(marker.lab_id):
        try:
            if p.pid not in pids and p.environ().get(PROCESS_ENV) not in names:
                out.append(p)
        except psutil.Error:
            continue
    return out
