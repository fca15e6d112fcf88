"""Each checker of labkit.chaos.checkers passes a correct backend and catches a broken one.

The histories are recorded from operations really run on the session's servers (the backend
functions notebook 12's web tier calls), against the correct backend and against a variant
broken on purpose (the ``demo_*`` switches of labkit.backend, or a service left off): the
checker must pass the first and report the second with the operations involved.
"""

from __future__ import annotations

import threading
import time
import uuid
from types import SimpleNamespace
from typing import Any, Callable

import psycopg
import pytest
from psycopg import sql

from labkit.backend import cache as c
from labkit.backend import feeds, likes, schema, tasks
from labkit.backend.invalidation import InvalidationService
from labkit.backend.replication import ReadRouter
from labkit.backend.workers import CeleryWorkers
from labkit.chaos import checkers
from labkit.chaos.history import History, Op


class Recorder:
    """Runs operations and records each as an Op (times in s since the recorder was made)."""

    def __init__(self) -> None:
        self.history = History()
        self.t0 = time.monotonic()

    def run(self, process: int, f: str, args: dict[str, Any], call: Callable[[], Any]) -> Op:
        sent = time.monotonic() - self.t0
        try:
            value, outcome = call(), "ok"
        except schema.NotFound as e:
            value, outcome = {"error": str(e)}, "fail"
        return self.history.add(Op(index=len(self.history.ops), process=process, f=f, args=args,
                                   due_s=sent, sent_s=sent, done_s=time.monotonic() - self.t0,
                                   outcome=outcome, value=value))


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def model(lab, pg_db):
    """pg_db with the storage schema and the task tables: an owner with 2 posts, 3 fans."""
    with lab.leader.connect(pg_db, autocommit=True) as conn:
        schema.install(conn, shards=2)
        tasks.install(conn)
        owner = schema.create_user(conn, "owner", shard=0).user_id
        fans = [schema.create_user(conn, f"fan{i}", shard=i % 2).user_id for i in range(3)]
        media = [schema.create_media(conn, owner, f"photo {i}") for i in range(2)]
    return SimpleNamespace(db=pg_db, dsn=lab.leader.dsn(pg_db), owner=owner, fans=fans,
                           media=media)


# ------------------------------------------------------------------------- pure history logic

def _op(index: int, f: str, outcome: str, sent_s: float, done_s: float | None, *,
        process: int = 1, value: Any = None) -> Op:
    return Op(index=index, process=process, f=f, args={"media_id": 5}, due_s=sent_s,
              sent_s=sent_s, done_s=done_s, outcome=outcome, value=value)


def test_possible_final_follows_jepsen_outcomes():
    assert checkers.possible_final([_op(0, "like", "ok", 0, 1)]) == {True}
    # A failed unlike has no effect; an unknown one may have taken effect after anything.
    assert checkers.possible_final([_op(0, "like", "ok", 0, 1),
                                    _op(1, "unlike", "fail", 2, 3)]) == {True}
    assert checkers.possible_final([_op(0, "like", "ok", 0, 1),
                                    _op(1, "unlike", "info", 2, None)]) == {True, False}
    # Concurrent like and unlike, both acknowledged: either may have been last.
    assert checkers.possible_final([_op(0, "like", "ok", 0, 2),
                                    _op(1, "unlike", "ok", 1, 3)]) == {True, False}
    # An unknown like before an acknowledged unlike cannot come back after it... unless it
    # landed late: info ops may take effect any time after their invocation.
    assert checkers.possible_final([_op(0, "like", "info", 0, None),
                                    _op(1, "unlike", "ok", 5, 6)]) == {True, False}


def test_count_bounds_over_a_run():
    """User 1's acknowledged new like, user 2's like of unknown outcome, 3 untouched likes."""
    first = [_op(0, "like", "ok", 0, 1, value={"changed": True})]
    second = [_op(1, "like", "info", 2, None, process=2)]
    assert checkers.count_bounds({(1, 5): first, (2, 5): second}, seed=3) == [
        (float("-inf"), 3, 4), (0, 3, 5), (1, 4, 5), (2, 4, 5)]


# ------------------------------------------------------------------------------------ likes

# A deliberately broken like (the checker must catch it): the like row and the counter bump as
# two statements, the bump unconditional, so a double tap counts twice and the counter drifts
# from the rows.
_BROKEN_LIKE_ROW = """
INSERT INTO {s}.user_likes_media (media_id, user_id)
SELECT media_id, %(user_id)s FROM {s}.media_likes WHERE media_id = %(media_id)s
ON CONFLICT DO NOTHING RETURNING 1
"""
_BROKEN_BUMP = "UPDATE {s}.media_likes SET count = count + 1 WHERE media_id = %(media_id)s"


