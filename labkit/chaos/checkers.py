"""Checkers: after a run, with the system quiet, decide from the history and the real stores
whether anything was lost, counted twice, missed or left stale.

Introduced in notebooks/12_backend_under_faults.ipynb. Each checker reads the ``History`` the
load recorded (``labkit.chaos.history``) and what the backend really wrote (the tables of
``labkit.backend.schema`` and ``labkit.backend.tasks``, Cassandra's feeds, memcached), and
returns a ``Result``: ``ok``, one violation per problem naming the operations involved (their
``index`` in the history), and figures (``stats``). Jepsen's outcomes are honoured: an ``ok``
operation's effect must be there, a ``fail`` one's must not, an ``info`` one's may or may not.

The checkers, one function each (``check_all`` runs them all):

``check_likes``
    every acknowledged like is there and every acknowledged unlike is not (per user and
    media item, the last operation that can have taken effect decides); each media item's
    counter (``media_likes``) equals its like rows (``user_likes_media``), for every media
    item of the database: a like counted twice or a row lost shows up as a mismatch.
``check_notifications``
    each new like (an acknowledged like that changed something) was notified exactly once:
    recorded once in ``notifications`` and delivered once by the push service (``pushes``);
    how many deliveries it took (push requests, task runs) is in ``stats``.
``check_read_your_writes``
    after a user's acknowledged like (unlike) of a media item, their later reads of it show
    it (``liked`` in the read's value when present, else a ``like_count`` of at least 1),
    wherever the read strategy promises it (``labkit.backend.replication.STRATEGIES``).
``check_feeds``
    every acknowledged post is in the feed (``feed_by_user``) of every account that followed
    its author before it was posted, or, for an author fanned out on read, in the author's
    ``posts_by_user``.
``check_staleness``
    no read saw a like count that had been out of date for more than ``stale_bound_s``, and
    no cached like count (``<key_prefix>:likes:<media_id>``) still differs from the database
    ``stale_bound_s`` after it was found stale; with the invalidation service running, such
    an entry is a stale set (a refill stored old data after its delete) and is counted.

What the checkers read in the history (``Op.process`` is the acting user's ``user_id``):

- ``like`` / ``unlike``: ``args["media_id"]``; ``value["changed"]`` (the web tier's answer)
  says whether it made or removed the row;
- ``media`` (a read): ``args["media_id"]``; ``value["like_count"]``, and when the endpoint
  reports them ``value["liked"]`` (whether this user's like is seen) and ``value["source"]``
  (leader, follower, cache), shown in violations;
- ``post``: ``value["media_id"]`` of the new post;
- ``meta["read_strategy"]``: the web tier's read strategy, unless ``check_all`` is told.

Written here rather than taken from a library: the checks are about this backend's own tables
(Jepsen's Knossos/Elle check registers and transactions of a history, not a like counter
against its rows or a feed against a follow graph), and each is a few queries.

>>> target = Target(dsn=lab.leader.dsn("ig"), cache_servers=lab.cache_servers,
...                 key_prefix="ig")                                        # doctest: +SKIP
>>> print(summary(check_all(history, target, stale_bound_s=2.0)))           # doctest: +SKIP
likes            ok     0 violations  (pairs 412, acknowledged 1630, unknown 3, ...)
...
"""

from __future__ import annotations

import math
import socket
import time
from bisect import bisect_right
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import psycopg
from psycopg import sql

from labkit.backend import ids, likes
from labkit.backend.cache import cache_key, loads
from labkit.backend.feeds import BUCKET_DAYS, bucket_of
from labkit.backend.replication import STRATEGIES
from labkit.backend.schema import shard_schema, shards
from labkit.backend.tasks import dedup_key
from labkit.chaos.history import History, Op

LIKE_OPS = ("like", "unlike")
READ_OPS = ("media",)          # reads whose value shows the like count (and maybe "liked")
MAX_LISTED = 20                # ids listed per violation (the count is always complete)


