"""Cache-aside with Memcached: key scheme, TTLs, serialization, and a read path that counts.

Introduced in notebooks/03_cache_aside.ipynb.

A read asks memcached first; on a miss it reads PostgreSQL and fills the cache (the client
does the filling: "cache-aside", or look-aside in Scaling Memcache at Facebook). Writes go to
PostgreSQL only; the invalidation service (``labkit.backend.invalidation``) deletes the keys a
committed change affects. ``CacheStats`` counts hits, misses, database queries and latency.

What is cached comes from the storage schema of notebook 01 (``labkit.backend.schema``): a
like count is a shard's ``media_likes`` counter row, a profile a shard's ``users`` row, a media
item a shard's ``media`` row, each found in the shard its ID names.

>>> cache = connect_cache(lab.cache_servers)                           # doctest: +SKIP
>>> likes = CacheAside(cache, Database(lab.leader.dsn("ig")), prefix="nb03")  # doctest: +SKIP
>>> likes.like_count(media_id), likes.stats.hit_ratio                  # doctest: +SKIP
(7, 0.0)
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import psycopg
from psycopg import sql
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient

from labkit.backend import likes
from labkit.backend.schema import NotFound, schema_of
from labkit.services.memcached import read_until

# ---------------------------------------------------------------------------- key scheme
# A key is "<prefix>:<kind>:<id>". The prefix namespaces a lab, a test or a notebook, and is
# where a deploy would put a schema version; ids are the 64-bit ids of the data model.
KINDS = ("likes", "profile", "media", "feed")

# How long each kind may live in the cache when nothing invalidates it. Like counts change
# often and a stale count is cheap to notice; profiles and media change rarely. A feed page
# (notebook 09) is deleted when its feed is written, but not when a followed celebrity posts.
TTL_S = {"likes": 60, "profile": 300, "media": 3600, "feed": 60}


def cache_key(prefix: str, kind: str, ident: int) -> str:
    """The memcached key of one object: ``cache_key("ig", "likes", 42) == "ig:likes:42"``."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: choose one of {', '.join(KINDS)}")
    return f"{prefix}:{kind}:{int(ident)}"


# ------------------------------------------------------------------------- serialization
# Counts are stored as ASCII digits (what memcached's incr/decr understand, and cheapest to
# parse); rows as compact JSON, readable with any memcached client.
def dumps(value: Any) -> bytes:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()
    return json.dumps(value, separators=(",", ":")).encode()


def loads(data: bytes) -> Any:
    if data[:1].isdigit() or data[:1] == b"-":
        return int(data)
    return json.loads(data)


# ------------------------------------------------------------------------------ queries
# What each kind caches: one row of the storage schema, in the shard its ID names (never the
# user's token secret). The like count is the denormalized counter, read with likes.count.
PROFILE_SQL = "SELECT id, username, bio FROM {s}.users WHERE id = %s"
MEDIA_SQL = "SELECT id, user_id, caption FROM {s}.media WHERE id = %s"


def load_row(conn: psycopg.Connection, template: str, ident: int) -> tuple | None:
    """One row of ``template`` (``{s}`` = the shard schema of ``ident``), or None if none."""
    try:
        return conn.execute(sql.SQL(template).format(s=schema_of(ident)), (ident,)).fetchone()
    except (psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedTable):
        return None  # a shard this database does not have: the row cannot exist either


def statement_calls(conn: psycopg.Connection, pattern: str) -> int:
    """How many times this database ran statements matching ``pattern``, per PostgreSQL itself.

    Reads ``pg_stat_statements`` (preloaded in the lab; ``CREATE EXTENSION pg_stat_statements``
    once per database), so it counts every query the server executed, whoever sent it:
    clients cannot under-report a thundering herd.
    """
    row = conn.execute(
        "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements s "
        "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database() "
        "AND s.query ILIKE %s", (f"%{pattern}%",)).fetchone()
    return int(row[0])


