"""The lab's generated credentials: ``<lab_dir>/secrets.json``, made once, kept across ``down``.

Each service kind names the credentials it needs and how to make a fresh one
(``ServiceKind.secrets``); the first ``up`` generates them all, and a secrets file from an
older labkit gets the ones it lacks added. The file outlives ``down`` because the data does:
a database, a vhost, a Cassandra cluster keep the password they were made with. Only
``down --purge`` deletes it.

>>> load(Path("/tmp/my-lab"), {"pg_password": lambda: "s3cret"})["pg_password"]  # doctest: +SKIP
's3cret'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Mapping

from labkit._state import StateError, write_private

FILE = "secrets.json"


def load(lab_dir: Path, wanted: Mapping[str, Callable[[], str]], *,
         create: bool = True) -> dict[str, str]:
    """The lab's credentials, generating (and, with ``create``, saving) the ``wanted`` ones missing.

    With ``create=False`` nothing is written (a lab that is only being looked at, or stopped).
    """
    path = Path(lab_dir) / FILE
    values: dict[str, str] = {}
    if path.exists():
        try:
            values = json.loads(path.read_text())
        except ValueError as e:
            raise StateError(f"the lab's credentials file {path} is damaged ({e}). Fix: "
                             "`labkit down --purge`, then `labkit up` (a new lab: its "
                             "data was only reachable with those credentials)",
                             f"{path} is damaged: {e}") from None
    missing = {name: make() for name, make in wanted.items() if name not in values}
    if missing:
        values = {**missing, **values}
        if create:
            write_private(path, values)
    return values