@dataclass(frozen=True)
class Target:
    """Where the checkers read what the backend really did.

    ``dsn``: the leader, database holding the storage schema and the task tables
    (``tasks.install``); ``cache_servers`` and ``key_prefix``: memcached and the prefix of
    the like-count keys (the invalidation service's ``prefix``); ``session`` and
    ``keyspace``: Cassandra and the feeds keyspace (None: ``check_feeds`` is skipped);
    ``bucket_days``: the feeds' ``FeedConfig.bucket_days``.
    """

    dsn: str
    cache_servers: Sequence[tuple[str, int]] = ()
    key_prefix: str = "ig"
    session: Any = field(default=None, repr=False)
    keyspace: str | None = None
    bucket_days: int = BUCKET_DAYS

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)


@dataclass
class Result:
    """One checker's verdict: ``ok``, its violations (each names ``ops``), and figures."""

    name: str
    ok: bool
    violations: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """One printable line: name, verdict, how many violations, the main figures."""
        if "skipped" in self.stats:
            return f"{self.name:<16} skipped  ({self.stats['skipped']})"
        figures = ", ".join(f"{k} {v}" for k, v in self.stats.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool))
        return (f"{self.name:<16} {'ok' if self.ok else 'FAIL':<4} "
                f"{len(self.violations):>3} violations  ({figures})")

    def __str__(self) -> str:
        lines = [self.line()]
        for v in self.violations[:MAX_LISTED]:
            lines.append("    " + ", ".join(f"{k}={v[k]}" for k in v))
        if len(self.violations) > MAX_LISTED:
            lines.append(f"    ... and {len(self.violations) - MAX_LISTED} more")
        return "\n".join(lines)


def summary(results: Iterable[Result], *, details: bool = True) -> str:
    """The results as text: one line per checker, then its violations (``details``)."""
    return "\n".join(str(r) if details else r.line() for r in results)


def check_all(history: History, target: Target, *, stale_bound_s: float = 5.0,
              read_strategy: str | None = None, pin_s: float = 2.0) -> list[Result]:
    """Every checker, in order: likes, notifications, read-your-writes, feeds, staleness."""
    results = [check_likes(history, target), check_notifications(history, target),
               check_read_your_writes(history, target, strategy=read_strategy, pin_s=pin_s)]
    if target.session is None or not target.keyspace:
        results.append(Result("feeds", True, stats={"skipped": "no Cassandra session in the "
                                                    "Target"}))
    else:
        results.append(check_feeds(history, target))
    results.append(check_staleness(history, target, stale_bound_s=stale_bound_s))
    return results


# ---------------------------------------------------------------------------------- helpers

def _media_id(op: Op) -> int | None:
    value = op.args.get("media_id")
    return int(value) if value is not None else None


def _pairs(history: History) -> dict[tuple[int, int], list[Op]]:
    """The like/unlike operations per (user_id, media_id), in invocation order."""
    pairs: dict[tuple[int, int], list[Op]] = defaultdict(list)
    for op in history.of(*LIKE_OPS):
        media_id = _media_id(op)
        if media_id is not None:
            pairs[(op.process, media_id)].append(op)
    for ops in pairs.values():
        ops.sort(key=lambda o: (o.sent_s, o.index))
    return pairs


