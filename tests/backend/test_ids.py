"""Instagram IDs made by the PL/pgSQL function: unique under concurrency, increasing per shard."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from labkit.backend import ids, schema

SHARDS = 4


@pytest.fixture
def shard_db(lab, pg_db):
    with lab.leader.connect(pg_db) as conn:
        schema.install(conn, shards=SHARDS)
    return pg_db


def test_pack_and_decode_round_trip():
    i = ids.make_id(ms=123_456_789, shard=4321, seq=1023)
    d = ids.decode(i)
    assert (d.ms, d.shard, d.seq) == (123_456_789, 4321, 1023)
    assert i.bit_length() <= 64
    assert ids.decode(ids.make_id(0, 0, 1)).created_at.year == 2011  # the custom epoch


@pytest.mark.parametrize("bad", [0, -1, 1 << 63])
def test_decode_rejects_what_is_not_an_id(bad):
    with pytest.raises(ValueError, match="64-bit"):
        ids.decode(bad)


def test_install_is_idempotent_and_lists_shards(lab, shard_db):
    with lab.leader.connect(shard_db) as conn:
        assert schema.install(conn, shards=SHARDS) == list(range(SHARDS))
        assert schema.shards(conn) == list(range(SHARDS))


def test_ids_decode_to_their_shard_and_creation_time(lab, shard_db):
    with lab.leader.connect(shard_db) as conn:
        user = schema.create_user(conn, "decoder", shard=3)
        (created_at,), = conn.execute("SELECT created_at FROM shard_0003.users WHERE id = %s",
                                      (user.user_id,)).fetchall()
    d = ids.decode(user.user_id)
    assert d.shard == 3
    # The ID's clock is read in the same transaction as created_at's now(): well within a second.
    assert abs((d.created_at - created_at).total_seconds()) < 1


def test_100k_ids_made_concurrently_are_unique_and_increase_within_a_shard(lab, shard_db):
    clients, per_client, batch = 8, 12_500, 500

    def make(client: int) -> tuple[int, list[int]]:
        shard = client % SHARDS  # two clients share each shard, so sequences interleave
        out: list[int] = []
        with lab.leader.connect(shard_db) as conn:
            while len(out) < per_client:
                out += schema.next_ids(conn, shard, batch)
        return shard, out

    t0_ms = ids.now_ms()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(make, range(clients)))
    t1_ms = ids.now_ms()

    everything = [i for _, made in results for i in made]
    assert len(everything) == clients * per_client == 100_000
    assert len(set(everything)) == len(everything), "duplicate IDs"
    for shard, made in results:
        assert all(a < b for a, b in zip(made, made[1:])), f"IDs of shard {shard} went backwards"
        decoded = [ids.decode(i) for i in made]
        assert {d.shard for d in decoded} == {shard}
        assert t0_ms - 1000 <= decoded[0].ms <= decoded[-1].ms <= t1_ms + 1000


def test_create_database_replicates_the_model_to_the_follower(lab):
    name = f"ids_{int(time.time() * 1000) % 10**9}"
    try:
        schema.create_database(lab.leader, name, followers=lab.followers, shards=2)
        rows = lab.follower.execute("SELECT count(*) FROM public.logical_shards", dbname=name)
        assert rows == [(2,)]
    finally:
        lab.leader.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
