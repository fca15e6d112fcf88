"""Read routing over a PostgreSQL leader and follower, with read-your-writes.

Introduced in notebooks/07_replication_lag.ipynb.

Reads go to a follower by default; writes go to the leader. A follower replays the leader's
write-ahead log a little (or, with an injected delay, a lot) later, so a user who writes and
reads back at once can miss their own write. ``ReadRouter`` offers four strategies:

``none``
    every read on the follower (the anomaly).
``pin``
    after a write, the user's reads go to the leader for ``pin_s`` seconds.
``lsn_wait``
    remember the leader's WAL position after the write; before the user's next read, wait
    (at most ``lsn_timeout_s``) until the follower has replayed it, else read on the leader.
``remote_apply``
    the write's commit waits until the follower has applied it
    (``synchronous_commit = remote_apply``), so every read can go to the follower.

``RemoteMarkerCache`` is Facebook's "remote marker" (Scaling Memcache, NSDI'13, section 5)
applied to a cache in front of the follower: a write sets a marker next to the key, and the
next cache miss for that key reads the leader while the marker says the follower is behind.

The data is the storage schema of notebook 01: a write or a read is a SQL statement or a
function of a connection (``lambda conn: likes.like(conn, user_id, media_id)``).

>>> router = ReadRouter(lab.leader.dsn("app"), lab.follower.dsn("app"),
...                     strategy="lsn_wait")                                    # doctest: +SKIP
>>> router.write(7, lambda conn: likes.like(conn, 7, media_id))                 # doctest: +SKIP
>>> router.read(7, lambda conn: likes.liked(conn, 7, media_id))                 # doctest: +SKIP
True
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Union

import psycopg
from psycopg import sql as pgsql

from labkit.services.postgres import current_lsn, replayed

STRATEGIES = ("none", "pin", "lsn_wait", "remote_apply")

# What a router runs: a SQL statement (text or psycopg.sql), or a function of a connection.
Statement = Union[str, pgsql.Composable, Callable[[psycopg.Connection], Any]]


def _run(conn: psycopg.Connection, statement: Statement, params: Any) -> Any:
    if callable(statement):
        return statement(conn)
    cur = conn.execute(statement, params)
    return cur.fetchall() if cur.description else None

@dataclass
class RouterStats:
    """What the router did: reads per server, LSN waits, time spent waiting."""

    follower_reads: int = 0
    leader_reads: int = 0
    lsn_waits: int = 0
    lsn_fallbacks: int = 0
    wait_ms: list[float] = field(default_factory=list)

    @property
    def reads(self) -> int:
        return self.follower_reads + self.leader_reads


class ReadRouter:
    """Send writes to the leader and reads to the follower, keeping each user's writes visible.

    One router holds one connection to each server and is used by one thread. The per-user
    memory (last write time, last write LSN) stands in for what a web tier keeps in the
    user's session.

    >>> router = ReadRouter(leader_dsn, follower_dsn, strategy="pin", pin_s=2.0)   # doctest: +SKIP
    >>> router.write(1, lambda conn: likes.like(conn, 1, media_id))               # doctest: +SKIP
    >>> router.read(1, lambda conn: likes.count(conn, media_id))                  # doctest: +SKIP
    1
    >>> router.last_source                                                       # doctest: +SKIP
    'leader'
    """

    def __init__(self, leader_dsn: str, follower_dsn: str, strategy: str = "none", *,
                 pin_s: float = 2.0, lsn_timeout_s: float = 1.0) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy={strategy!r}: choose one of {', '.join(STRATEGIES)}")
        self.strategy, self.pin_s, self.lsn_timeout_s = strategy, pin_s, lsn_timeout_s
        self.leader = psycopg.connect(leader_dsn, autocommit=True, connect_timeout=3)
        self.follower = psycopg.connect(follower_dsn, autocommit=True, connect_timeout=3)
        self.stats = RouterStats()
        self.last_source = ""
        self._last_write_at: dict[int, float] = {}
        self._last_write_lsn: dict[int, str] = {}
        if strategy == "remote_apply":
            (names,) = self.leader.execute("SHOW synchronous_standby_names").fetchone()
            if not names:
                self.close()
                raise RuntimeError(
                    "strategy='remote_apply' needs the follower listed as a synchronous standby; "
                    "run lab.postgres.set_synchronous_commit('remote_apply') first")

    # -- writes ---------------------------------------------------------------------------
    def write(self, user_id: int, statement: Statement, params: Any = None) -> str:
        """Run one write for ``user_id`` on the leader, in one transaction; return its WAL position."""
        with self.leader.transaction():
            if self.strategy == "remote_apply":
                self.leader.execute("SET LOCAL synchronous_commit = remote_apply")
            _run(self.leader, statement, params)
        # Taken after the commit: the insert position is at or past the end of the commit
        # record, so a follower that replayed up to it has our write (and maybe a bit more).
        lsn = current_lsn(self.leader)
        self._last_write_at[user_id] = time.monotonic()
        self._last_write_lsn[user_id] = lsn
        return lsn

    # -- reads ----------------------------------------------------------------------------
    def read(self, user_id: int, statement: Statement, params: Any = None) -> Any:
        """Run a read for ``user_id`` where the strategy says; ``last_source`` tells which.

        Returns the rows of a SQL statement, or what a function returns.
        """
        conn = self.leader if self._needs_leader(user_id) else self.follower
        self.last_source = "leader" if conn is self.leader else "follower"
        if conn is self.leader:
            self.stats.leader_reads += 1
        else:
            self.stats.follower_reads += 1
        return _run(conn, statement, params)

    def _needs_leader(self, user_id: int) -> bool:
        if self.strategy == "pin":
            at = self._last_write_at.get(user_id)
            return at is not None and time.monotonic() - at < self.pin_s
        if self.strategy == "lsn_wait":
            lsn = self._last_write_lsn.get(user_id)
            if lsn is None:
                return False
            t0 = time.perf_counter()
            caught_up = replayed(self.follower, lsn, self.lsn_timeout_s)
            self.stats.lsn_waits += 1
            self.stats.wait_ms.append((time.perf_counter() - t0) * 1000)
            if caught_up:
                del self._last_write_lsn[user_id]  # seen once, seen for good
                return False
            self.stats.lsn_fallbacks += 1
            return True
        return False

    def close(self) -> None:
        self.leader.close()
        self.follower.close()

    def __enter__(self) -> "ReadRouter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Cache(Protocol):
    """The part of a memcached client (pymemcache's) that RemoteMarkerCache uses."""

    def get(self, key: str) -> Any: ...
    def set(self, key: str, value: Any, expire: int = 0) -> Any: ...
    def delete(self, key: str) -> Any: ...


class RemoteMarkerCache:
    """Cache-aside over a follower, with a remote marker per key that was just written.

    On write: set ``<key>:marker`` (holding the write's LSN), write on the leader, delete the
    cached value. On a miss: if a marker is present and the follower has not replayed its LSN,
    read the leader; otherwise read the follower (and drop the marker). Either way, refill.

    >>> mc = RemoteMarkerCache(cache, leader_dsn, follower_dsn)                 # doctest: +SKIP
    >>> bio = "UPDATE {}.users SET bio = %s WHERE id = %s"                      # doctest: +SKIP
    >>> mc.write(f"bio:{uid}", sql.SQL(bio).format(schema_of(uid)), ("new", uid))  # doctest: +SKIP
    >>> mc.read(f"bio:{uid}", sql.SQL("SELECT bio FROM {}.users WHERE id = %s")
    ...         .format(schema_of(uid)), (uid,))                                 # doctest: +SKIP
    'new'
    """

    def __init__(self, cache: Cache, leader_dsn: str, follower_dsn: str, *,
                 use_marker: bool = True, ttl_s: int = 300, marker_ttl_s: int = 10) -> None:
        self.cache, self.use_marker = cache, use_marker
        self.ttl_s, self.marker_ttl_s = ttl_s, marker_ttl_s
        self.leader = psycopg.connect(leader_dsn, autocommit=True, connect_timeout=3)
        self.follower = psycopg.connect(follower_dsn, autocommit=True, connect_timeout=3)
        self.sources: dict[str, int] = {"cache": 0, "follower": 0, "leader": 0}

    def write(self, key: str, statement: str | pgsql.Composable, params: Any = None) -> None:
        # The marker goes first: a reader that misses between our commit and our delete
        # must already find it, or it could refill the cache from the stale follower.
        if self.use_marker:
            self.cache.set(f"{key}:marker", b"pending", expire=self.marker_ttl_s)
        self.leader.execute(statement, params)
        if self.use_marker:
            lsn = current_lsn(self.leader)
            self.cache.set(f"{key}:marker", lsn.encode(), expire=self.marker_ttl_s)
        self.cache.delete(key)

    def read(self, key: str, statement: str | pgsql.Composable, params: Any = None) -> Any:
        """The first column of the first row of ``statement``, from the cache when it is there."""
        hit = self.cache.get(key)
        if hit is not None:
            self.sources["cache"] += 1
            return hit.decode()
        conn = self.follower
        if self.use_marker:
            marker = self.cache.get(f"{key}:marker")
            if marker is not None:
                if marker != b"pending" and replayed(self.follower, marker.decode()):
                    self.cache.delete(f"{key}:marker")  # the follower has caught up
                else:
                    conn = self.leader
        self.sources["leader" if conn is self.leader else "follower"] += 1
        rows = conn.execute(statement, params).fetchall()
        value = str(rows[0][0]) if rows else ""
        self.cache.set(key, value.encode(), expire=self.ttl_s)
        return value

    def close(self) -> None:
        self.leader.close()
        self.follower.close()