def _by_shard(media_ids: Iterable[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for media_id in media_ids:
        out[ids.shard_of(media_id)].append(media_id)
    return out


def _ids(values: Iterable[int]) -> list[int]:
    values = sorted(values)
    return values[:MAX_LISTED]


def possible_final(ops: Sequence[Op]) -> set[bool]:
    """Whether the like can be there at the end: the effects of the ops that may have been last.

    An op may have taken effect last unless it failed, or an acknowledged op on the same pair
    was invoked after it completed (that one took effect later). An ``info`` op may take
    effect any time after its invocation. With no acknowledged op at all, the state before
    the run (unknown here: seeded likes) may still be there: both answers are possible.
    """
    possible: set[bool] = set()
    acknowledged = [o for o in ops if o.outcome == "ok"]
    if not acknowledged:
        return {True, False}
    for op in ops:
        if op.outcome == "fail":
            continue
        end = op.done_s if op.outcome == "ok" and op.done_s is not None else math.inf
        if any(p.sent_s > end for p in acknowledged):
            continue
        possible.add(op.f == "like")
    return possible


# ------------------------------------------------------------------------------------ likes

def check_likes(history: History, target: Target) -> Result:
    """No acknowledged like lost, no acknowledged unlike undone; every counter = its rows."""
    pairs = _pairs(history)
    violations: list[dict[str, Any]] = []
    with target.connect() as conn:
        present = _present_likes(conn, {m for _, m in pairs})
        for (user_id, media_id), ops in sorted(pairs.items()):
            possible = possible_final(ops)
            there = (user_id, media_id) in present
            if there not in possible:
                violations.append({
                    "kind": "lost like" if not there else "like that should be gone",
                    "user_id": user_id, "media_id": media_id, "present": there,
                    "ops": [o.index for o in ops]})
        mismatches, checked = _counter_mismatches(conn)
    by_media: dict[int, list[int]] = defaultdict(list)
    for (_, media_id), ops in pairs.items():
        by_media[media_id] += [o.index for o in ops]
    for media_id, counter, rows in mismatches:
        violations.append({"kind": "counter != like rows", "media_id": media_id,
                           "counter": counter, "rows": rows,
                           "ops": sorted(by_media.get(media_id, []))})
    acknowledged = sum(o.outcome == "ok" for ops in pairs.values() for o in ops)
    return Result("likes", not violations, violations,
                  {"pairs": len(pairs), "acknowledged": acknowledged,
                   "unknown": sum(o.outcome == "info" for ops in pairs.values() for o in ops),
                   "media_checked": checked, "counter_mismatches": len(mismatches)})


def _present_likes(conn: psycopg.Connection, media_ids: Iterable[int]) -> set[tuple[int, int]]:
    """The (user_id, media_id) like rows of these media items, as they are now."""
    present: set[tuple[int, int]] = set()
    installed = set(shards(conn))
    for shard, wanted in _by_shard(media_ids).items():
        if shard not in installed:
            continue
        q = sql.SQL("SELECT user_id, media_id FROM {}.user_likes_media "
                    "WHERE media_id = ANY(%s)").format(sql.Identifier(shard_schema(shard)))
        present.update(conn.execute(q, (wanted,)).fetchall())
    return present


def _counter_mismatches(conn: psycopg.Connection) -> tuple[list[tuple[int, int, int]], int]:
    """(media_id, counter, rows) of every media item whose counter is not its row count."""
    mismatches: list[tuple[int, int, int]] = []
    checked = 0
    for shard in shards(conn):
        s = sql.Identifier(shard_schema(shard))
        rows = conn.execute(sql.SQL(
            "SELECT c.media_id, c.count, coalesce(l.n, 0) FROM {s}.media_likes c "
            "LEFT JOIN (SELECT media_id, count(*) AS n FROM {s}.user_likes_media "
            "GROUP BY media_id) l USING (media_id)").format(s=s)).fetchall()
        checked += len(rows)
        mismatches += [r for r in rows if r[1] != r[2]]
    return mismatches, checked


# ---------------------------------------------------------------------------- notifications

def check_notifications(history: History, target: Target) -> Result:
    """Each new like notified exactly once (recorded once, delivered once), and at what cost.

    A like needs its notification when an acknowledged like answered ``changed`` (it made
    the row). Its delivery record: ``notifications`` rows (the task completed), delivered
    ``pushes`` (the owner's phone: more than one is a duplicate, even without an idempotency
    key), push requests and task runs (``notify_attempts``). A like of unknown outcome
    (``info``) whose row is there is counted in ``stats`` but not required to be notified:
    its row may predate the run.
    """
    pairs = {p: ops for p, ops in _pairs(history).items() if any(o.f == "like" for o in ops)}
    with target.connect() as conn:
        record = _notification_records(conn, list(pairs))
        present = _present_likes(conn, {m for _, m in pairs})
    violations: list[dict[str, Any]] = []
    requests_per_like: Counter[int] = Counter()
    runs_per_like: Counter[int] = Counter()
    unknown_unnotified = 0
    for (user_id, media_id), ops in sorted(pairs.items()):
        likes_ = [o for o in ops if o.f == "like"]
        needed = [o for o in likes_ if o.outcome == "ok" and _changed(o)]
        can_have = [o for o in likes_ if o.outcome != "fail"]
        r = record[(user_id, media_id)]
        base = {"user_id": user_id, "media_id": media_id, "ops": [o.index for o in likes_],
                **r}
        if needed:
            requests_per_like[r["requests"]] += 1
            runs_per_like[r["runs"]] += 1
            if r["recorded"] == 0 and r["delivered"] == 0:
                violations.append({"kind": "lost notification", **base})
            elif r["recorded"] == 0:
                violations.append({"kind": "pushed but never recorded (the task was dropped "
                                           "mid-run)", **base})
        if r["delivered"] > 1:
            violations.append({"kind": "delivered more than once", **base})
        if (r["recorded"] or r["delivered"]) and not can_have:
            violations.append({"kind": "notification of a like that failed", **base})
        if not needed and (user_id, media_id) in present and not r["recorded"] and any(
                o.outcome == "info" for o in likes_):
            unknown_unnotified += 1
    return Result("notifications", not violations, violations, {
        "likes_checked": sum(requests_per_like.values()),
        "max_push_requests": max(requests_per_like, default=0),
        "max_task_runs": max(runs_per_like, default=0),
        "push_requests": dict(sorted(requests_per_like.items())),
        "task_runs": dict(sorted(runs_per_like.items())),
        "unknown_likes_unnotified": unknown_unnotified})


def _changed(op: Op) -> bool:
    return isinstance(op.value, dict) and bool(op.value.get("changed"))


def _notification_records(conn: psycopg.Connection, pairs: list[tuple[int, int]]
                          ) -> dict[tuple[int, int], dict[str, int]]:
    """Per (liker_id, media_id): notifications recorded, pushes delivered and requested, runs."""
    out: dict[tuple[int, int], dict[str, int]] = {
        pair: {"recorded": 0, "delivered": 0, "requests": 0, "runs": 0} for pair in pairs}
    media_ids = sorted({m for _, m in pairs})
    for liker, media, n in conn.execute(
            "SELECT liker_id, media_id, count(*) FROM notifications WHERE media_id = ANY(%s) "
            "GROUP BY 1, 2", (media_ids,)):
        if (liker, media) in out:
            out[(liker, media)]["recorded"] = n
    for liker, media, n, delivered in conn.execute(
            "SELECT liker_id, media_id, count(*), count(*) FILTER (WHERE delivered) FROM pushes "
            "WHERE media_id = ANY(%s) GROUP BY 1, 2", (media_ids,)):
        if (liker, media) in out:
            out[(liker, media)].update(requests=n, delivered=delivered)
    keys = {dedup_key(liker, media): (liker, media) for liker, media in pairs}
    for key, n in conn.execute("SELECT dedup_key, count(*) FROM notify_attempts "
                               "WHERE dedup_key = ANY(%s) GROUP BY 1", (list(keys),)):
        out[keys[key]]["runs"] = n
    return out


# ------------------------------------------------------------------------- read-your-writes

def promised(strategy: str, write: Op, read: Op, *, pin_s: float) -> bool:
    """Whether ``strategy`` promises that ``read`` sees ``write`` (same user, later read).

    ``lsn_wait`` and ``remote_apply`` always do; ``pin`` while the user is pinned to the
    leader: surely so when the read completed less than ``pin_s`` after the write was sent;
    ``none`` never does.
    """
    if strategy in ("lsn_wait", "remote_apply"):
        return True
    if strategy == "pin":
        return read.done_s is not None and read.done_s - write.sent_s < pin_s
    return False


def check_read_your_writes(history: History, target: Target | None = None, *,
                           strategy: str | None = None, pin_s: float = 2.0) -> Result:
    """After a user's acknowledged like (unlike), their later reads of that media item show it.

    A read counts when it completed ``ok``, was invoked after the write completed and before
    the user's next like/unlike of the same item. What the user saw: ``value["liked"]`` when
    the read reports it, else ``value["like_count"] >= 1`` (their like alone makes it 1; an
    unlike cannot be checked from a count). ``strategy`` (default: the history's
    ``meta["read_strategy"]``, else ``"none"``) says which reads were promised to see it;
    the others are only counted.
    """
    strategy = strategy or history.meta.get("read_strategy") or "none"
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r}: choose one of {', '.join(STRATEGIES)} "
                         "(the web tier's read strategy)")
    reads: dict[tuple[int, int], list[Op]] = defaultdict(list)
    for op in history.of(*READ_OPS):
        media_id = _media_id(op)
        if op.outcome == "ok" and media_id is not None and isinstance(op.value, dict):
            reads[(op.process, media_id)].append(op)
    violations: list[dict[str, Any]] = []
    checked = unpromised_missed = 0
    for pair, ops in _pairs(history).items():
        for i, write in enumerate(ops):
            if write.outcome != "ok" or write.done_s is None:
                continue
            until = ops[i + 1].sent_s if i + 1 < len(ops) else math.inf
            for read in reads.get(pair, []):
                if not write.done_s <= read.sent_s < until:
                    continue
                saw = _saw_like(read)
                if saw is None or (write.f == "unlike" and "liked" not in read.value):
                    continue
                missed = saw != (write.f == "like")
                if not promised(strategy, write, read, pin_s=pin_s):
                    unpromised_missed += missed
                    continue
                checked += 1
                if missed:
                    violations.append({
                        "kind": f"own {write.f} not seen", "user_id": pair[0],
                        "media_id": pair[1], "ops": [write.index, read.index],
                        "read_value": read.value, "after_s": round(read.sent_s - write.done_s, 4)})
    return Result("read-your-writes", not violations, violations,
                  {"strategy": strategy, "reads_checked": checked,
                   "unpromised_missed": unpromised_missed})