def _like_counter_outside_transaction(conn, user_id: int, media_id: int) -> bool:
    s = schema.schema_of(media_id)
    params = {"user_id": user_id, "media_id": media_id}
    created = conn.execute(sql.SQL(_BROKEN_LIKE_ROW).format(s=s), params).fetchone()
    conn.execute(sql.SQL(_BROKEN_BUMP).format(s=s), params)
    return created is not None


@pytest.mark.parametrize("variant", ["correct", "counter_outside_transaction", "uncommitted"])
def test_likes_checker(lab, model, variant):
    """A double tap counted twice, or a like acknowledged but never committed, is reported."""
    rec = Recorder()
    (m1, m2), (a, b, d) = model.media, model.fans
    broken = variant == "counter_outside_transaction"
    with psycopg.connect(model.dsn, autocommit=True) as conn:
        def like(user_id, media_id, conn=conn):
            like_fn = _like_counter_outside_transaction if broken else likes.like
            return rec.run(user_id, "like", {"media_id": media_id},
                           lambda: {"changed": like_fn(conn, user_id, media_id)})

        like(a, m1), like(b, m1), like(a, m1)                      # the third is a double tap
        like(d, m2)
        rec.run(d, "unlike", {"media_id": m2}, lambda: {"changed": likes.unlike(conn, d, m2)})
        rec.run(d, "like", {"media_id": 2**62}, lambda: likes.like(conn, d, 2**62))  # 404: fail
        if variant == "uncommitted":                     # a backend that forgets to commit
            with psycopg.connect(model.dsn) as forgetful:
                like(b, m2, conn=forgetful)
                forgetful.rollback()
    result = checkers.check_likes(rec.history, checkers.Target(dsn=model.dsn))
    assert result.stats["pairs"] == 4 + (variant == "uncommitted")
    assert result.stats["media_checked"] == 2
    if variant == "correct":
        assert result.ok and result.violations == [], result
    elif broken:
        [v] = result.violations
        assert v["kind"] == "counter != like rows" and (v["media_id"], v["counter"], v["rows"]) \
            == (m1, 3, 2)
        assert v["ops"] == [0, 1, 2]
    else:
        [v] = result.violations
        assert v["kind"] == "lost like" and (v["user_id"], v["media_id"]) == (b, m2)
        assert v["ops"] == [6] and not result.ok


# ---------------------------------------------------------------------------- notifications

def _worker_in_push(lab, db: str, workers: CeleryWorkers) -> int | None:
    """Which worker is inside notify_like, past its fault check and before its push (its
    send_ms): the one whose socket is the client end of the session that ran the check."""
    import psutil
    ports = {r[0] for r in lab.leader.execute(
        "SELECT client_port FROM pg_stat_activity WHERE datname = %s "
        "AND query LIKE 'UPDATE notifier_faults%%'", (db,))}
    for i, proc in enumerate(workers.procs):
        if any(c.laddr.port in ports for c in psutil.Process(proc.pid).net_connections("tcp")):
            return i
    return None


@pytest.mark.parametrize("acks_early", [False, True])
def test_notifications_checker(lab, model, acks_early):
    """A worker SIGKILLed before its push: with acks_late the task runs again and notifies
    once; acknowledged early (the broken variant), the notification is lost and reported."""
    rec = Recorder()
    queue = f"chk-{uuid.uuid4().hex[:8]}"
    workers = CeleryWorkers(lab.config.lab_dir / f"celery-{queue}", broker_url=lab.broker_url,
                            dsn=model.dsn, queue=queue, workers=2, prefetch=1, send_ms=1000,
                            demo_acks_early=acks_early).start()
    notify = workers.app.tasks["notify_like"]
    (m1, m2), (a, b, _) = model.media, model.fans
    try:
        with psycopg.connect(model.dsn, autocommit=True) as conn:
            def like(user_id, media_id):
                def call():
                    changed = likes.like(conn, user_id, media_id)
                    if changed:  # what the web tier's like view does after its commit
                        notify.delay(liker_id=user_id, media_id=media_id, owner_id=model.owner)
                    return {"changed": changed, "notification": "queued"}
                return rec.run(user_id, "like", {"media_id": media_id}, call)

            killed = like(a, m1)
            wait_until(lambda: _worker_in_push(lab, model.db, workers) is not None,
                       "a worker to reach the push")
            victim = _worker_in_push(lab, model.db, workers)
            # The worker acknowledged (or not) as the task started; give the broker time to
            # read that frame: a SIGKILL resets the connection, which drops unread data.
            time.sleep(0.3)
            workers.kill(victim)
            pushes = conn.execute("SELECT count(*) FROM pushes").fetchone()[0]
            assert pushes == 0, "the kill landed before the push"
            like(b, m2)          # a later like: once notified, the queue has been worked off
            wait_until(lambda: conn.execute(
                "SELECT count(*) FROM notifications WHERE liker_id = %s", (b,)).fetchone()[0],
                "the later like's notification")
            if not acks_early:
                tasks.wait_for_notifications(conn, 2)
            wait_until(lambda: workers.queue_depth() == 0, "an empty queue")
    finally:
        workers.stop()
        workers.delete_queues()
    result = checkers.check_notifications(rec.history, checkers.Target(dsn=model.dsn))
    assert result.stats["likes_checked"] == 2
    if not acks_early:
        assert result.ok, result
        assert result.stats["push_requests"] == {1: 2} and result.stats["max_task_runs"] == 1
    else:
        [v] = result.violations
        assert v["kind"] == "lost notification" and v["ops"] == [killed.index]
        assert (v["user_id"], v["media_id"], v["recorded"], v["delivered"]) == (a, m1, 0, 0)


