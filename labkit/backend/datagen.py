"""Load a realistic Instagram graph fast: COPY, not row-by-row INSERT, with a progress bar.

Popularity follows a power law, as on the real service: a few accounts have most of the
followers and a few posts most of the likes. IDs are made in Python with the same layout as
the PL/pgSQL function (``labkit.backend.ids``), back-dated over the last ``days`` so they never
meet the IDs the database makes now; like counters are written from the generated likes, so
they equal ``COUNT(*)`` from the start.

Introduced in notebooks/01_data_model.ipynb.

>>> with lab.leader.connect("instagram") as conn:          # doctest: +SKIP
...     graph = generate(conn, users=1_000, likes=50_000)
...     add_likes(conn, graph.hot_media_id, 1_000_000)     # one post goes viral
"""

from __future__ import annotations

import itertools
import random
import secrets
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import psycopg
from psycopg import sql
from tqdm.auto import tqdm

from labkit.backend import ids, schema
from labkit.services.postgres import current_lsn, replayed

# Likes from accounts that are not loaded as rows (the rest of the world) use this shard and
# tiny timestamps, so their IDs count up from 1 and never meet a real account's ID.
FANS_SHARD = ids.MAX_SHARDS - 1
_FANS_BELOW = 1 << 53
_COPY_BATCH = 50_000


@dataclass
class Graph:
    """What ``generate`` loaded: row counts and the IDs later cells need."""

    user_ids: list[int]
    media_ids: list[int]
    likes: int
    follows: int
    comments: int
    hot_media_id: int  # the most-liked media item
    counts: dict[str, int] = field(default_factory=dict)


def power_law_weights(n: int, alpha: float = 1.1) -> list[float]:
    """Zipf weights 1/rank**alpha for ``n`` items (rank 1 is the most popular)."""
    return [1.0 / (rank ** alpha) for rank in range(1, n + 1)]