def _saw_like(read: Op) -> bool | None:
    value = read.value
    if "liked" in value:
        return bool(value["liked"])
    if "like_count" in value:
        return value["like_count"] >= 1
    return None


# ------------------------------------------------------------------------------------ feeds

def check_feeds(history: History, target: Target) -> Result:
    """Every acknowledged post reached every account that followed its author before it.

    The post's fan-out plan (``fanouts``) says how: ``write`` (each follower's
    ``feed_by_user`` must hold it) or ``read`` (the author's ``posts_by_user`` must, and the
    feed merges it). No plan at all means the fan-out never ran. A post of unknown outcome
    (``info``: no media ID known) is counted, not checked.
    """
    if target.session is None or not target.keyspace:
        raise ValueError("check_feeds needs Target(session=..., keyspace=...): the Cassandra "
                         "session and the feeds keyspace")
    posts = [(op, op.value["media_id"]) for op in history.of("post")
             if op.outcome == "ok" and isinstance(op.value, dict) and op.value.get("media_id")]
    unknown = sum(o.outcome == "info" for o in history.of("post"))
    session, ks = target.session, target.keyspace
    in_feed = session.prepare(f"SELECT media_id FROM {ks}.feed_by_user "
                              "WHERE user_id = ? AND bucket = ? AND media_id = ?")
    in_posts = session.prepare(f"SELECT media_id FROM {ks}.posts_by_user "
                               "WHERE user_id = ? AND bucket = ? AND media_id = ?")
    violations: list[dict[str, Any]] = []
    deliveries = 0
    with target.connect() as conn:
        for op, media_id in posts:
            media_id = int(media_id)
            author, followers = _followers_at_post(conn, media_id)
            plan = conn.execute("SELECT mode FROM fanouts WHERE media_id = %s",
                                (media_id,)).fetchone()
            base = {"media_id": media_id, "author_id": author, "ops": [op.index]}
            bucket = bucket_of(media_id, target.bucket_days)
            if author is None:
                violations.append({"kind": "acknowledged post not in the database", **base})
                continue
            if not session.execute(in_posts, (author, bucket, media_id)).current_rows:
                violations.append({"kind": "post missing from its author's posts_by_user",
                                   **base})
            if plan is None:
                if followers:
                    violations.append({"kind": "fan-out never ran", "missing": len(followers),
                                       "followers": _ids(followers), **base})
                continue
            if plan[0] == "read":
                continue  # merged at read time from posts_by_user, checked above
            missing = [f for f, found in zip(followers, _concurrent(
                session, in_feed, [(f, bucket, media_id) for f in followers])) if not found]
            deliveries += len(followers) - len(missing)
            if missing:
                violations.append({"kind": "post missing from followers' feeds",
                                   "missing": len(missing), "followers": _ids(missing), **base})
    return Result("feeds", not violations, violations,
                  {"posts_checked": len(posts), "unknown_posts": unknown,
                   "feed_rows_found": deliveries})


