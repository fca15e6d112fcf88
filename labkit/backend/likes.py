"""Likes: the like row and the denormalized counter change together, in one transaction.

``like`` and ``unlike`` run on the leader, each as one statement (so one transaction) that
changes the like row and the counter together. They are idempotent: a double tap inserts
nothing the second time and the counter moves by the number of like rows that really changed
(``ON CONFLICT DO NOTHING ... RETURNING`` / ``DELETE ... RETURNING``). Under
concurrency the primary key serializes two taps of the same user on the same media item, so
the counter always equals ``COUNT(*)`` of the like rows. ``count`` reads the one counter row
(send it to a follower); ``count_star`` is the expensive aggregate it replaces.

Introduced in notebooks/01_data_model.ipynb.

>>> with lab.leader.connect("instagram") as conn:                     # doctest: +SKIP
...     like(conn, user_id, media_id), like(conn, user_id, media_id)
(True, False)
>>> count(lab.follower.connect("instagram"), media_id)                # doctest: +SKIP
1
"""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg import sql

from labkit.backend.schema import NotFound, schema_of

# One statement each, so one transaction and one round trip: the like row changes (or not,
# on a double tap) and the counter moves by exactly the number of rows that changed. The
# counter row doubles as the existence check: no counter row, no media item, nothing written.
_LIKE = """
WITH changed AS (
    INSERT INTO {s}.user_likes_media (media_id, user_id)
    SELECT media_id, %(user_id)s FROM {s}.media_likes WHERE media_id = %(media_id)s
    ON CONFLICT DO NOTHING RETURNING 1)
UPDATE {s}.media_likes SET count = count + (SELECT count(*) FROM changed)
WHERE media_id = %(media_id)s RETURNING (SELECT count(*) FROM changed)
"""
_UNLIKE = """
WITH changed AS (
    DELETE FROM {s}.user_likes_media
    WHERE media_id = %(media_id)s AND user_id = %(user_id)s RETURNING 1)
UPDATE {s}.media_likes SET count = count - (SELECT count(*) FROM changed)
WHERE media_id = %(media_id)s RETURNING (SELECT count(*) FROM changed)
"""


def like(conn: psycopg.Connection, user_id: int, media_id: int) -> bool:
    """``user_id`` likes ``media_id``; True if this created the like, False on a double tap.

    Raises ``NotFound`` for an unknown media item. ``conn`` must be a leader connection.
    """
    return _change(conn, _LIKE, user_id, media_id)


def unlike(conn: psycopg.Connection, user_id: int, media_id: int) -> bool:
    """Take a like back; True if there was one to remove, False otherwise."""
    return _change(conn, _UNLIKE, user_id, media_id)


def _change(conn: psycopg.Connection, statement: str, user_id: int, media_id: int) -> bool:
    q = sql.SQL(statement).format(s=schema_of(media_id))
    try:
        row = conn.execute(q, {"user_id": user_id, "media_id": media_id}).fetchone()
    except (psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedTable):
        row = None  # a shard this database does not have
    if row is None:
        raise NotFound(f"no media item {media_id}")
    return row[0] == 1


def count(conn: psycopg.Connection, media_id: int) -> int:
    """The like count of ``media_id``: one read of its counter row (a follower is fine)."""
    q = sql.SQL("SELECT count FROM {s}.media_likes WHERE media_id = %s").format(
        s=schema_of(media_id))
    try:
        row = conn.execute(q, (media_id,)).fetchone()
    except (psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedTable):
        row = None
    if row is None:
        raise NotFound(f"no media item {media_id}")
    return row[0]


def count_star(conn: psycopg.Connection, media_id: int) -> int:
    """The like count the expensive way: ``COUNT(*)`` over the like rows (what ``count`` avoids)."""
    q = sql.SQL("SELECT COUNT(*) FROM {s}.user_likes_media WHERE media_id = %s").format(
        s=schema_of(media_id))
    return conn.execute(q, (media_id,)).fetchone()[0]


def owner_of(conn: psycopg.Connection, media_id: int) -> int:
    """The user who posted ``media_id`` (whom a like notifies)."""
    q = sql.SQL("SELECT user_id FROM {s}.media WHERE id = %s").format(s=schema_of(media_id))
    row = conn.execute(q, (media_id,)).fetchone()
    if row is None:
        raise NotFound(f"no media item {media_id}")
    return row[0]


def liked(conn: psycopg.Connection, user_id: int, media_id: int) -> bool:
    """Whether ``user_id`` likes ``media_id`` now."""
    q = sql.SQL("SELECT 1 FROM {s}.user_likes_media WHERE media_id = %s AND user_id = %s")
    return conn.execute(q.format(s=schema_of(media_id)), (media_id, user_id)).fetchone() is not None


def liked_at(conn: psycopg.Connection, user_id: int, media_id: int) -> datetime | None:
    """When ``user_id`` liked ``media_id`` (a ``datetime``), or None when there is no such like.

    The like's own time: a task that runs twice for one like (a redelivery) reads the same
    value, so what it derives from it (notebook 09's activity row) is the same row.
    """
    q = sql.SQL("SELECT created_at FROM {s}.user_likes_media WHERE media_id = %s AND user_id = %s")
    try:
        row = conn.execute(q.format(s=schema_of(media_id)), (media_id, user_id)).fetchone()
    except (psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedTable):
        return None
    return row[0] if row else None


def counts(conn: psycopg.Connection, media_ids: list[int]) -> dict[int, int]:
    """Like counts of many posts: one query per shard they live in (counter rows).

    Introduced in notebooks/09_cassandra_feeds.ipynb (a Cassandra feed's posts, ranked).
    """
    from labkit.backend import ids
    by_shard: dict[int, list[int]] = {}
    for media_id in media_ids:
        by_shard.setdefault(ids.shard_of(media_id), []).append(media_id)
    out: dict[int, int] = {}
    for shard, wanted in by_shard.items():
        q = sql.SQL("SELECT media_id, count FROM {}.media_likes WHERE media_id = ANY(%s)")
        try:
            out.update(conn.execute(q.format(schema_of(wanted[0])), (wanted,)).fetchall())
        except (psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedTable):
            if not conn.autocommit:  # the transaction is aborted: the caller must know
                raise
    return out
