"""Likes and the denormalized counter on the real leader and follower."""

from __future__ import annotations

import random
import threading

import pytest

from labkit.backend import datagen, ids, likes, schema


@pytest.fixture
def model(lab, pg_db):
    """A database with 4 logical shards, 20 users and 3 media items."""
    with lab.leader.connect(pg_db) as conn:
        schema.install(conn, shards=4)
        users = [schema.create_user(conn, f"u{i}") for i in range(20)]
        media = [schema.create_media(conn, users[i].user_id, f"m{i}") for i in range(3)]
    return pg_db, [u.user_id for u in users], media


def test_like_and_unlike_are_idempotent(lab, model):
    db, users, media = model
    alice, m = users[0], media[0]
    with lab.leader.connect(db) as conn:
        assert likes.like(conn, alice, m) is True
        assert likes.like(conn, alice, m) is False  # double tap
        assert likes.count(conn, m) == likes.count_star(conn, m) == 1
        assert likes.liked(conn, alice, m)
        assert likes.unlike(conn, alice, m) is True
        assert likes.unlike(conn, alice, m) is False
        assert likes.count(conn, m) == likes.count_star(conn, m) == 0


def test_count_is_read_from_the_follower(lab, model):
    db, users, media = model
    with lab.leader.connect(db) as conn, lab.follower.connect(db) as fconn:
        for u in users[:5]:
            likes.like(conn, u, media[1])
        lab.follower.wait_replayed(conn=fconn)
        assert likes.count(fconn, media[1]) == 5
        assert fconn.execute("SELECT pg_is_in_recovery()").fetchone()[0]


@pytest.mark.parametrize("media_id", [ids.make_id(5, 1, 1), ids.make_id(5, 999, 1)],
                         ids=["installed-shard", "missing-shard"])
def test_unknown_media_is_not_found_and_leaves_nothing_behind(lab, model, media_id):
    db, users, _ = model
    with lab.leader.connect(db) as conn:
        for op in (likes.like, likes.unlike):
            with pytest.raises(schema.NotFound, match="no media item"):
                op(conn, users[0], media_id)
        with pytest.raises(schema.NotFound):
            likes.count(conn, media_id)
        rows = conn.execute("SELECT count(*) FROM shard_0001.user_likes_media").fetchone()
        assert rows == (0,)


def test_counter_equals_count_star_after_32_concurrent_clients(lab, model):
    db, users, media = model
    errors: list[BaseException] = []

    def client(i: int) -> None:
        rng = random.Random(i)
        try:
            with lab.leader.connect(db) as conn:
                for _ in range(60):
                    op = rng.choice((likes.like, likes.unlike))
                    op(conn, rng.choice(users), rng.choice(media))
        except BaseException as e:  # reported below, with the others
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    with lab.leader.connect(db) as conn, lab.follower.connect(db) as fconn:
        lab.follower.wait_replayed(conn=fconn)
        for m in media:
            expected = likes.count_star(conn, m)
            assert likes.count(conn, m) == expected
            assert likes.count(fconn, m) == expected == likes.count_star(fconn, m)


def test_generated_graph_has_consistent_counters_and_a_power_law(lab, pg_db):
    with lab.leader.connect(pg_db) as conn:
        schema.install(conn, shards=4)
        graph = datagen.generate(conn, users=300, likes=5_000, progress=False, seed=7)
        assert graph.counts["likes"] == 5_000
        mismatched = 0
        for shard in schema.shards(conn):
            s = schema.shard_schema(shard)
            mismatched += conn.execute(
                f"SELECT count(*) FROM {s}.media_likes c LEFT JOIN (SELECT media_id, count(*) n "
                f"FROM {s}.user_likes_media GROUP BY media_id) l USING (media_id) "
                "WHERE c.count <> coalesce(l.n, 0)").fetchone()[0]
        assert mismatched == 0
        counts = sorted((likes.count(conn, m) for m in graph.media_ids), reverse=True)
        # Power law: the top 1% of posts hold far more than 1% of the likes.
        top = counts[: max(1, len(counts) // 100)]
        assert sum(top) > 0.1 * sum(counts)
        assert counts[0] == likes.count(conn, graph.hot_media_id)

        before = likes.count(conn, graph.hot_media_id)
        assert datagen.add_likes(conn, graph.hot_media_id, 2_500, progress=False) == before + 2_500
        assert datagen.add_likes(conn, graph.hot_media_id, 2_500, progress=False) == before + 5_000
        assert likes.count_star(conn, graph.hot_media_id) == before + 5_000