def _followers_at_post(conn: psycopg.Connection, media_id: int) -> tuple[int | None, list[int]]:
    """The post's author, and who followed the author when it was posted (every shard)."""
    q = sql.SQL("SELECT user_id, created_at FROM {}.media WHERE id = %s").format(
        sql.Identifier(shard_schema(ids.shard_of(media_id))))
    try:
        row = conn.execute(q, (media_id,)).fetchone()
    except (psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedTable):
        row = None
    if row is None:
        return None, []
    author, posted_at = row
    followers: list[int] = []
    for shard in shards(conn):
        q = sql.SQL("SELECT follower_id FROM {}.follows WHERE followee_id = %s "
                    "AND created_at <= %s").format(sql.Identifier(shard_schema(shard)))
        followers += [r[0] for r in conn.execute(q, (author, posted_at))]
    return author, followers


def _concurrent(session: Any, statement: Any, params: list[tuple]) -> list[bool]:
    """Whether each bound read returned a row (many reads in flight at once)."""
    from cassandra.concurrent import execute_concurrent_with_args
    results = execute_concurrent_with_args(session, statement, params, concurrency=64,
                                           raise_on_first_error=True)
    return [bool(rows.current_rows) for _, rows in results]


# -------------------------------------------------------------------------------- staleness

