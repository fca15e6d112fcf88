"""The lab's state file: what runs in a lab directory, so that any process can reattach to it.

``<lab_dir>/state.json`` (mode 0600: it holds passwords) records which provider runs the lab,
the config it was brought up with, every server (``services``: pids, start times, ports) and
every helper process a notebook started (``helpers``: web servers, Celery workers,
invalidation services). A restarted kernel, the ``labkit`` CLI and a test process read it to
get the same servers; ``down`` stops what it lists, then sweeps by the lab's marker.

Two kinds of writer share the file: the Lab (the servers, at ``up``) and each helper (its own
entry, when it starts and stops). Every write is a read-modify-write under a short lock, so
neither loses the other's part, and is atomic and durable (``_labdir.write_atomic``): a crash
leaves the old file or the new, never half of one. The lock is an ``flock`` on the lab's
marker file: every lab has one, nothing replaces or deletes it, and so no extra file is left
behind (the ``lock`` file cannot serve: ``up`` holds it for as long as servers start).

This module sits below the services (beside ``_labdir`` and ``_proc``) because helper
services record themselves here.

>>> update(Path("/tmp/my-lab"), lambda s: s.setdefault("helpers", {}))   # doctest: +SKIP
>>> read(Path("/tmp/my-lab"))["version"]                                # doctest: +SKIP
1
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from labkit import _labdir
from labkit._proc import ServiceError

STATE_VERSION = 1
STATE_FILE = "state.json"

_thread_lock = threading.Lock()  # one writer per process at a time; flock() excludes the others


class StateError(ServiceError):
    """The lab's state file cannot be used; the message gives the fix (``labkit down``)."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


def path(lab_dir: Path) -> Path:
    return Path(lab_dir) / STATE_FILE


def read(lab_dir: Path) -> dict[str, Any]:
    """The state of ``lab_dir`` ({} when there is none); StateError, with the fix, if damaged."""
    file = path(lab_dir)
    try:
        state = json.loads(file.read_text())
    except FileNotFoundError:
        return {}
    except (ValueError, OSError) as e:  # truncated, garbled, not UTF-8, unreadable
        raise damaged(lab_dir, str(e)) from None
    if not isinstance(state, dict) or not all(
            isinstance(state.get(k, {}), dict) for k in ("services", "helpers")):
        raise damaged(lab_dir, "it is not a JSON object with a services table")
    if state.get("version") != STATE_VERSION:
        raise damaged(lab_dir, f"state version {state.get('version')!r}; this labkit reads "
                               f"version {STATE_VERSION}")
    return state


def damaged(lab_dir: Path, why: str) -> StateError:
    file = path(lab_dir)
    return StateError(
        f"the lab's state file {file} is damaged ({why}). Fix: run "
        "`labkit down` (it stops every process carrying this lab's marker, whatever the "
        "state file says, and removes the file; the data is kept), then `labkit up`",
        f"{file} is damaged: {why}")


def update(lab_dir: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to the state of ``lab_dir`` and write it back, under the state lock."""
    with _locked(Path(lab_dir)):
        state = read(lab_dir)
        change(state)
        state["version"] = STATE_VERSION
        write_private(path(lab_dir), state)


def remove(lab_dir: Path) -> None:
    """Delete the state file (``down``: nothing of the lab runs any more)."""
    with _locked(Path(lab_dir)):
        path(lab_dir).unlink(missing_ok=True)


def write_private(file: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically and durably, readable by its owner only (it holds passwords)."""
    _labdir.write_atomic(file, json.dumps(data, indent=2), mode=0o600)


@contextlib.contextmanager
def _locked(lab_dir: Path) -> Iterator[None]:
    try:
        marker = open(lab_dir / _labdir.MARKER)
    except FileNotFoundError:
        raise ServiceError(f"{lab_dir} is not a lab directory (no {_labdir.MARKER} marker): "
                           "start the lab with `labkit up` first") from None
    with _thread_lock, marker as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------- helper processes

def record_helper(lab_dir: Path, name: str, entry: dict[str, Any]) -> None:
    """Note that helper ``name`` runs (kind, pids, address, how to check it), for `labkit status`."""
    def change(state: dict[str, Any]) -> None:
        state.setdefault("helpers", {})[name] = {**entry, "recorded_at": time.time()}
    update(lab_dir, change)


def forget_helper(lab_dir: Path, name: str) -> None:
    """Drop helper ``name`` from the state (it stopped)."""
    def change(state: dict[str, Any]) -> None:
        state.get("helpers", {}).pop(name, None)
    if path(lab_dir).exists():
        update(lab_dir, change)
