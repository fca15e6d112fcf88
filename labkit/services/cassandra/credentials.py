"""The lab's Cassandra logins (CQL superuser and JMX), and the files that hold secrets."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from labkit._proc import new_password

__all__ = ["CassandraCredentials", "DEFAULT_SUPERUSER", "write_secret"]


@dataclass(frozen=True)
class CassandraCredentials:
    """The lab's Cassandra superuser (CQL) and JMX login; generated per lab, kept with its secrets.

    The passwords stay out of reprs and of the state file; the lab keeps them in its
    ``secrets.json`` and hands them back when it reattaches.

        >>> creds = CassandraCredentials()          # a fresh random password for each
        >>> creds.user
        'lab'
    """

    user: str = "lab"
    password: str = field(default_factory=new_password, repr=False)
    jmx_password: str = field(default_factory=new_password, repr=False)

    def auth_provider(self):
        """A cassandra-driver ``PlainTextAuthProvider`` for this user."""
        from cassandra.auth import PlainTextAuthProvider

        return PlainTextAuthProvider(username=self.user, password=self.password)


#: The superuser Cassandra creates on a fresh cluster; the lab drops it once its own exists.
DEFAULT_SUPERUSER = CassandraCredentials("cassandra", "cassandra", jmx_password="")

def write_secret(path: Path, text: str, mode: int = 0o400) -> None:
    """Write ``text`` to a fresh file created with ``mode`` (replacing any older, read-only one).

    Created with its mode, so the secret is never readable by others, not even for a moment.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)