def check_staleness(history: History, target: Target, *, stale_bound_s: float = 5.0,
                    sleep: Callable[[float], None] = time.sleep) -> Result:
    """No read saw a like count staler than ``stale_bound_s``; no cached count stays stale.

    From the history: each ``ok`` read of a media item (``value["like_count"]``) must show a
    count the item could have had at some moment from ``stale_bound_s`` before the read was
    sent to when it completed (``count_bounds``: the likes of the history, as Jepsen's
    outcomes allow, plus the rows no operation touched). From memcached: each media item's
    cached count (``<key_prefix>:likes:<media_id>``) is compared with its counter on the
    leader; the stale ones are read again ``stale_bound_s`` later (the system is quiet: the
    database no longer changes), and those still stale are violations. Their cause is named:
    with the invalidation service running on the database (its slot and its session), the
    deletes were made, so the entry is a stale set (a refill that read before a write
    stored its old value after the write's delete: the race leases close); without it,
    nothing deletes the entry before its TTL.
    """
    media_ids = sorted({m for op in history.of() if (m := _media_id(op)) is not None})
    pairs = _pairs(history)
    with target.connect() as conn:
        present = _present_likes(conn, media_ids)
        stale: dict[int, tuple[Any, int]] = {}
        if target.cache_servers:
            stale = _stale_entries(conn, target, media_ids)
            if stale:
                sleep(stale_bound_s)
                again = _stale_entries(conn, target, list(stale))
                stale = {m: v for m, v in again.items() if m in stale}
        invalidating = _invalidation_running(conn)
    writes: dict[int, list[int]] = defaultdict(list)
    for op in history.of(*LIKE_OPS):
        writes[_media_id(op)].append(op.index)
    violations, reads = _stale_reads(history, pairs, present, stale_bound_s)
    cause = ("stale set: a refill stored an old count after its delete" if invalidating
             else "no invalidation: no invalidation service reads this database")
    violations += [{"kind": "stale cache entry",
                    "key": cache_key(target.key_prefix, "likes", m), "cached": cached,
                    "database": db, "cause": cause, "ops": sorted(writes.get(m, []))}
                   for m, (cached, db) in sorted(stale.items())]
    stats = {"reads_checked": reads,
             "stale_reads": sum(v["kind"] == "stale read" for v in violations),
             "keys_checked": len(media_ids) if target.cache_servers else 0,
             "stale_entries": len(stale), "stale_sets": len(stale) if invalidating else 0,
             "stale_bound_s": stale_bound_s}
    if not target.cache_servers:
        stats["cache"] = "not checked: no cache servers in the Target"
    return Result("staleness", not violations, violations, stats)


