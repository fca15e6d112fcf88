"""Home feeds and activity in Cassandra: time-bucketed partitions, fan-out, paging, a page cache.

Introduced in notebooks/09_cassandra_feeds.ipynb.

Three tables, in a keyspace replicated to three replicas of the ring (NetworkTopologyStrategy
``{us: 3}``):

``feed_by_user``      ((user_id, bucket), media_id DESC) -> author_id: a viewer's home feed,
                      one row per post of someone they follow (written by the fan-out).
``posts_by_user``     ((user_id, bucket), media_id DESC): an author's own posts; the feed of
                      an account too popular to fan out is merged from here at read time.
``activity_by_user``  ((user_id, bucket), at_ms DESC, kind, actor_id, media_id): likes and
                      follows a user received ("X liked your photo").

A partition is one user's rows of one **time bucket** (``BUCKET_DAYS`` = 7 days, numbered from
the Unix epoch): without the bucket a user's feed would be one partition growing for years
(Cassandra wants partitions well under ~100 MB); with it a page of the newest posts reads one
partition, two at a bucket's edge. Media IDs carry their creation millisecond (notebook 01), so
``media_id DESC`` is newest first and the bucket of a post is computed from its ID alone.
Reads go back ``HORIZON_BUCKETS`` buckets (13 weeks): older posts leave the feed.

**Paging** uses the driver's paging state: a page asks a partition for ``count`` rows
(``fetch_size``) and the driver returns a paging state with them; the next page passes it back.
A feed merged from several partitions (a hybrid feed, below) keeps one position per partition:
the paging state of the fetch that holds its next row and how many rows of that fetch were
already shown. ``FeedPage.cursor`` is that, opaque to the client (base64 JSON); ``None`` on the
last page.

**Fan-out**: a new post is written into every follower's ``feed_by_user`` (fan-out on write,
by Celery tasks in batches: ``labkit.backend.tasks``), except for an account with more than
``threshold`` followers, whose posts stay in ``posts_by_user`` and are merged into its
followers' pages when they read (fan-out on read): the hybrid large feeds use. Both return the
same feed; the merge is ``page(..., celebrities=...)``. Every write carries its whole primary
key (the follower, the post's bucket, the post), so a task that runs twice writes the same rows
again: delivered at least once, stored once.

**Page cache** (``FeedCache``): a viewer's first page in memcached under a lease (memcached's
meta protocol, ``labkit.backend.leases``). A feed write goes to Cassandra first and deletes the
page after; the delete also cancels the lease of a refill in flight, so a refill that read the
feed *before* the write cannot store its old page after the delete. That needs the refill's
read to see the write: ``W + R > RF`` (QUORUM writes and reads, the defaults here).

>>> session = lab.cassandra.connect()                                   # doctest: +SKIP
>>> install(session, "feeds")                                           # doctest: +SKIP
>>> feeds = Feeds(session, "feeds")                                     # doctest: +SKIP
>>> feeds.deliver(media_id, author_id, [viewer_id])                     # doctest: +SKIP
>>> feeds.page(viewer_id, count=20).items[0].media_id == media_id      # doctest: +SKIP
True
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

from labkit.backend import ids
from labkit.services.cassandra.driver import DDL_TIMEOUT_S, wait_for_schema
from labkit.services.cassandra.driver import create_keyspace as make_keyspace

BUCKET_DAYS = 7
HORIZON_BUCKETS = 13
DEFAULT_PAGE_SIZE = 20
LEVELS = ("ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_ONE", "LOCAL_QUORUM")

TABLES = {
    "feed_by_user": """
        CREATE TABLE IF NOT EXISTS {ks}.feed_by_user (
            user_id bigint, bucket int, media_id bigint, author_id bigint,
            PRIMARY KEY ((user_id, bucket), media_id)
        ) WITH CLUSTERING ORDER BY (media_id DESC)""",
    "posts_by_user": """
        CREATE TABLE IF NOT EXISTS {ks}.posts_by_user (
            user_id bigint, bucket int, media_id bigint,
            PRIMARY KEY ((user_id, bucket), media_id)
        ) WITH CLUSTERING ORDER BY (media_id DESC)""",
    # The clustering key is the activity itself (when, what, who, on which post): a like
    # recorded twice is the same row, never two (no fresh timeuuid in the key).
    "activity_by_user": """
        CREATE TABLE IF NOT EXISTS {ks}.activity_by_user (
            user_id bigint, bucket int, at_ms bigint, kind text, actor_id bigint,
            media_id bigint,
            PRIMARY KEY ((user_id, bucket), at_ms, kind, actor_id, media_id)
        ) WITH CLUSTERING ORDER BY (at_ms DESC, kind ASC, actor_id ASC, media_id ASC)""",
}


class FeedItem(NamedTuple):
    """One post in a feed: the post and who posted it."""

    media_id: int
    author_id: int


class Activity(NamedTuple):
    """One thing a user received: ``kind`` ("like" or "follow") by ``actor_id`` at ``at_ms``."""

    at_ms: int
    kind: str
    actor_id: int
    media_id: int


@dataclass
class FeedPage:
    """A page of a feed, newest first, and the cursor of the next page (None: the last)."""

    items: list[FeedItem]
    cursor: str | None

    def to_json(self) -> dict[str, Any]:
        return {"items": [list(i) for i in self.items], "cursor": self.cursor}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "FeedPage":
        return cls([FeedItem(*i) for i in d["items"]], d["cursor"])


# ------------------------------------------------------------------------------ buckets

def bucket_of_ms(unix_ms: int, bucket_days: int = BUCKET_DAYS) -> int:
    """The time bucket (``bucket_days`` wide, counted from 1970) of a Unix time in ms."""
    return int(unix_ms) // (bucket_days * 86_400_000)


def bucket_of(media_id: int, bucket_days: int = BUCKET_DAYS) -> int:
    """The bucket of a post, from the millisecond its ID carries."""
    return bucket_of_ms(ids.EPOCH_MS + ids.decode(media_id).ms, bucket_days)


def _last_id_of(bucket: int, bucket_days: int = BUCKET_DAYS) -> int:
    """The largest media ID a post of ``bucket`` can have (its last millisecond, any shard)."""
    end_ms = (bucket + 1) * bucket_days * 86_400_000 - 1 - ids.EPOCH_MS
    return ids.make_id(end_ms, ids.MAX_SHARDS - 1, ids.SEQ_PER_MS - 1)


def consistency(level: str | int) -> int:
    """A driver ``ConsistencyLevel`` from its name ("QUORUM") or value."""
    from cassandra import ConsistencyLevel
    if isinstance(level, int) and level in ConsistencyLevel.value_to_name:
        return level
    value = ConsistencyLevel.name_to_value.get(str(level).upper())
    if value is None:
        raise ValueError(f"consistency level {level!r}: choose one of {', '.join(LEVELS)}")
    return value


# ------------------------------------------------------------------------------ schema

def check_keyspace(keyspace: str) -> str:
    """``keyspace`` if it is a valid Cassandra name (letters, digits, _; at most 48)."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,47}", keyspace or ""):
        raise ValueError(f"keyspace {keyspace!r}: use a letter then letters, digits or _ "
                         "(at most 48 characters)")
    return keyspace.lower()


