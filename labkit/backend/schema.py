"""Instagram's data model in PostgreSQL: logical shards as schemas, each with its own ID function.

Every logical shard is a schema (``shard_0000``, ``shard_0001``, ...) holding the same tables:
``users``, ``media``, ``user_likes_media`` (who liked what), ``media_likes`` (the denormalized
like counter, one row per media item), ``follows`` and ``comments``. Each schema has a sequence
and Instagram's PL/pgSQL ``next_id()``, whose IDs carry the shard number, so an ID alone says
where its row lives (``labkit.backend.ids``). Rows are placed so one shard answers a request:

- a user lives in a shard picked when the account is made;
- a media item lives in its owner's shard (its ID carries that shard);
- likes, the like counter and comments live with the media item they are about, so a like and
  its counter bump are one local transaction;
- follows live in the follower's shard.

Introduced in notebooks/01_data_model.ipynb.

>>> conn = lab.leader.connect("instagram")          # doctest: +SKIP
>>> install(conn, shards=4)                          # doctest: +SKIP
>>> alice = create_user(conn, "alice")              # doctest: +SKIP
>>> media_id = create_media(conn, alice.user_id, "sunset")  # doctest: +SKIP
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from typing import Any, Iterable

import psycopg
from psycopg import sql

from labkit.backend import ids

DEFAULT_SHARDS = 4

# Instagram's function, per shard: 41 bits of ms since the epoch, 13 bits of shard, 10 of sequence.
# Unique while a shard makes at most 1024 IDs per millisecond (one call costs ~10 us of a core,
# so a shard would need ~10 busy cores to get there; past that, add shards). IDs from one
# session always increase; IDs from different sessions are ordered to the millisecond.
NEXT_ID_SQL = """
CREATE OR REPLACE FUNCTION {schema}.next_id(OUT result bigint) AS $$
DECLARE
    our_epoch bigint := {epoch_ms};
    seq_id bigint;
    now_millis bigint;
    shard_id int := {shard};
    last_id bigint;
BEGIN
    SELECT nextval('{schema}.id_seq') % {seq_per_ms} INTO seq_id;
    SELECT FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) INTO now_millis;
    result := (now_millis - our_epoch) << {shift_time};
    result := result | (shard_id << {shift_shard});
    result := result | (seq_id);
    -- labkit's guard (not in Instagram's original): when the sequence wraps within a
    -- millisecond, wait for the next one, so the IDs one session gets always increase.
    last_id := coalesce(nullif(current_setting('labkit.last_id_{shard}', true), ''), '0')::bigint;
    IF result <= last_id THEN
        LOOP
            SELECT FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) INTO now_millis;
            EXIT WHEN now_millis - our_epoch > last_id >> {shift_time};
        END LOOP;
        result := ((now_millis - our_epoch) << {shift_time}) | (shard_id << {shift_shard}) | seq_id;
    END IF;
    PERFORM set_config('labkit.last_id_{shard}', result::text, false);