def _initial_state(ops: Sequence[Op]) -> set[bool]:
    """Whether the like was there before the pair's first op: its ``changed`` answer says so
    when it was acknowledged and nothing overlapped it; otherwise unknown (both)."""
    first = ops[0]
    if (first.outcome == "ok" and first.done_s is not None and isinstance(first.value, dict)
            and "changed" in first.value
            and not any(o.outcome != "fail" and o.sent_s < first.done_s for o in ops[1:])):
        return {(first.f == "like") != bool(first.value["changed"])}
    return {True, False}


def _possible_at(ops: Sequence[Op], t: float, initial: set[bool]) -> set[bool]:
    """Whether the like can be there at time ``t`` (``possible_final`` as of ``t``)."""
    started = [o for o in ops if o.outcome != "fail" and o.sent_s <= t]
    done = [o for o in started if o.outcome == "ok" and o.done_s is not None and o.done_s <= t]
    states = set(initial) if not done else set()
    for op in started:
        end = op.done_s if op.outcome == "ok" and op.done_s is not None else math.inf
        if not any(q.sent_s > end for q in done):
            states.add(op.f == "like")
    return states


def count_bounds(pairs: dict[tuple[int, int], list[Op]], seed: int
                 ) -> list[tuple[float, int, int]]:
    """(from time, lowest, highest) like count one media item can have, over the run.

    ``pairs`` are the item's like/unlike ops per user; ``seed`` the likes no op touched.
    The bounds change only at an op's invocation or completion; the first entry (time
    ``-inf``) is the state before the run.
    """
    events: dict[float, list[tuple[tuple[int, int], set[bool]]]] = defaultdict(list)
    states: dict[tuple[int, int], set[bool]] = {}
    for pair, ops in pairs.items():
        states[pair] = initial = _initial_state(ops)
        for t in sorted({o.sent_s for o in ops} | {o.done_s for o in ops if o.done_s is not None}):
            events[t].append((pair, _possible_at(ops, t, initial)))
    lo = seed + sum(s == {True} for s in states.values())
    hi = seed + sum(True in s for s in states.values())
    out = [(-math.inf, lo, hi)]
    for t in sorted(events):
        for pair, possible in events[t]:
            old = states[pair]
            lo += (possible == {True}) - (old == {True})
            hi += (True in possible) - (True in old)
            states[pair] = possible
        out.append((t, lo, hi))
    return out