# ------------------------------------------------------------------------- read-your-writes

@pytest.mark.parametrize("strategy", ["lsn_wait", "none"])
def test_read_your_writes_checker(lab, model, strategy):
    """Behind a follower replaying 400 ms late, lsn_wait keeps the promise; a router reading
    the follower anyway (``none`` where lsn_wait is promised) is reported."""
    rec = Recorder()
    user = model.fans[0]
    lab.follower.wait_replayed()
    lab.follower.set_delay(400)
    try:
        with ReadRouter(lab.leader.dsn(model.db), lab.follower.dsn(model.db), strategy,
                        lsn_timeout_s=5.0) as router:
            for media_id in model.media:
                rec.run(user, "like", {"media_id": media_id}, lambda: {"lsn": router.write(
                    user, lambda conn: likes.like(conn, user, media_id))})
                rec.run(user, "media", {"media_id": media_id}, lambda: router.read(
                    user, lambda conn: {"like_count": likes.count(conn, media_id),
                                        "liked": likes.liked(conn, user, media_id),
                                        "source": router.last_source}))
    finally:
        lab.follower.set_delay(0)
    promised = checkers.check_read_your_writes(rec.history, strategy="lsn_wait")
    assert promised.stats["reads_checked"] == 2
    if strategy == "lsn_wait":
        assert promised.ok, promised
    else:
        assert [v["ops"] for v in promised.violations] == [[0, 1], [2, 3]]
        assert promised.violations[0]["read_value"]["source"] == "follower"
        # Where nothing is promised, the same misses are only counted.
        unpromised = checkers.check_read_your_writes(rec.history, strategy="none")
        assert unpromised.ok and unpromised.stats["unpromised_missed"] == 2


# -------------------------------------------------------------------------------- staleness

@pytest.mark.parametrize("variant", ["invalidated", "invalidation_off", "stale_set"])
def test_staleness_checker(lab, model, variant):
    """Cached like counts: deleted by the invalidation service (passes); never deleted
    (invalidation off: reported); deleted, then refilled with the count read before the
    like (the stale-set race of plain cache-aside: reported and counted)."""
    rec = Recorder()
    prefix = f"chk{uuid.uuid4().hex[:8]}"
    service = None
    if variant != "invalidation_off":
        service = InvalidationService.for_lab(lab, dbname=model.db, prefix=prefix,
                                              slot=f"chk_{uuid.uuid4().hex[:8]}").start()
    reader = c.CacheAside(c.connect_cache(lab.cache_servers),
                          c.Database(model.dsn, size=2), prefix=prefix)
    media_id, fan = model.media[0], model.fans[0]

    def read():
        rec.run(fan, "media", {"media_id": media_id}, lambda: {"like_count":
                                                               reader.like_count(media_id)})

    def like():
        with psycopg.connect(model.dsn, autocommit=True) as conn:
            rec.run(fan, "like", {"media_id": media_id},
                    lambda: {"changed": likes.like(conn, fan, media_id)})
        if service:
            service.wait_for_commits(1)

    try:
        if variant == "stale_set":   # a refill reads 0, the like commits and is deleted, then
            loaded, liked = threading.Event(), threading.Event()   # the refill stores its 0

            def slow_count():
                value = reader._count(media_id)
                loaded.set()
                liked.wait(10)
                return value

            refill = threading.Thread(target=lambda: reader.read("likes", media_id, slow_count))
            refill.start()
            assert loaded.wait(10)
            like()
            liked.set()
            refill.join(10)
        else:
            read()
            like()
        if variant != "invalidated":
            time.sleep(0.5)   # past the bound: a stale count read now is a violation
        read()
        result = checkers.check_staleness(rec.history, checkers.Target(
            dsn=model.dsn, cache_servers=lab.cache_servers, key_prefix=prefix),
            stale_bound_s=0.3)
    finally:
        reader.db.close()
        if service:
            service.stop()
            service.drop_slot()
    assert result.stats["keys_checked"] == 1
    assert result.stats["reads_checked"] == len(list(rec.history.of("media")))
    if variant == "invalidated":
        assert result.ok, result
        assert [o.value["like_count"] for o in rec.history.of("media")] == [0, 1]
    else:
        [like_op] = rec.history.of("like")
        [last_read] = list(rec.history.of("media"))[-1:]
        read_v, entry_v = result.violations
        assert read_v["kind"] == "stale read" and (read_v["saw"], read_v["possible"]) == (0, [1, 1])
        assert read_v["ops"] == [last_read.index, like_op.index]
        assert entry_v["kind"] == "stale cache entry"
        assert (entry_v["key"], entry_v["cached"], entry_v["database"]) == (
            f"{prefix}:likes:{media_id}", 0, 1)
        assert entry_v["ops"] == [like_op.index]
        if variant == "stale_set":
            assert result.stats["stale_sets"] == 1 and entry_v["cause"].startswith("stale set")
        else:
            assert result.stats["stale_sets"] == 0 and result.stats["stale_entries"] == 1
            assert entry_v["cause"].startswith("no invalidation")


