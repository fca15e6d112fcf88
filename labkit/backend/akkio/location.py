"""Where each user's data lives: the location database (PostgreSQL) and its cache (Memcached).

Introduced in notebooks/10_akkio_placement.ipynb. One row per user: home ``region``, the
placement ``version`` (bumped by every move; the fence writes are checked against), and
``moving`` while a migration runs. The cache holds ``region:version`` under
``akkio:<keyspace>:loc:<user_id>``; a move deletes it after the new location commits. A cache entry that
survives a move anyway (a lookup that read the old row just before the commit, and set it
just after the delete) is caught by the fence: the old region refuses the request and the
client asks again, bypassing the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

__all__ = ["Location", "LocationCache", "LocationDB", "cache_prefix"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS akkio_location (
    user_id   bigint PRIMARY KEY,
    region    text    NOT NULL,
    version   integer NOT NULL DEFAULT 1,
    moving    boolean NOT NULL DEFAULT false,
    moved_at  timestamptz NOT NULL DEFAULT now()
)"""


@dataclass(frozen=True)
class Location:
    """Where a user's data is: region and placement version (``moving`` during a migration)."""

    user_id: int
    region: str
    version: int
    moving: bool = False


class LocationDB:
    """The location table in one PostgreSQL database (``dsn``)."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True, connect_timeout=3)
        self.conn.execute(SCHEMA)

    @classmethod
    def on(cls, conn: Any) -> "LocationDB":
        """The table through an open autocommit connection, which must already hold it.

        For a reader that must not own the table (exercise 10's grader: the submission's
        role made it, and keeps writing it).
        """
        db = cls.__new__(cls)
        db.conn = conn
        return db

    def place(self, user_id: int, region: str) -> Location:
        """Sign a user up in ``region`` (version 1); an existing user keeps where they are."""
        row = self.conn.execute(
            "INSERT INTO akkio_location (user_id, region) VALUES (%s, %s) "
            "ON CONFLICT (user_id) DO UPDATE SET user_id = EXCLUDED.user_id "
            "RETURNING region, version, moving", (user_id, region)).fetchone()
        return Location(user_id, row[0], row[1], row[2])

    def get(self, user_id: int) -> Location | None:
        row = self.conn.execute("SELECT region, version, moving FROM akkio_location "
                                "WHERE user_id = %s", (user_id,)).fetchone()
        return Location(user_id, *row) if row else None

    def begin_move(self, loc: Location) -> bool:
        """Mark the user as moving, if still at ``loc`` and not already moving."""
        cur = self.conn.execute("UPDATE akkio_location SET moving = true WHERE user_id = %s "
                                "AND version = %s AND NOT moving", (loc.user_id, loc.version))
        return cur.rowcount == 1

    def finish_move(self, loc: Location, region: str) -> Location:
        """Switch the user to ``region`` at the next version (only from ``loc``)."""
        cur = self.conn.execute(
            "UPDATE akkio_location SET region = %s, version = version + 1, moving = false, "
            "moved_at = now() WHERE user_id = %s AND version = %s",
            (region, loc.user_id, loc.version))
        if cur.rowcount != 1:
            raise RuntimeError(f"user {loc.user_id} is no longer at version {loc.version}: "
                               "two migrations of one user ran at once")
        return Location(loc.user_id, region, loc.version + 1)

    def abort_move(self, loc: Location) -> None:
        self.conn.execute("UPDATE akkio_location SET moving = false WHERE user_id = %s "
                          "AND version = %s", (loc.user_id, loc.version))

    def stayed_s(self, user_id: int) -> float:
        row = self.conn.execute("SELECT extract(epoch FROM now() - moved_at) FROM "
                                "akkio_location WHERE user_id = %s", (user_id,)).fetchone()
        return float(row[0]) if row else 0.0


def cache_prefix(keyspace: str) -> str:
    """The cache keys of one placement (one keyspace): runs side by side never share entries."""
    return f"akkio:{keyspace}:loc"


class LocationCache:
    """``user_id -> Location`` in Memcached (a pymemcache client), keys under ``prefix``."""

    def __init__(self, cache: Any, prefix: str, ttl_s: int = 300) -> None:
        self.cache, self.ttl_s, self.prefix = cache, ttl_s, prefix

    def key(self, user_id: int) -> str:
        return f"{self.prefix}:{user_id}"

    def get(self, user_id: int) -> Location | None:
        raw = self.cache.get(self.key(user_id))
        if raw is None:
            return None
        region, version = raw.decode().split(":")
        return Location(user_id, region, int(version))

    def put(self, loc: Location) -> None:
        """Cache a settled location (never one that is moving: it is about to change)."""
        if not loc.moving:
            self.cache.set(self.key(loc.user_id), f"{loc.region}:{loc.version}",
                           expire=self.ttl_s, noreply=False)

    def invalidate(self, user_id: int) -> None:
        self.cache.delete(self.key(user_id), noreply=False)