def _stale_reads(history: History, pairs: dict[tuple[int, int], list[Op]],
                 present: set[tuple[int, int]], bound_s: float) -> tuple[list[dict], int]:
    """Reads whose like count was not possible anywhere in [sent - bound_s, done]."""
    by_media: dict[int, dict[tuple[int, int], list[Op]]] = defaultdict(dict)
    for pair, ops in pairs.items():
        by_media[pair[1]][pair] = ops
    seeds: Counter[int] = Counter(m for (u, m) in present if (u, m) not in pairs)
    timelines: dict[int, tuple[list[float], list[tuple[float, int, int]],
                               list[tuple[float, int]]]] = {}
    violations: list[dict[str, Any]] = []
    checked = 0
    for read in history.of(*READ_OPS):
        media_id = _media_id(read)
        if read.outcome != "ok" or read.done_s is None or media_id is None or not isinstance(
                read.value, dict) or not isinstance(read.value.get("like_count"), int):
            continue
        if media_id not in timelines:
            timeline = count_bounds(by_media.get(media_id, {}), seeds[media_id])
            writes = sorted((o.done_s, o.index) for ops in by_media.get(media_id, {}).values()
                            for o in ops if o.done_s is not None)
            timelines[media_id] = ([t for t, _, _ in timeline], timeline, writes)
        times, timeline, writes = timelines[media_id]
        seen = read.value["like_count"]
        checked += 1
        start = read.sent_s - bound_s
        # The bounds in force at ``start``, then every change until the read completed.
        window = timeline[bisect_right(times, start) - 1:bisect_right(times, read.done_s)]
        if not any(lo <= seen <= hi for _, lo, hi in window):
            # The writes that completed last before the window: what the read missed.
            done_before = [i for _, i in writes[max(0, bisect_right(writes, (start, math.inf))
                                                      - 5):bisect_right(writes, (start, math.inf))]]
            violations.append({
                "kind": "stale read", "media_id": media_id, "saw": seen,
                "possible": [window[-1][1], window[-1][2]], "source": read.value.get("source"),
                "ops": [read.index] + sorted(done_before)})
    return violations, checked


def _invalidation_running(conn: psycopg.Connection) -> bool:
    """An invalidation service reads this database: its logical slot exists and its session
    (``labkit-invalidation*``, ``InvalidationService.application_name``) is connected."""
    (slots,), = conn.execute("SELECT count(*) FROM pg_replication_slots WHERE database = "
                             "current_database() AND plugin = 'test_decoding'").fetchall()
    (sessions,), = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                "current_database() AND application_name LIKE "
                                "'labkit-invalidation%'").fetchall()
    return slots > 0 and sessions > 0


def _stale_entries(conn: psycopg.Connection, target: Target,
                   media_ids: list[int]) -> dict[int, tuple[Any, int]]:
    """{media_id: (cached count, counter)} where a cached count differs from the counter."""
    counters = likes.counts(conn, media_ids)  # autocommit: a shard not installed is skipped
    cached = _cached_values(target.cache_servers,
                            [cache_key(target.key_prefix, "likes", m) for m in counters])
    out = {}
    for media_id, counter in counters.items():
        value = cached.get(cache_key(target.key_prefix, "likes", media_id))
        if value is not None and value != counter:
            out[media_id] = (value, counter)
    return out


def _cached_values(servers: Sequence[tuple[str, int]], keys: list[str],
                   timeout_s: float = 5.0) -> dict[str, Any]:
    """The values cached under ``keys`` on any of ``servers`` (placeholders and leases skipped).

    Asked of every server with meta gets (``mg <key> v``; a key lives on one server), so the
    answer does not depend on a client's hashing; an empty item (a meta lease being refilled)
    or a token lease's placeholder is no value.
    """
    from labkit.backend.leases import LEASE_MARK
    from labkit.services.memcached import read_until
    out: dict[str, Any] = {}
    for server in servers:
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            with socket.create_connection(tuple(server), timeout=timeout_s) as s:
                s.sendall(b"".join(f"mg {k} v k q\r\n".encode() for k in chunk) + b"mn\r\n")
                data = read_until(s, b"MN\r\n")
            pos = 0
            while not data.startswith(b"MN\r\n", pos):
                end = data.index(b"\r\n", pos)
                header = data[pos:end].split()
                if header[0] != b"VA":
                    raise RuntimeError(f"memcached {server} answered {data[pos:end]!r} to a "
                                       "meta get; is it memcached >= 1.6?")
                size = int(header[1])
                key = next(f[1:].decode() for f in header[2:] if f.startswith(b"k"))
                value = data[end + 2:end + 2 + size]
                pos = end + 2 + size + 2
                if size and not value.startswith(LEASE_MARK):
                    out[key] = loads(value)
    return out