# ---------------------------------------------------------------------------- connections
def connect_cache(servers: Sequence[tuple[str, int]], *, pooled: bool = False,
                  timeout_s: float = 2.0) -> Any:
    """A pymemcache client for ``servers`` (``lab.cache_servers``).

    One server gives a plain ``Client`` (fastest, one thread at a time); ``pooled=True`` or
    several servers give a ``HashClient`` that threads may share.
    """
    servers = [tuple(s) for s in servers]
    if not servers:
        raise ValueError("no memcached servers given; pass lab.cache_servers")
    if len(servers) == 1 and not pooled:
        return Client(servers[0], connect_timeout=timeout_s, timeout=timeout_s, no_delay=True)
    return HashClient(servers, use_pooling=True, max_pool_size=512, connect_timeout=timeout_s,
                      timeout=timeout_s, no_delay=True)


class Database:
    """A small, thread-safe pool of autocommit connections to one database.

    At most ``size`` connections are open; callers beyond that wait for one (PostgreSQL's
    ``max_connections`` is 300, and a herd of 256 clients must not exhaust it).

    >>> db = Database(lab.leader.dsn("ig"), size=4)        # doctest: +SKIP
    >>> db.query_one("SELECT 1")                          # doctest: +SKIP
    (1,)
    """

    def __init__(self, dsn: str, size: int = 8, timeout_s: float = 30.0) -> None:
        self.dsn, self.size, self.timeout_s = dsn, size, timeout_s
        self._idle: queue.LifoQueue[psycopg.Connection] = queue.LifoQueue()
        self._opened = 0
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        conn = self._take()
        try:
            yield conn
        finally:
            if conn.broken or conn.closed:  # a lost connection is replaced on a later take
                conn.close()
                with self._lock:
                    self._opened -= 1
            else:  # autocommit: even after a failed statement the connection is reusable
                self._idle.put(conn)

    def _take(self) -> psycopg.Connection:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            may_open = self._opened < self.size
            if may_open:
                self._opened += 1
        if may_open:
            try:
                return psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
            except Exception:
                with self._lock:
                    self._opened -= 1
                raise
        try:
            return self._idle.get(timeout=self.timeout_s)
        except queue.Empty:
            raise TimeoutError(f"no database connection free after {self.timeout_s} s; "
                               f"raise Database(size=...) above {self.size}") from None

    def warm(self, n: int | None = None) -> None:
        """Open ``n`` (default ``size``) connections now, so no timed read pays for a login."""
        conns = [self._take() for _ in range(min(n or self.size, self.size))]
        for c in conns:
            self._idle.put(c)

    def query_one(self, sql: str, params: Any = None) -> tuple | None:
        with self.connection() as conn:
            return conn.execute(sql, params).fetchone()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                break
        with self._lock:
            self._opened = 0

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------- counters
@dataclass
class CacheStats:
    """What the read path saw: hits, misses, database queries and latency per read (ms)."""

    hits: int = 0
    misses: int = 0
    db_queries: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def reads(self) -> int:
        return self.hits + self.misses

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.reads if self.reads else 0.0

    def percentile_ms(self, p: float) -> float:
        return percentile(self.latencies_ms, p)

    def summary(self) -> dict[str, float]:
        return {"reads": self.reads, "hits": self.hits, "misses": self.misses,
                "db_queries": self.db_queries, "hit_ratio": round(self.hit_ratio, 3),
                "p50_ms": round(self.percentile_ms(50), 3),
                "p99_ms": round(self.percentile_ms(99), 3)}

    def reset(self) -> None:
        self.hits = self.misses = self.db_queries = 0
        self.latencies_ms = []


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