def generate(conn: psycopg.Connection, *, users: int = 1_000, media_per_user: float = 3.0,
             follows_per_user: float = 20.0, likes: int = 20_000,
             comments_per_media: float = 0.5, alpha: float = 1.1, days: int = 90,
             seed: int = 42, progress: bool = True) -> Graph:
    """Load ``users`` accounts with media, follows, likes and comments into ``conn``'s shards.

    ``likes`` is the total number of like rows; who gets them follows a power law with
    exponent ``alpha``, as do follower counts. Rows go in with COPY, in one transaction.
    """
    rng = random.Random(seed)
    shard_list = schema.shards(conn)
    make = _IdMaker(rng, days)
    bar = tqdm(total=4, desc="generating", disable=not progress, unit="table")

    user_ids = [make(rng.choice(shard_list)) for _ in range(users)]
    n_media = max(1, round(users * media_per_user))
    # Popular accounts post more, too: owners drawn by the same power law.
    user_weights = list(itertools.accumulate(power_law_weights(users, alpha)))
    owners = rng.choices(user_ids, cum_weights=user_weights, k=n_media)
    media = [(make(ids.shard_of(owner)), owner) for owner in owners]
    media_ids = [m for m, _ in media]

    follow_pairs: set[tuple[int, int]] = set()
    n_follows = min(round(users * follows_per_user), users * (users - 1) // 2)
    while len(follow_pairs) < n_follows:
        batch = rng.choices(user_ids, cum_weights=user_weights, k=n_follows - len(follow_pairs))
        for followee in batch:
            follower = rng.choice(user_ids)
            if follower != followee:
                follow_pairs.add((follower, followee))

    media_weights = list(itertools.accumulate(power_law_weights(n_media, alpha)))
    like_pairs: set[tuple[int, int]] = set()
    likes = min(likes, n_media * users)
    while len(like_pairs) < likes:
        batch = rng.choices(media_ids, cum_weights=media_weights, k=likes - len(like_pairs))
        like_pairs.update((m, rng.choice(user_ids)) for m in batch)
    per_media = dict.fromkeys(media_ids, 0)
    for m, _ in like_pairs:
        per_media[m] += 1

    n_comments = round(n_media * comments_per_media)
    comment_rows = []
    for m in rng.choices(media_ids, cum_weights=media_weights, k=n_comments):
        comment_rows.append((make(ids.shard_of(m), after=m), m, rng.choice(user_ids), "nice!"))

    with conn.transaction():
        # created_at agrees with the time inside each ID (IDs are back-dated).
        _copy_sharded(conn, "users", ("id", "username", "token_secret", "created_at"),
                      ((u, f"user{i}", secrets.token_urlsafe(12), ids.decode(u).created_at)
                       for i, u in enumerate(user_ids)))
        _copy_sharded(conn, "media", ("id", "user_id", "caption", "created_at"),
                      ((m, owner, f"photo {i}", ids.decode(m).created_at)
                       for i, (m, owner) in enumerate(media)))
        _copy_sharded(conn, "media_likes", ("media_id", "count"), per_media.items())
        bar.update()
        _copy_sharded(conn, "follows", ("follower_id", "followee_id"), follow_pairs)
        bar.update()
        _copy_sharded(conn, "user_likes_media", ("media_id", "user_id"), like_pairs)
        bar.update()
        _copy_sharded(conn, "comments", ("id", "media_id", "user_id", "text", "created_at"),
                      (row + (ids.decode(row[0]).created_at,) for row in comment_rows))
        bar.update()
    bar.close()
    hot = max(per_media, key=per_media.__getitem__)
    return Graph(user_ids, media_ids, len(like_pairs), len(follow_pairs), len(comment_rows), hot,
                 counts={"users": users, "media": n_media, "likes": len(like_pairs),
                         "follows": len(follow_pairs), "comments": len(comment_rows)})


def add_likes(conn: psycopg.Connection, media_id: int, n: int, *, progress: bool = True,
              batch: int = _COPY_BATCH) -> int:
    """Add ``n`` likes to ``media_id`` from accounts not seen on it yet; return its new count.

    The like rows go in with COPY and the counter moves by ``n`` in the same transaction, so
    the counter still equals ``COUNT(*)``. 10^6 likes take a few seconds.
    """
    s = schema.schema_of(media_id)
    start = _next_fan(conn, s, media_id)
    copy = sql.SQL("COPY {}.user_likes_media (media_id, user_id) FROM STDIN").format(s)
    with conn.transaction():
        bumped = conn.execute(sql.SQL("UPDATE {}.media_likes SET count = count + %s "
                                      "WHERE media_id = %s RETURNING count").format(s),
                              (n, media_id)).fetchone()
        if bumped is None:
            raise schema.NotFound(f"no media item {media_id}")
        with tqdm(total=n, desc=f"likes on {media_id}", unit="like", unit_scale=True,
                  disable=not progress) as bar, conn.cursor().copy(copy) as cp:
            prefix = f"{media_id}\t"
            for lo in range(start, start + n, batch):
                hi = min(lo + batch, start + n)
                cp.write("".join(f"{prefix}{_fan_id(k)}\n" for k in range(lo, hi)))
                bar.update(hi - lo)
    return bumped[0]


def _fan_id(k: int) -> int:
    # ms = 1 + k // 1024 keeps fan IDs increasing with k and far below any real account's ID.
    return ((1 + (k >> ids.SEQ_BITS)) << (ids.SHARD_BITS + ids.SEQ_BITS)) | \
        (FANS_SHARD << ids.SEQ_BITS) | (k & (ids.SEQ_PER_MS - 1))


def _next_fan(conn: psycopg.Connection, s: sql.Identifier, media_id: int) -> int:
    q = sql.SQL("SELECT max(user_id) FROM {}.user_likes_media "
                "WHERE media_id = %s AND user_id < %s").format(s)
    (top,), = conn.execute(q, (media_id, _FANS_BELOW)).fetchall()
    if top is None:
        return 0
    d = ids.decode(top)
    return ((d.ms - 1) << ids.SEQ_BITS) + d.seq + 1


class _IdMaker:
    """IDs in the PL/pgSQL layout, each at a distinct back-dated millisecond per shard."""

    def __init__(self, rng: random.Random, days: int) -> None:
        self.rng, self.hi = rng, ids.now_ms() - 3_600_000  # an hour ago and earlier
        self.lo = self.hi - days * 86_400_000
        self.used: set[tuple[int, int]] = set()

    def __call__(self, shard: int, after: int | None = None) -> int:
        """A new ID in ``shard``, made after the ID ``after`` (a comment after its post)."""
        lo = min(self.hi - 1, ids.decode(after).ms + 1) if after else self.lo
        while True:
            ms = self.rng.randrange(lo, self.hi)
            if (ms, shard) not in self.used:
                self.used.add((ms, shard))
                return ids.make_id(ms, shard, self.rng.randrange(ids.SEQ_PER_MS))


def _copy_sharded(conn: psycopg.Connection, table: str, columns: tuple[str, ...],
                  rows: Iterable[tuple]) -> None:
    """COPY rows into ``table`` of each row's shard (the shard of its first column's ID)."""
    by_shard: dict[int, list[tuple]] = {}
    for row in rows:
        by_shard.setdefault(ids.shard_of(row[0]), []).append(row)
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    for shard, shard_rows in sorted(by_shard.items()):
        q = sql.SQL("COPY {}.{} ({}) FROM STDIN").format(
            sql.Identifier(schema.shard_schema(shard)), sql.Identifier(table), cols)
        with conn.cursor().copy(q) as cp:
            for chunk in _chunks(shard_rows, _COPY_BATCH):
                for row in chunk:
                    cp.write_row(row)


def _chunks(rows: list[tuple], size: int) -> Iterator[list[tuple]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def time_count_reads(conn: psycopg.Connection, media_id: int, repeat: int = 7) -> dict[str, float]:
    """Median ms of ``COUNT(*)`` and of the counter-row read of ``media_id``, on ``conn``."""
    import statistics
    import time

    from labkit.backend import likes

    out = {}
    for name, read in (("count_star_ms", likes.count_star), ("counter_ms", likes.count)):
        read(conn, media_id)  # warm the cache: we compare the reads, not the disk
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            read(conn, media_id)
            samples.append((time.perf_counter() - t0) * 1000)
        out[name] = statistics.median(samples)
    out["ratio"] = out["count_star_ms"] / out["counter_ms"]
    return out


def count_experiment(leader_conn: psycopg.Connection, follower_conn: psycopg.Connection,
                     media_id: int, sizes: Iterable[int] = (10**3, 10**4, 10**5, 10**6), *,
                     repeat: int = 15, progress: bool = True) -> list[dict[str, float]]:
    """Grow ``media_id``'s likes through ``sizes``; time both reads on the follower at each.

    Likes are added on the leader (COPY); after each step the table is vacuumed and analyzed
    (COUNT(*)'s best case: an index-only scan) and the follower has replayed it all.
    """
    rows = []
    s = schema.schema_of(media_id)
    have = _count(leader_conn, media_id)
    for size in sizes:
        if size > have:
            add_likes(leader_conn, media_id, size - have, progress=progress)
            have = size
        leader_conn.execute(sql.SQL("VACUUM (ANALYZE) {}.user_likes_media").format(s))
        if not replayed(follower_conn, current_lsn(leader_conn), timeout_s=60):
            raise TimeoutError("the follower did not replay the new likes within 60 s; "
                               "check its lag with `labkit status`")
        rows.append({"likes": size, **time_count_reads(follower_conn, media_id, repeat)})
    return rows


def _count(conn: psycopg.Connection, media_id: int) -> int:
    from labkit.backend import likes
    return likes.count(conn, media_id)


def add_readers(conn: psycopg.Connection, graph: Graph, n: int = 20, follows: int = 300, *,
                among: int = 2_000, seed: int = 13) -> list[schema.User]:
    """``n`` new accounts that each follow ``follows`` of the ``among`` most popular ones.

    Heavy feed readers for notebook 11: their feeds have a thousand-odd candidates to rank.
    Follows go in with COPY; returns the accounts (with their API tokens).

    Introduced in notebooks/11_cython_and_memory.ipynb.
    """
    rng = random.Random(seed)
    pool = graph.user_ids[:among]
    if follows > len(pool):
        raise ValueError(f"follows={follows}: the graph's {len(pool)} most popular accounts "
                         f"are all there is to follow; ask for at most {len(pool)}")
    readers = [schema.create_user(conn, f"reader{i}") for i in range(n)]
    with conn.transaction():
        _copy_sharded(conn, "follows", ("follower_id", "followee_id"),
                      ((r.user_id, f) for r in readers for f in rng.sample(pool, follows)))
    return readers


def add_followers(conn: psycopg.Connection, user_id: int, n: int, *, first: int = 0) -> list[int]:
    """Give ``user_id`` ``n`` more followers (accounts ``first`` .. ``first + n - 1``); their IDs.

    Followers are accounts without user rows (like ``add_likes``' fans): tiny timestamps keep
    their IDs far below any real account's, spread over the installed shards, where their
    follows rows go (COPY, one transaction). The same ``first``/``n`` gives the same IDs, so
    several accounts can share followers; a pair that exists already is an error.

    Introduced in notebooks/09_cassandra_feeds.ipynb.
    """
    installed = schema.shards(conn)
    followers = []
    for k in range(first, first + n):
        shard, j = installed[k % len(installed)], k // len(installed)
        followers.append(ids.make_id(1 + (j >> ids.SEQ_BITS), shard, j & (ids.SEQ_PER_MS - 1)))
    with conn.transaction():
        _copy_sharded(conn, "follows", ("follower_id", "followee_id"),
                      ((f, user_id) for f in followers))
    return followers