def install(session: Any, keyspace: str, *, dc: str = "us", rf: int = 3,
            create_keyspace: bool = True) -> str:
    """Create the keyspace (NetworkTopologyStrategy ``{dc: rf}``) and the three tables.

    Idempotent. ``create_keyspace=False`` only adds the tables to a keyspace that exists
    (a grading namespace's, made by the grader). Returns the keyspace name.
    """
    ks = check_keyspace(keyspace)
    if create_keyspace:
        make_keyspace(session, ks, {dc: rf})
    for ddl in TABLES.values():
        session.execute(ddl.format(ks=ks), timeout=DDL_TIMEOUT_S)
    wait_for_schema(session)  # the driver's own wait gives up after 10 s, silently
    return ks


# ------------------------------------------------------------------------------- feeds

class Feeds:
    """Writes and reads of ``feed_by_user``, ``posts_by_user`` and ``activity_by_user``.

    ``session`` is a driver session (``lab.cassandra.connect()``); every statement is prepared
    once. Writes run at ``write_cl``, reads at ``read_cl`` (names such as "QUORUM").
    """

    def __init__(self, session: Any, keyspace: str, *, write_cl: str = "QUORUM",
                 read_cl: str = "QUORUM", bucket_days: int = BUCKET_DAYS,
                 horizon_buckets: int = HORIZON_BUCKETS, concurrency: int = 64) -> None:
        self.session, self.keyspace = session, check_keyspace(keyspace)
        self.write_cl, self.read_cl = consistency(write_cl), consistency(read_cl)
        self.bucket_days, self.horizon_buckets = bucket_days, horizon_buckets
        self.concurrency = concurrency
        self.partition_reads = 0  # partition fetches by page(): what a page costs Cassandra
        ks = self.keyspace
        prepare = session.prepare
        self._insert_feed = prepare(f"INSERT INTO {ks}.feed_by_user "
                                    "(user_id, bucket, media_id, author_id) VALUES (?, ?, ?, ?)")
        self._insert_post = prepare(f"INSERT INTO {ks}.posts_by_user "
                                    "(user_id, bucket, media_id) VALUES (?, ?, ?)")
        self._insert_activity = prepare(
            f"INSERT INTO {ks}.activity_by_user (user_id, bucket, at_ms, kind, actor_id, "
            "media_id) VALUES (?, ?, ?, ?, ?, ?)")
        self._select = {
            "feed": prepare(f"SELECT media_id, author_id FROM {ks}.feed_by_user "
                            "WHERE user_id = ? AND bucket = ?"),
            "posts": prepare(f"SELECT media_id, user_id FROM {ks}.posts_by_user "
                             "WHERE user_id = ? AND bucket = ?"),
            "activity": prepare(f"SELECT at_ms, kind, actor_id, media_id FROM "
                                f"{ks}.activity_by_user WHERE user_id = ? AND bucket = ?"),
        }
        for stmt in (self._insert_feed, self._insert_post, self._insert_activity):
            stmt.consistency_level = self.write_cl
        for stmt in self._select.values():
            stmt.consistency_level = self.read_cl

    def bucket(self, media_id: int) -> int:
        return bucket_of(media_id, self.bucket_days)

    def now_bucket(self) -> int:
        return bucket_of_ms(int(time.time() * 1000), self.bucket_days)

    # -- writes -----------------------------------------------------------------------
    def add_post(self, author_id: int, media_id: int) -> None:
        """The author's own row (``posts_by_user``): what a fan-out on read merges in."""
        self.session.execute(self._insert_post, (author_id, self.bucket(media_id), media_id))

    def deliver(self, media_id: int, author_id: int, follower_ids: Iterable[int]) -> int:
        """Write the post into each follower's feed (one row each); return rows written.

        The rows go out concurrently (up to ``concurrency`` in flight, each to a replica of
        its partition by the driver's token-aware routing); the first error stops the rest and
        is raised (a task retries the whole batch: a row written twice is stored once).
        """
        from cassandra.concurrent import execute_concurrent_with_args
        bucket = self.bucket(media_id)
        rows = [(f, bucket, media_id, author_id) for f in follower_ids]
        if rows:
            execute_concurrent_with_args(self.session, self._insert_feed, rows,
                                         concurrency=self.concurrency, raise_on_first_error=True)
        return len(rows)

    def record_like(self, owner_id: int, liker_id: int, media_id: int, liked_at: datetime) -> None:
        """``owner_id``'s activity row for a like, keyed by the like itself (idempotent)."""
        self._record(owner_id, int(liked_at.timestamp() * 1000), "like", liker_id, media_id)

    def record_follow(self, followee_id: int, follower_id: int, followed_at: datetime) -> None:
        """``followee_id``'s activity row for a new follower (idempotent, like ``record_like``)."""
        self._record(followee_id, int(followed_at.timestamp() * 1000), "follow", follower_id, 0)

    def _record(self, user_id: int, at_ms: int, kind: str, actor_id: int, media_id: int) -> None:
        self.session.execute(self._insert_activity, (
            user_id, bucket_of_ms(at_ms, self.bucket_days), at_ms, kind, actor_id, media_id))

    # -- reads ------------------------------------------------------------------------
    def page(self, viewer_id: int, *, count: int = DEFAULT_PAGE_SIZE, cursor: str | None = None,
             celebrities: Sequence[int] = ()) -> FeedPage:
        """The next ``count`` posts of ``viewer_id``'s feed, newest first.

        ``celebrities``: the accounts the viewer follows whose posts are not fanned out; their
        ``posts_by_user`` partitions are merged with the viewer's ``feed_by_user`` (fan-out on
        read). ``cursor`` is the one the previous page returned (None for the first page).
        """
        if not 1 <= count <= 500:
            raise ValueError(f"count={count}: ask for 1 to 500 posts per page")
        if cursor is None:
            top = self.now_bucket()
            floor = top - self.horizon_buckets + 1
            streams = [("feed", int(viewer_id), top, None, 0)]
            streams += [("posts", int(c), top, None, 0) for c in sorted(set(celebrities))]
        else:
            floor, streams = _decode_cursor(cursor, viewer_id, celebrities)
        sources = [self._rows(kind, key, bucket, state, skip, floor, count)
                   for kind, key, bucket, state, skip in streams]
        # A k-way merge, newest first (media IDs are unique and time-ordered). Each source has
        # one entry in the heap: its next row, or, before it reads an older week, a stand-in
        # for that week (sorted by the largest ID the week can hold), so a week is only read
        # once the page has nothing newer to show. Each entry carries where to resume.
        heap: list[tuple[int, int, FeedItem | None, tuple]] = []

        def advance(i: int) -> None:
            nxt = next(sources[i], None)
            if nxt is not None:
                item, pos, bound = nxt
                heapq.heappush(heap, (-bound, i, item, pos))

        for i in range(len(sources)):
            advance(i)
        items: list[FeedItem] = []
        while heap and len(items) < count:
            _, i, item, _ = heapq.heappop(heap)
            # A post fanned out before its author became a celebrity is in both partitions.
            if item is not None and (not items or items[-1].media_id != item.media_id):
                items.append(item)
            advance(i)
        rest = [(streams[i][0], streams[i][1], *pos)
                for _, i, _, pos in sorted(heap, key=lambda h: h[1])]
        return FeedPage(items, _encode_cursor(floor, rest) if rest else None)

    def _rows(self, kind: str, key: int, bucket: int, state: bytes | None, skip: int,
              floor: int, fetch: int) -> Iterator[tuple[FeedItem | None, tuple, int]]:
        """A partition series newest first, fetched lazily: (item, position, sort bound).

        The position is (bucket, paging state of the fetch holding the item, its index in
        that fetch): executing that fetch again and skipping that many rows resumes there.
        Before each fetch comes a stand-in ``(None, where the fetch starts, the largest ID it
        can return)``, so that nothing is read before the merge needs it.
        """
        stmt = self._select[kind]
        newest = _last_id_of(bucket, self.bucket_days)
        while bucket >= floor:
            if skip == 0:
                yield None, (bucket, state, 0), min(newest, _last_id_of(bucket, self.bucket_days))
            bound = stmt.bind((key, bucket))
            bound.fetch_size = fetch
            rs = self.session.execute(bound, paging_state=state)
            self.partition_reads += 1
            rows = rs.current_rows
            for i in range(skip, len(rows)):
                yield FeedItem(rows[i][0], rows[i][1]), (bucket, state, i), rows[i][0]
                newest = rows[i][0] - 1
            if rs.paging_state is not None:
                state, skip = rs.paging_state, 0
            else:
                bucket, state, skip = bucket - 1, None, 0

    def all_items(self, viewer_id: int, *, count: int = DEFAULT_PAGE_SIZE,
                  celebrities: Sequence[int] = ()) -> list[FeedItem]:
        """Every post of the feed within the horizon, page after page."""
        out: list[FeedItem] = []
        page = self.page(viewer_id, count=count, celebrities=celebrities)
        out += page.items
        while page.cursor is not None:
            page = self.page(viewer_id, count=count, cursor=page.cursor, celebrities=celebrities)
            out += page.items
        return out

    def activity(self, user_id: int, *, count: int = DEFAULT_PAGE_SIZE) -> list[Activity]:
        """The newest ``count`` things ``user_id`` received, newest first."""
        out: list[Activity] = []
        bucket = self.now_bucket()
        stmt = self._select["activity"]
        while len(out) < count and bucket > self.now_bucket() - self.horizon_buckets:
            bound = stmt.bind((user_id, bucket))
            bound.fetch_size = count - len(out)
            out += [Activity(*r) for r in self.session.execute(bound).current_rows]
            bucket -= 1
        return out[:count]