# ------------------------------------------------------------------------------------ feeds

@pytest.fixture(scope="module")
def feed_world(feeds_world):
    """A database (storage schema, task tables) and a feeds keyspace, shared by the variants:
    creating a keyspace on the ring is the slow part."""
    with feeds_world("chk", shards=2) as w:
        yield w


@pytest.mark.cassandra
@pytest.mark.parametrize("skip", [0, 1])
def test_feeds_checker(feed_world, skip):
    """A post fanned out to every follower passes; a fan-out that skips one is reported."""
    w, rec = feed_world, Recorder()
    config = feeds.FeedConfig.from_lab(w.lab, w.keyspace, cache_servers=(),
                                       demo_skip_followers=skip)
    workers = CeleryWorkers(w.lab.config.lab_dir / f"celery-chk-{w.tag}-{skip}",
                            broker_url=w.lab.broker_url, dsn=w.lab.leader.dsn(w.db),
                            queue=f"chk-{w.tag}-{skip}", feeds=config.to_dict())
    conn = w.conn
    author = schema.create_user(conn, "author").user_id
    followers = [schema.create_user(conn, f"f{i}").user_id for i in range(3)]
    for f in followers:
        schema.follow(conn, f, author)
    try:
        with workers:
            post = rec.run(author, "post", {"caption": "hi"}, lambda: {
                "media_id": feeds.publish(conn, feeds.Feeds(w.session, w.keyspace), workers.app,
                                          author, "hi")})
            tasks.wait_for_fanout(conn, post.value["media_id"])
    finally:
        workers.delete_queues()
    late = schema.create_user(conn, "late").user_id
    schema.follow(conn, late, author)   # followed after the post: not owed it
    result = checkers.check_feeds(rec.history, checkers.Target(
        dsn=w.lab.leader.dsn(w.db), session=w.session, keyspace=w.keyspace))
    assert result.stats["posts_checked"] == 1
    if not skip:
        assert result.ok and result.stats["feed_rows_found"] == 3, result
    else:
        [v] = result.violations
        assert v["kind"] == "post missing from followers' feeds" and v["ops"] == [post.index]
        assert v["missing"] == 1 and v["followers"][0] in followers


# ---------------------------------------------------------------------------- check_all, text

def test_check_all_runs_every_checker_and_prints_a_summary(lab, model):
    rec = Recorder()
    with psycopg.connect(model.dsn, autocommit=True) as conn:
        rec.run(model.fans[0], "like", {"media_id": model.media[0]},
                lambda: {"changed": _like_counter_outside_transaction(
                    conn, model.fans[0], model.media[0])})
        rec.run(model.fans[0], "like", {"media_id": model.media[0]},
                lambda: {"changed": _like_counter_outside_transaction(
                    conn, model.fans[0], model.media[0])})
    # No worker runs the notification tasks here: the new like's notification is lost too.
    results = checkers.check_all(rec.history, checkers.Target(
        dsn=model.dsn, cache_servers=lab.cache_servers, key_prefix="none-cached"))
    assert [r.name for r in results] == ["likes", "notifications", "read-your-writes",
                                         "feeds", "staleness"]
    text = checkers.summary(results)
    assert "likes            FAIL   1 violations" in text
    assert "counter != like rows" in text and "feeds            skipped" in text
    assert [r.ok for r in results] == [False, False, True, True, True]