# ---------------------------------------------------------------------------- cache-aside
class CacheAside:
    """Cache-aside reads of like counts, profiles and media, with counters.

    ``cache`` is a pymemcache client (``connect_cache``), ``db`` a ``Database`` (the leader,
    or a follower for reads) of a database with the storage schema. ``like`` is the write
    path for writers without the invalidation service; ``like(..., invalidate=False)`` shows
    the stale read that skipping the delete causes.

    >>> likes = CacheAside(connect_cache(lab.cache_servers), Database(dsn), prefix="t1")  # doctest: +SKIP
    >>> likes.like_count(media_id)                                                        # doctest: +SKIP
    420
    """

    def __init__(self, cache: Any, db: Database, *, prefix: str = "ig",
                 ttl_s: dict[str, int] | None = None, record_latency: bool = True) -> None:
        self.cache, self.db, self.prefix = cache, db, prefix
        self.ttl_s = {**TTL_S, **(ttl_s or {})}
        self.record_latency = record_latency
        self.stats = CacheStats()

    def key(self, kind: str, ident: int) -> str:
        return cache_key(self.prefix, kind, ident)

    def read(self, kind: str, ident: int, load: Callable[[], Any]) -> Any:
        """The cache-aside read: memcached, else ``load()`` from the database and fill."""
        t0 = time.perf_counter()
        key = f"{self.prefix}:{kind}:{ident}"
        data = self.cache.get(key)
        if data is not None:
            self.stats.hits += 1
            value = loads(data)
        else:
            self.stats.misses += 1
            self.stats.db_queries += 1
            value = load()
            if value is not None:
                # add, not set: if a writer deleted the key and another reader refilled it
                # meanwhile, that newer value wins over ours. It does not help when nobody
                # refilled: a value read before a write and added after its delete stays
                # stale until its TTL (notebook 03 shows it; leases close that race).
                self.cache.add(key, dumps(value), expire=self.ttl_s[kind], noreply=False)
        if self.record_latency:
            self.stats.latencies_ms.append((time.perf_counter() - t0) * 1000)
        return value

    def like_count(self, media_id: int) -> int | None:
        """How many likes ``media_id`` has (its ``media_likes`` counter), through the cache."""
        return self.read("likes", media_id, lambda: self._count(media_id))

    def profile(self, user_id: int) -> dict | None:
        """A user's ``users`` row (id, username, bio), through the cache."""
        return self.read("profile", user_id, lambda: self._row(PROFILE_SQL, user_id,
                                                               ("user_id", "username", "bio")))

    def media(self, media_id: int) -> dict | None:
        """A media item's ``media`` row (id, owner, caption), through the cache."""
        return self.read("media", media_id, lambda: self._row(MEDIA_SQL, media_id,
                                                              ("media_id", "user_id", "caption")))

    def _count(self, media_id: int) -> int | None:
        with self.db.connection() as conn:
            try:
                return likes.count(conn, media_id)
            except NotFound:
                return None

    def _row(self, template: str, ident: int, names: tuple[str, ...]) -> dict | None:
        with self.db.connection() as conn:
            row = load_row(conn, template, ident)
        return None if row is None else dict(zip(names, row))

    def invalidate(self, kind: str, ident: int) -> None:
        self.cache.delete(self.key(kind, ident), noreply=False)

    def like(self, user_id: int, media_id: int, *, invalidate: bool = True) -> bool:
        """``user_id`` likes ``media_id`` on the database; then delete the cached count.

        The like goes through ``labkit.backend.likes`` (like row and counter in one
        transaction; ``db`` must be the leader). ``invalidate=False`` is the writer that
        forgets the cache. Returns what ``likes.like`` returns (False on a double tap).
        """
        with self.db.connection() as conn:
            changed = likes.like(conn, user_id, media_id)
        if invalidate:
            self.invalidate("likes", media_id)
        return changed


# ------------------------------------------------------------------------- key sweeps
def delete_prefix(servers: Sequence[tuple[str, int]], prefix: str,
                  timeout_s: float = 5.0) -> int:
    """Delete every key that starts with ``prefix`` on every server; return how many.

    Memcached has no "delete by pattern": the keys come from the LRU crawler's dump
    (``lru_crawler metadump all``, memcached >= 1.4.31) and are deleted with quiet meta
    deletes (``md <key> q``) on the server that holds them, then a ``mn`` waits for them all.
    What a TRUNCATE invalidates, and what a dropped namespace leaves behind. Written here
    because pymemcache has no crawler command. Keys stored after the dump began may survive.
    """
    from urllib.parse import unquote
    total = 0
    for server in servers:
        keys = []
        with socket.create_connection(tuple(server), timeout=timeout_s) as s:
            s.sendall(b"lru_crawler metadump all\r\n")
            dump = read_until(s, b"END\r\n", b"ERROR\r\n")
            for line in dump.decode(errors="replace").splitlines():
                if line.startswith("key="):
                    key = unquote(line.split(" ", 1)[0][4:])
                    if key.startswith(prefix):
                        keys.append(key)
            s.sendall(b"".join(f"md {key} q\r\n".encode() for key in keys) + b"mn\r\n")
            read_until(s, b"MN\r\n")
        total += len(keys)
    return total