# ------------------------------------------------------------------------------ cursors

def _encode_cursor(floor: int, streams: list[tuple]) -> str:
    doc = {"v": 1, "floor": floor,
           "s": [[kind, key, bucket, base64.b64encode(state).decode() if state else None, skip]
                 for kind, key, bucket, state, skip in streams]}
    return base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()


def _decode_cursor(cursor: str, viewer_id: int, celebrities: Sequence[int]) -> tuple[int, list]:
    """(floor, streams) from a cursor ``page`` returned; a forged or foreign one is refused."""
    fix = ("pass the `cursor` the previous page of this feed returned, or None for the "
           "first page")
    try:
        doc = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        floor = int(doc["floor"])
        streams = [(str(k), int(key), int(b), base64.b64decode(st) if st else None, int(skip))
                   for k, key, b, st, skip in doc["s"]]
    except (ValueError, KeyError, TypeError, binascii.Error, AttributeError):
        raise ValueError(f"cursor {str(cursor)[:20]!r}... is not a feed cursor: {fix}") from None
    allowed = {("feed", int(viewer_id))} | {("posts", int(c)) for c in celebrities}
    if doc.get("v") != 1 or not streams or any((k, key) not in allowed
                                               for k, key, *_ in streams):
        raise ValueError(f"this cursor belongs to another feed (another viewer or other "
                         f"followed accounts): {fix}")
    return floor, streams