END;
$$ LANGUAGE PLPGSQL;
"""

TABLES_SQL = """
CREATE TABLE IF NOT EXISTS {schema}.users (
    id           bigint PRIMARY KEY DEFAULT {schema}.next_id(),
    username     text NOT NULL,
    bio          text NOT NULL DEFAULT '',
    token_secret text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {schema}.media (
    id         bigint PRIMARY KEY DEFAULT {schema}.next_id(),
    user_id    bigint NOT NULL,
    caption    text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS media_by_user ON {schema}.media (user_id, id DESC);
-- The denormalized counter: one row read instead of COUNT(*) over user_likes_media.
CREATE TABLE IF NOT EXISTS {schema}.media_likes (
    media_id bigint PRIMARY KEY REFERENCES {schema}.media (id) ON DELETE CASCADE,
    count    bigint NOT NULL DEFAULT 0 CHECK (count >= 0)
);
-- No foreign keys on the hottest table: the user usually lives in another shard, and the
-- counter row (updated in the same transaction) is the check that the media item exists.
CREATE TABLE IF NOT EXISTS {schema}.user_likes_media (
    media_id   bigint NOT NULL,
    user_id    bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (media_id, user_id)
);
CREATE TABLE IF NOT EXISTS {schema}.follows (
    follower_id bigint NOT NULL,
    followee_id bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (follower_id, followee_id)
);
CREATE INDEX IF NOT EXISTS follows_by_followee ON {schema}.follows (followee_id);
CREATE TABLE IF NOT EXISTS {schema}.comments (
    id         bigint PRIMARY KEY DEFAULT {schema}.next_id(),
    media_id   bigint NOT NULL REFERENCES {schema}.media (id) ON DELETE CASCADE,
    user_id    bigint NOT NULL,
    text       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS comments_by_media ON {schema}.comments (media_id, id);
"""


class NotFound(LookupError):
    """No row with that ID (a media item, a user)."""


class MalformedId(ValueError):
    """Text that is not a 64-bit Instagram ID."""


@dataclass(frozen=True)
class User:
    """A new account: its ID, name, and the API token it authenticates with."""

    user_id: int
    username: str
    token: str


# ------------------------------------------------------------------------- shards and DDL

def shard_schema(shard: int) -> str:
    """The schema name of logical shard ``shard`` (``shard_0005``)."""
    return f"shard_{shard:04d}"


def schema_of(id_: int) -> sql.Identifier:
    """The schema holding the row with this ID, as a quoted SQL identifier."""
    return sql.Identifier(shard_schema(ids.shard_of(id_)))


def install(conn: psycopg.Connection, shards: int = DEFAULT_SHARDS) -> list[int]:
    """Create logical shards 0..shards-1 (schemas, ID functions, tables); idempotent.

    Returns the shard numbers. ``conn`` is a connection to the leader, to the database that
    will hold the data model.
    """
    if not 1 <= shards <= ids.MAX_SHARDS:
        raise ValueError(f"shards={shards}: choose 1 to {ids.MAX_SHARDS} logical shards")
    with conn.transaction():
        conn.execute("CREATE TABLE IF NOT EXISTS public.logical_shards "
                     "(shard int PRIMARY KEY, schema_name text NOT NULL)")
        for shard in range(shards):
            schema = shard_schema(shard)
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            conn.execute(f"CREATE SEQUENCE IF NOT EXISTS {schema}.id_seq")
            conn.execute(NEXT_ID_SQL.format(
                schema=schema, shard=shard, epoch_ms=ids.EPOCH_MS, seq_per_ms=ids.SEQ_PER_MS,
                shift_time=ids.SHARD_BITS + ids.SEQ_BITS, shift_shard=ids.SEQ_BITS))
            conn.execute(TABLES_SQL.format(schema=schema))
            conn.execute("INSERT INTO public.logical_shards VALUES (%s, %s) "
                         "ON CONFLICT (shard) DO NOTHING", (shard, schema))
    return list(range(shards))


def shards(conn: psycopg.Connection) -> list[int]:
    """The logical shards installed in this database."""
    try:
        rows = conn.execute("SELECT shard FROM public.logical_shards ORDER BY shard").fetchall()
    except psycopg.errors.UndefinedTable:
        raise NotFound("no logical shards in this database; run "
                       "labkit.backend.schema.install(conn) first") from None
    return [r[0] for r in rows]


def next_ids(conn: psycopg.Connection, shard: int, n: int = 1) -> list[int]:
    """``n`` fresh IDs from shard ``shard``'s PL/pgSQL ``next_id()``."""
    fn = sql.SQL("SELECT {}.next_id() FROM generate_series(1, %s)").format(
        sql.Identifier(shard_schema(shard)))
    return [r[0] for r in conn.execute(fn, (n,)).fetchall()]


def create_database(leader: Any, dbname: str, *, followers: Iterable[Any] = (),
                    shards: int = DEFAULT_SHARDS, timeout_s: float = 30.0) -> str:
    """Drop and recreate database ``dbname`` on ``leader`` with the data model installed.

    ``leader`` and ``followers`` are ``PostgresServer``s; this returns once every follower
    has replayed the new schema, so reads there find the tables.
    """
    if not dbname.isidentifier():
        raise ValueError(f"dbname={dbname!r}: use letters, digits and underscores only")
    leader.drop_database(dbname)
    leader.execute(f"CREATE DATABASE {dbname}")
    with leader.connect(dbname) as conn:
        install(conn, shards=shards)
    for follower in followers:
        follower.wait_replayed(timeout_s=timeout_s)
    return dbname


# ---------------------------------------------------------------------------------- rows

def parse_id(text: Any) -> int:
    """An ID from request text (``"1234"``), or ``MalformedId`` saying what is wrong."""
    try:
        value = int(str(text), 10)
        ids.decode(value)
    except ValueError:
        raise MalformedId(f"{str(text)[:40]!r} is not an ID: expected a positive 64-bit "
                          "integer such as 2882305128452096001") from None
    return value


def create_user(conn: psycopg.Connection, username: str, *, shard: int | None = None,
                bio: str = "") -> User:
    """Make an account in ``shard`` (a random installed one by default); return its token."""
    if shard is None:
        shard = random.choice(shards(conn))
    secret = secrets.token_urlsafe(18)
    q = sql.SQL("INSERT INTO {}.users (username, bio, token_secret) VALUES (%s, %s, %s) "
                "RETURNING id").format(sql.Identifier(shard_schema(shard)))
    (user_id,), = conn.execute(q, (username, bio, secret)).fetchall()
    return User(user_id, username, f"{user_id}.{secret}")


def create_media(conn: psycopg.Connection, user_id: int, caption: str = "") -> int:
    """Post a media item for ``user_id`` (in the owner's shard), with its like counter at 0."""
    schema = schema_of(user_id)
    with conn.transaction():
        q = sql.SQL("INSERT INTO {}.media (user_id, caption) VALUES (%s, %s) RETURNING id")
        (media_id,), = conn.execute(q.format(schema), (user_id, caption)).fetchall()
        conn.execute(sql.SQL("INSERT INTO {}.media_likes (media_id) VALUES (%s)").format(schema),
                     (media_id,))
    return media_id


def follow(conn: psycopg.Connection, follower_id: int, followee_id: int) -> None:
    """``follower_id`` follows ``followee_id`` (idempotent)."""
    conn.execute(sql.SQL("INSERT INTO {}.follows (follower_id, followee_id) VALUES (%s, %s) "
                         "ON CONFLICT DO NOTHING").format(schema_of(follower_id)),
                 (follower_id, followee_id))


def followees(conn: psycopg.Connection, user_id: int) -> list[int]:
    """Whom ``user_id`` follows: one indexed read in the follower's own shard."""
    q = sql.SQL("SELECT followee_id FROM {}.follows WHERE follower_id = %s").format(
        schema_of(user_id))
    try:
        return [r[0] for r in conn.execute(q, (user_id,))]
    except (psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedTable):
        return []  # a shard this database does not have: no follows either


def followers(conn: psycopg.Connection, user_id: int) -> list[int]:
    """Who follows ``user_id``: follows live in the *follower's* shard, so every shard is read
    (index ``follows_by_followee``). What a fan-out on write walks through.

    Introduced in notebooks/09_cassandra_feeds.ipynb.
    """
    out: list[int] = []
    for shard in shards(conn):
        q = sql.SQL("SELECT follower_id FROM {}.follows WHERE followee_id = %s").format(
            sql.Identifier(shard_schema(shard)))
        out += [r[0] for r in conn.execute(q, (user_id,))]
    return out


def popular(conn: psycopg.Connection, min_followers: int) -> dict[int, int]:
    """Accounts with more than ``min_followers`` followers: {user_id: followers}.

    Follows of one account are spread over every shard, so the counts are summed across
    shards; an account above the bar has more than ``min_followers / shards`` of them in at
    least one shard, which filters each shard's aggregate first.

    Introduced in notebooks/09_cassandra_feeds.ipynb.
    """
    installed = shards(conn)
    floor = min_followers // len(installed)
    candidates: set[int] = set()
    for shard in installed:
        q = sql.SQL("SELECT followee_id FROM {}.follows GROUP BY followee_id "
                    "HAVING count(*) > %s").format(sql.Identifier(shard_schema(shard)))
        candidates.update(r[0] for r in conn.execute(q, (floor,)))
    if not candidates:
        return {}
    totals = dict.fromkeys(candidates, 0)
    for shard in installed:
        q = sql.SQL("SELECT followee_id, count(*) FROM {}.follows WHERE followee_id = ANY(%s) "
                    "GROUP BY followee_id").format(sql.Identifier(shard_schema(shard)))
        for user_id, n in conn.execute(q, (list(candidates),)):
            totals[user_id] += n
    return {u: n for u, n in totals.items() if n > min_followers}


def comment(conn: psycopg.Connection, user_id: int, media_id: int, text: str) -> int:
    """Add a comment to a media item; return the comment's ID (made in the media's shard)."""
    q = sql.SQL("INSERT INTO {}.comments (media_id, user_id, text) VALUES (%s, %s, %s) "
                "RETURNING id").format(schema_of(media_id))
    try:
        return conn.execute(q, (media_id, user_id, text)).fetchone()[0]
    except psycopg.errors.ForeignKeyViolation:
        raise NotFound(f"no media item {media_id}") from None


def get_media(conn: psycopg.Connection, media_id: int) -> dict[str, Any]:
    """A media item with its like count (read from the counter row, never COUNT(*))."""
    q = sql.SQL("SELECT m.id, m.user_id, m.caption, m.created_at, coalesce(c.count, 0) "
                "FROM {s}.media m LEFT JOIN {s}.media_likes c ON c.media_id = m.id "
                "WHERE m.id = %s").format(s=schema_of(media_id))
    row = _one(conn, q, media_id)
    if row is None:
        raise NotFound(f"no media item {media_id}")
    return {"media_id": row[0], "user_id": row[1], "caption": row[2],
            "created_at": row[3].isoformat(), "like_count": row[4]}


def get_profile(conn: psycopg.Connection, user_id: int, recent: int = 12) -> dict[str, Any]:
    """A user's profile: name, bio, counts, and their ``recent`` latest media IDs."""
    q = sql.SQL("SELECT u.id, u.username, u.bio, u.created_at, "
                "(SELECT count(*) FROM {s}.media WHERE user_id = u.id), "
                "(SELECT count(*) FROM {s}.follows WHERE follower_id = u.id), "
                "ARRAY(SELECT id FROM {s}.media WHERE user_id = u.id ORDER BY id DESC LIMIT %s) "
                "FROM {s}.users u WHERE u.id = %s").format(s=schema_of(user_id))
    row = _one(conn, q, recent, user_id)
    if row is None:
        raise NotFound(f"no user {user_id}")
    return {"user_id": row[0], "username": row[1], "bio": row[2],
            "created_at": row[3].isoformat(), "media_count": row[4],
            "following_count": row[5], "recent_media": list(row[6])}


def user_for_token(conn: psycopg.Connection, token: str) -> int | None:
    """The user a token ``"<user_id>.<secret>"`` belongs to, or None when it is not valid."""
    user_part, _, secret = (token or "").partition(".")
    try:
        user_id = parse_id(user_part)
    except MalformedId:
        return None
    if not secret:
        return None
    q = sql.SQL("SELECT token_secret FROM {}.users WHERE id = %s").format(schema_of(user_id))
    row = _one(conn, q, user_id)
    if row is None or not secrets.compare_digest(row[0], secret):
        return None
    return user_id


def _one(conn: psycopg.Connection, q: sql.Composable, *params: Any) -> tuple | None:
    # A shard this database does not have means the row cannot exist either.
    try:
        return conn.execute(q, params).fetchone()
    except (psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedTable):
        if not conn.autocommit or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise
        return None
