"""One ``up``, ``down`` or ``reset`` at a time per lab directory, across processes.

An ``flock`` on ``<lab_dir>/lock``, held for the whole operation (minutes, while a Cassandra
ring starts). The state file has a lock of its own, held only while it is rewritten
(``labkit._state``), so a helper recording itself never waits for an ``up``.

>>> with locked(Path("/tmp/my-lab"), user=None, claim=True):   # doctest: +SKIP
...     ...                                                      # start the servers
"""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import Iterator

from labkit import _labdir


@contextlib.contextmanager
def locked(lab_dir: Path, *, user: str | None, claim: bool = False) -> Iterator[None]:
    """Hold the lab's lock; with ``claim`` (at ``up``), make a new or empty directory the lab's.

    A claimed directory is created when missing (mode 0755 when ``user``, the servers'
    account, is set: as root) and marked. An existing directory's mode is never changed.
    """
    lab_dir = Path(lab_dir)
    made = _labdir.claim(lab_dir, user) if claim else False
    with open(lab_dir / "lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            if claim:
                _labdir.mark(lab_dir, made)
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