# ---------------------------------------------------------------------------- the hybrid

class Celebrities:
    """Accounts with more than ``threshold`` followers (fanned out on read), from PostgreSQL.

    Every web worker keeps the list and reads it again after ``refresh_s``: the aggregate
    over ``follows`` (``schema.popular``) is too costly for each request, and the list is small.
    """

    def __init__(self, threshold: int, refresh_s: float = 30.0) -> None:
        self.threshold, self.refresh_s = threshold, refresh_s
        self._ids: frozenset[int] = frozenset()
        self._at = float("-inf")

    def get(self, conn: Any) -> frozenset[int]:
        if time.monotonic() - self._at > self.refresh_s:
            from labkit.backend import schema
            self._ids = frozenset(schema.popular(conn, self.threshold))
            self._at = time.monotonic()
        return self._ids

    def followed_by(self, conn: Any, viewer_id: int) -> list[int]:
        """The celebrities ``viewer_id`` follows: whose posts its feed merges at read time."""
        from labkit.backend import schema
        celebs = self.get(conn)
        return sorted(f for f in schema.followees(conn, viewer_id) if f in celebs)


# ----------------------------------------------------------------- the ranker's candidates

class CassandraCandidates:
    """A ``ranking.CandidateSource`` over ``feed_by_user``: the web tier's feed from Cassandra.

    The candidates are the first ``limit`` posts of the viewer's feed (merged with the
    celebrities they follow, through the page cache when one is given); like counts,
    followees and captions come from PostgreSQL (``conn``, a follower connection), as
    ``ranking.PostgresCandidates`` reads them. The ranker is unchanged.
    """

    def __init__(self, feeds: Feeds, conn: Any, *, celebrities: Celebrities | None = None,
                 cache: FeedCache | None = None, limit: int = 200) -> None:
        self.feeds, self.conn, self.celebrities, self.cache = feeds, conn, celebrities, cache
        self.limit = limit

    def candidates(self, viewer_id: int) -> Any:
        from labkit.backend import likes, ranking, schema
        celebs = self.celebrities.followed_by(self.conn, viewer_id) if self.celebrities else []

        def load() -> FeedPage:
            return self.feeds.page(viewer_id, count=self.limit, celebrities=celebs)

        page = self.cache.first_page(viewer_id, load) if self.cache else load()
        counts = likes.counts(self.conn, [i.media_id for i in page.items])
        return ranking.Candidates.from_rows(
            ((i.media_id, i.author_id, counts.get(i.media_id, 0)) for i in page.items),
            schema.followees(self.conn, viewer_id))

    def details(self, media_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        from labkit.backend import ranking
        return ranking.PostgresCandidates(self.conn).details(media_ids)


# ---------------------------------------------------------------------------- page cache

class FeedCache:
    """A viewer's first feed page in memcached, refilled under a lease, deleted on a write.

    ``lease`` is a ``labkit.backend.leases`` lease (``make_lease("meta", servers)``: memcached
    gives the lease; ``"none"`` is plain cache-aside, to show the race it leaves open). Only
    the first page is cached: it is the one every app open asks for; later pages come from
    Cassandra. A post of a celebrity (merged at read time, never written into the viewer's
    feed) deletes nothing: it shows up when the page expires, after at most ``ttl_s``.
    """

    def __init__(self, lease: Any, *, prefix: str, ttl_s: int = 60) -> None:
        self.lease, self.prefix, self.ttl_s = lease, prefix, ttl_s

    def key(self, viewer_id: int) -> str:
        from labkit.backend.cache import cache_key
        return cache_key(self.prefix, "feed", viewer_id)

    def first_page(self, viewer_id: int, load: Any) -> FeedPage:
        """The cached first page, or ``load()`` (a ``FeedPage``) stored under the lease; with
        memcached unreachable, ``load()`` (``Lease.read_or_load``)."""
        return FeedPage.from_json(self.lease.read_or_load(self.key(viewer_id),
                                                          lambda: load().to_json(), self.ttl_s))

    def invalidate(self, viewer_ids: Iterable[int]) -> None:
        """Delete these viewers' cached pages (after their feeds were written in Cassandra)."""
        for viewer_id in viewer_ids:
            self.lease.invalidate(self.key(viewer_id))


# --------------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class FeedConfig:
    """What a process needs to reach the feeds: Cassandra, the page cache, the fan-out rule.

    Plain values, so it travels as JSON to Celery workers and web servers (a file of mode
    0600: it holds a password). ``threshold``: accounts with more followers are merged at read
    time; ``batch_size``: followers per fan-out task.
    """

    keyspace: str
    contact_points: tuple[tuple[str, int], ...]
    user: str
    password: str = field(repr=False)
    write_cl: str = "QUORUM"
    read_cl: str = "QUORUM"
    cache_servers: tuple[tuple[str, int], ...] = ()
    cache_prefix: str = "feed"
    cache_ttl_s: int = 60
    threshold: int = 10_000
    batch_size: int = 500
    bucket_days: int = BUCKET_DAYS
    # For demonstration only (notebook 12's checker tests): the fan-out leaves out the first
    # this many followers of every post, a bug the feed checker must report.
    demo_skip_followers: int = 0

    def __post_init__(self) -> None:
        check_keyspace(self.keyspace)
        consistency(self.write_cl), consistency(self.read_cl)
        object.__setattr__(self, "contact_points", tuple((h, int(p)) for h, p in self.contact_points))
        object.__setattr__(self, "cache_servers", tuple((h, int(p)) for h, p in self.cache_servers))
        if self.batch_size < 1 or self.threshold < 0:
            raise ValueError(f"batch_size={self.batch_size}, threshold={self.threshold}: give a "
                             "batch of at least 1 follower and a threshold of 0 or more")

    @classmethod
    def from_lab(cls, lab: Any, keyspace: str, **kwargs: Any) -> "FeedConfig":
        """The lab's ring (its superuser) and memcached, for ``keyspace``."""
        creds = lab.cassandra.credentials
        kwargs.setdefault("cache_servers", tuple(lab.cache_servers) if lab.memcached else ())
        return cls(keyspace, tuple(lab.cassandra.contact_points), creds.user, creds.password,
                   **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeedConfig":
        return cls(**d)

    def connect(self) -> Any:
        """A new driver session on the keyspace (shut it down with ``session.cluster.shutdown()``)."""
        from labkit.services.cassandra import CassandraCredentials, driver_cluster
        creds = CassandraCredentials(self.user, self.password, jmx_password="")
        cluster = driver_cluster(self.contact_points, credentials=creds)
        try:
            return cluster.connect(self.keyspace)
        except BaseException:
            cluster.shutdown()
            raise

    def feeds(self, session: Any) -> Feeds:
        return Feeds(session, self.keyspace, write_cl=self.write_cl, read_cl=self.read_cl,
                     bucket_days=self.bucket_days)

    def cache(self) -> FeedCache | None:
        """The page cache (a meta-protocol lease), or None without memcached servers."""
        if not self.cache_servers:
            return None
        from labkit.backend.leases import make_lease
        return FeedCache(make_lease("meta", self.cache_servers), prefix=self.cache_prefix,
                         ttl_s=self.cache_ttl_s)


# ------------------------------------------------------------------------- posting a photo

def publish(conn: Any, feeds: Feeds, app: Any, author_id: int, caption: str = "") -> int:
    """Post a photo: its row in PostgreSQL, the author's row in Cassandra, then the fan-out.

    ``app`` is a Celery app with the feed tasks (``tasks.make_app(..., feeds=...)``); the
    request returns once ``fan_out_post`` is queued. Returns the new media ID.
    """
    from labkit.backend import schema
    media_id = schema.create_media(conn, author_id, caption)
    feeds.add_post(author_id, media_id)
    app.tasks["fan_out_post"].delay(media_id=media_id, author_id=author_id)
    return media_id
