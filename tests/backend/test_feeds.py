"""Feeds and activity on the real ring: paging, the hybrid, fan-out under a kill, the page cache.

One keyspace and one PostgreSQL database for the module, on the session's ring
(`ring_lab`); Celery workers of the module's own queues.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest

from labkit.backend import datagen, feeds, ids, schema, tasks
from labkit.backend.leases import make_lease
from labkit.backend.workers import CeleryWorkers

pytestmark = pytest.mark.cassandra


@pytest.fixture(scope="module")
def world(feeds_world):
    """A database with the storage schema and the task tables, and a feeds keyspace."""
    with feeds_world("feeds", shards=4) as w:
        yield {**vars(w), "feeds": feeds.Feeds(w.session, w.keyspace)}


def _posts(author_shard: int, n: int, every_h: float, offset_ms: int = 0) -> list[int]:
    """``n`` post IDs, newest first, one every ``every_h`` hours back from now."""
    now = ids.now_ms()
    return [ids.make_id(now - int(i * every_h * 3_600_000) - offset_ms, author_shard, i % 1024)
            for i in range(n)]


def _workers(world, name: str, **kw) -> CeleryWorkers:
    lab = world["lab"]
    return CeleryWorkers(lab.config.lab_dir / f"celery-{name}-{world['tag']}",
                         broker_url=lab.broker_url, dsn=lab.leader.dsn(world["db"]),
                         queue=f"{name}-{world['tag']}", **kw)


# ------------------------------------------------------------------------------------ paging

def test_paging_returns_every_item_once_newest_first(world):
    fd, viewer = world["feeds"], 7_000_001
    fanned = _posts(1, 61, every_h=17)               # over ~6 weeks: several buckets
    celeb = _posts(2, 23, every_h=29, offset_ms=3)   # merged at read time
    for m in fanned:
        fd.deliver(m, 11, [viewer])
    for m in celeb:
        fd.add_post(22, m)
    assert len({fd.bucket(m) for m in fanned}) >= 4
    pages, cursor = [], None
    while True:
        page = fd.page(viewer, count=9, cursor=cursor, celebrities=[22])
        pages.append(page.items)
        cursor = page.cursor
        if cursor is None:
            break
    seen = [i.media_id for p in pages for i in p]
    assert Counter(seen).most_common(1)[0][1] == 1, "no item twice"
    assert seen == sorted(fanned + celeb, reverse=True), "every item, newest first"
    assert all(len(p) == 9 for p in pages[:-1]) and len(pages[-1]) <= 9


def test_a_cursor_works_only_for_its_own_feed(world):
    fd = world["feeds"]
    for m in _posts(1, 5, every_h=1):
        fd.deliver(m, 11, [7_000_002])
    cursor = fd.page(7_000_002, count=2).cursor
    assert cursor is not None
    with pytest.raises(ValueError, match="belongs to another feed"):
        fd.page(7_000_003, count=2, cursor=cursor)
    with pytest.raises(ValueError, match="not a feed cursor"):
        fd.page(7_000_002, count=2, cursor="bm90IGEgY3Vyc29y")


# ------------------------------------------------------------------------------ the hybrid

def test_the_hybrid_feed_equals_the_pure_fan_out_feed(world):
    """Same graph, same posts: fanned out to everyone, or the celebrity merged at read time."""
    conn, lab = world["conn"], world["lab"]
    small = schema.create_user(conn, "small").user_id
    celeb = schema.create_user(conn, "celeb").user_id
    viewers = [schema.create_user(conn, f"v{i}").user_id for i in range(3)]
    for v in viewers:
        schema.follow(conn, v, small)
        schema.follow(conn, v, celeb)
    datagen.add_followers(conn, celeb, 40, first=10_000)
    datagen.add_followers(conn, small, 5, first=20_000)
    posts = {schema.create_media(conn, a, f"p{i}"): a for i in range(6) for a in (small, celeb)}
    # Pure fan-out on write, in a keyspace of its own, written directly.
    pure = feeds.Feeds(world["session"], feeds.install(world["session"], f"pure_{world['tag']}"))
    for m, author in posts.items():
        pure.deliver(m, author, schema.followers(conn, author))
    # The hybrid, through the Celery tasks: accounts above 20 followers are merged at read.
    config = feeds.FeedConfig.from_lab(lab, world["keyspace"], threshold=20, batch_size=4,
                                       cache_servers=())
    with _workers(world, "hybrid", workers=1, feeds=config.to_dict()) as w:
        for m, author in posts.items():
            world["feeds"].add_post(author, m)
            w.app.tasks["fan_out_post"].delay(media_id=m, author_id=author)
        for m in posts:
            tasks.wait_for_fanout(conn, m)
    modes = dict(conn.execute("SELECT author_id, min(mode) FROM fanouts GROUP BY author_id"))
    assert modes == {small: "write", celeb: "read"}
    celebrities = feeds.Celebrities(threshold=20)
    for v in viewers:
        assert celebrities.followed_by(conn, v) == [celeb]
        hybrid = world["feeds"].all_items(v, count=5, celebrities=celebrities.followed_by(conn, v))
        assert hybrid == pure.all_items(v, count=5)
        assert sorted(i.media_id for i in hybrid) == sorted(posts)
    world["session"].execute(f"DROP KEYSPACE pure_{world['tag']}", timeout=feeds.DDL_TIMEOUT_S)


# ------------------------------------------------------------------- fan-out under a SIGKILL

def test_every_follower_gets_the_post_once_when_a_worker_is_killed(world):
    conn, fd = world["conn"], world["feeds"]
    author = schema.create_user(conn, "author").user_id
    followers = datagen.add_followers(conn, author, 3_000, first=100_000)
    config = feeds.FeedConfig.from_lab(world["lab"], world["keyspace"], batch_size=25,
                                       cache_servers=())
    w = _workers(world, "kill", workers=2, feeds=config.to_dict(), prefetch=2).start()
    try:
        media_id = feeds.publish(conn, fd, w.app, author, "kill me")
        deadline = time.monotonic() + 60
        while tasks.fanout_progress(conn, media_id)[0] < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        w.kill(0)
        done_at_kill, planned = tasks.fanout_progress(conn, media_id)
        tasks.wait_for_fanout(conn, media_id, timeout_s=120)
        alive = w.alive()
    finally:
        w.stop()
        w.delete_queues()
    assert planned == 120 and 10 <= done_at_kill < planned, "the kill landed mid fan-out"
    assert alive == [False, True]
    executions = conn.execute("SELECT count(*) FROM fanout_batches WHERE media_id = %s",
                              (media_id,)).fetchone()[0]
    assert executions >= planned
    select = world["session"].prepare(
        f"SELECT media_id FROM {world['keyspace']}.feed_by_user WHERE user_id = ? AND bucket = ?")
    from cassandra.concurrent import execute_concurrent_with_args
    results = execute_concurrent_with_args(world["session"], select,
                                           [(f, fd.bucket(media_id)) for f in followers])
    copies = [sum(r.media_id == media_id for r in rows) for ok, rows in results]
    assert Counter(copies) == {1: len(followers)}, "every follower: the post exactly once"


# ------------------------------------------------------------------------ activity, redelivered

def test_a_redelivered_like_task_writes_one_activity_row(world):
    conn, lab = world["conn"], world["lab"]
    from labkit.backend import likes
    owner = schema.create_user(conn, "owner").user_id
    post = schema.create_media(conn, owner, "liked")
    fan = schema.create_user(conn, "fan").user_id
    likes.like(conn, fan, post)
    config = feeds.FeedConfig.from_lab(lab, world["keyspace"], cache_servers=())
    tasks.inject_crash(conn, liker_id=fan, media_id=post)
    with _workers(world, "activity", workers=2, feeds=config.to_dict()) as w:
        w.app.tasks["notify_like"].delay(liker_id=fan, media_id=post, owner_id=owner)
        tasks.wait_for_notifications(conn, 1)
        alive = w.alive()
    attempts = conn.execute("SELECT count(*) FROM pushes WHERE liker_id = %s", (fan,)).fetchone()[0]
    assert sorted(alive) == [False, True] and attempts == 2, "the task ran twice"
    rows = [a for a in world["feeds"].activity(owner) if a.actor_id == fan]
    liked_at = likes.liked_at(conn, fan, post)
    assert rows == [feeds.Activity(int(liked_at.timestamp() * 1000), "like", fan, post)]


# ---------------------------------------------------------------------------- the page cache

def _racing_refill(cache: feeds.FeedCache, fd: feeds.Feeds, viewer: int, write) -> None:
    """A refill reads the feed, then (paused) the writer writes and deletes, then it stores."""
    read, written = threading.Event(), threading.Event()

    def slow_load():
        page = fd.page(viewer, count=10)
        read.set()
        written.wait(10)
        return page

    t = threading.Thread(target=lambda: cache.first_page(viewer, slow_load))
    t.start()
    assert read.wait(10)
    write()
    written.set()
    t.join(10)


@pytest.mark.parametrize("lease, stale", [("none", True), ("meta", False)])
def test_a_refill_that_read_before_the_write_never_outlives_the_delete(world, lease, stale):
    """Write Cassandra, then delete: plain cache-aside still caches the old page (the race);
    under a lease the delete cancels the refill's store, so the next read sees the write."""
    fd, lab = world["feeds"], world["lab"]
    viewer = 8_000_000 + (lease == "meta")
    old, new = _posts(1, 2, every_h=1)[::-1]
    fd.deliver(old, 11, [viewer])
    cache = feeds.FeedCache(make_lease(lease, lab.cache_servers), prefix=f"t{uuid.uuid4().hex[:6]}")

    def write():
        fd.deliver(new, 11, [viewer])     # Cassandra first...
        cache.invalidate([viewer])        # ...then the delete

    _racing_refill(cache, fd, viewer, write)
    served = cache.first_page(viewer, lambda: fd.page(viewer, count=10))
    assert [i.media_id for i in fd.page(viewer, count=10).items] == [new, old]
    assert ([i.media_id for i in served.items] == [old]) is stale


def test_the_fan_out_deletes_the_cached_page_after_writing(world):
    conn, lab = world["conn"], world["lab"]
    author = schema.create_user(conn, "poster").user_id
    viewer = schema.create_user(conn, "viewer").user_id
    schema.follow(conn, viewer, author)
    prefix = f"fo{uuid.uuid4().hex[:6]}"
    config = feeds.FeedConfig.from_lab(lab, world["keyspace"], cache_prefix=prefix)
    cache, fd = config.cache(), world["feeds"]
    before = cache.first_page(viewer, lambda: fd.page(viewer))
    with _workers(world, "cache", workers=1, feeds=config.to_dict()) as w:
        media_id = feeds.publish(conn, fd, w.app, author, "fresh")
        tasks.wait_for_fanout(conn, media_id)
    after = cache.first_page(viewer, lambda: fd.page(viewer))
    assert media_id not in [i.media_id for i in before.items]
    assert after.items[0].media_id == media_id
