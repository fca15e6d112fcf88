"""Cassandra feeds, measured: ring start-up, fan-out rows/s, feed read latency, t-visibility.

Figures for notebook 09 (issue 11). Targets on 2 cores: a cached feed page p99 <= 2 ms, an
uncached QUORUM page p99 <= 20 ms, a warm ring ready in <= 15 s. Medians over ``--runs``.

    python benchmarks/feeds.py                                   # every part, 3 runs
    python benchmarks/feeds.py --parts ring --runs 3             # cold and warm ring start
    python benchmarks/feeds.py --parts fanout --followers 100000 --runs 1
    python benchmarks/feeds.py --parts reads,visibility

``ring`` starts a ring in a fresh lab directory (cold: nothing on disk; the jars are resolved
before the clock starts), stops it with ``lk.down()`` (data kept) and starts it again (warm);
"ready" is `lk.up` returning: every node answers CQL and sees its two peers. The other parts
run on the lab of ``LabConfig`` (``LABKIT_LAB_DIR``), bringing the ring up there if needed:
``fanout`` times a post to ``--followers`` followers through 1 and 2 Celery workers (rows/s =
followers / time from the post request to the last batch); ``reads`` times first pages of a
100-post feed, uncached (Cassandra, at ONE and QUORUM) and cached (memcached hit under the
lease); ``visibility`` prints the t-visibility table with ``--trials`` per point, without
faults and with replica C frozen 800 ms of every second.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import labkit as lk
from labkit.backend import datagen, feeds, ids, schema, tasks
from labkit.backend.cache import percentile
from labkit.backend.workers import CeleryWorkers
from labkit.config import LabConfig
from labkit.experiments import consistency
from labkit.services.cassandra import resolve_jars


def ring_start(runs: int) -> None:
    resolve_jars(LabConfig.load().cache_dir)  # a one-off, not part of either figure
    cold, warm = [], []
    for i in range(runs):
        lab_dir = Path(tempfile.mkdtemp(prefix="labkit-bench-ring-", dir="/tmp"))
        lab_dir.chmod(0o755)
        config = LabConfig.load(lab_dir=lab_dir, services=("cassandra",), cassandra="ring")
        try:
            t0 = time.monotonic()
            lk.up(config)
            cold.append(time.monotonic() - t0)
            lk.down(config)
            t0 = time.monotonic()
            lk.up(config)
            warm.append(time.monotonic() - t0)
            print(f"  run {i + 1}: cold {cold[-1]:.1f} s, warm {warm[-1]:.1f} s", flush=True)
        finally:
            lk.down(config, purge=True)
            shutil.rmtree(lab_dir, ignore_errors=True)
    print(f"ring ready: cold median {statistics.median(cold):.1f} s (min {min(cold):.1f}), "
          f"warm median {statistics.median(warm):.1f} s (min {min(warm):.1f}); target warm <= 15 s")


def _prepare(lab: lk.Lab, tag: str) -> tuple[str, object, str]:
    db = schema.create_database(lab.leader, f"bench_feeds_{tag}")
    with lab.leader.connect(db) as conn:
        tasks.install(conn)
    session = lab.cassandra.connect()
    keyspace = feeds.install(session, f"bench_feeds_{tag}")
    return db, session, keyspace


def fanout(lab: lk.Lab, runs: int, followers: int) -> None:
    tag = uuid.uuid4().hex[:6]
    db, session, keyspace = _prepare(lab, tag)
    conn = lab.leader.connect(db, autocommit=True)
    fd = feeds.Feeds(session, keyspace)
    datagen.add_followers(conn, schema.create_user(conn, "first").user_id, followers)
    try:
        for n_workers in (1, 2):
            config = feeds.FeedConfig.from_lab(lab, keyspace, threshold=10**9, cache_servers=())
            workers = CeleryWorkers(lab.config.lab_dir / f"bench-fanout-{tag}-{n_workers}",
                                    broker_url=lab.broker_url, dsn=lab.leader.dsn(db),
                                    queue=f"bench-fanout-{tag}-{n_workers}", workers=n_workers,
                                    feeds=config.to_dict())
            rates = []
            with workers:
                for _ in range(runs):
                    author = schema.create_user(conn, "author").user_id
                    datagen.add_followers(conn, author, followers)
                    t0 = time.monotonic()
                    post = feeds.publish(conn, fd, workers.app, author, "bench")
                    tasks.wait_for_fanout(conn, post, timeout_s=3600, poll_s=0.1)
                    rates.append(followers / (time.monotonic() - t0))
            workers.delete_queues()
            print(f"fan-out to {followers:,} followers, {n_workers} worker(s): median "
                  f"{statistics.median(rates):,.0f} rows/s (runs: "
                  f"{', '.join(f'{r:,.0f}' for r in rates)})", flush=True)
    finally:
        conn.close()
        session.execute(f"DROP KEYSPACE {keyspace}", timeout=120)
        session.cluster.shutdown()
        lab.postgres.drop_database(db)


def reads(lab: lk.Lab, runs: int, n: int = 500) -> None:
    tag = uuid.uuid4().hex[:6]
    session = lab.cassandra.connect()
    keyspace = feeds.install(session, f"bench_reads_{tag}")
    viewer = 1_000_001
    writer = feeds.Feeds(session, keyspace)
    for i in range(100):
        writer.deliver(ids.make_id(ids.now_ms() - i * 60_000, 0, i), 7, [viewer])
    results: dict[str, list[tuple[float, float]]] = {}
    try:
        for level in ("ONE", "QUORUM"):
            fd = feeds.Feeds(session, keyspace, read_cl=level)
            config = feeds.FeedConfig.from_lab(lab, keyspace, read_cl=level,
                                               cache_prefix=f"bench{tag}{level}")
            cache = config.cache()
            for _ in range(runs):
                for label, read in ((f"uncached {level}", lambda: fd.page(viewer, count=20)),
                                    (f"cached ({level} refill)",
                                     lambda: cache.first_page(viewer, lambda: fd.page(viewer)))):
                    for _ in range(50):  # warm-up: connections, prepared statements, the cache
                        read()
                    ms = []
                    for _ in range(n):
                        t0 = time.perf_counter()
                        read()
                        ms.append((time.perf_counter() - t0) * 1000)
                    results.setdefault(label, []).append((percentile(ms, 50), percentile(ms, 99)))
    finally:
        session.execute(f"DROP KEYSPACE {keyspace}", timeout=120)
        session.cluster.shutdown()
    print(f"first page of 20 posts ({n} reads per run, medians over {runs} runs):")
    for label, rows in results.items():
        p50 = statistics.median(r[0] for r in rows)
        p99 = statistics.median(r[1] for r in rows)
        print(f"  {label:<24} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
    print("targets: cached p99 <= 2 ms, uncached QUORUM p99 <= 20 ms")


def visibility(lab: lk.Lab, trials: int) -> None:
    keyspace = consistency.prepare(lab, "bench_consistency")
    for label, slow in (("no faults", None), ("replica C frozen 800 ms of every second",
                                              {"pause_ms": 800, "run_ms": 200})):
        _, rows = consistency.t_visibility(lab, keyspace, trials=trials, slow=slow,
                                           delays_ms=(0, 5, 20, 100, 500, 1000))
        print(f"\nt-visibility, {label} ({trials} trials per point): P(read sees the write)")
        print(consistency.table(rows), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="ring,fanout,reads,visibility")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--followers", type=int, default=10_000)
    ap.add_argument("--trials", type=int, default=40)
    args = ap.parse_args()
    parts = [p.strip() for p in args.parts.split(",")]
    print("(the machine may be shared: figures are medians, compare them on a quiet one)")
    if "ring" in parts:
        ring_start(args.runs)
    if set(parts) & {"fanout", "reads", "visibility"}:
        lab = lk.up(cassandra="ring")
        if "fanout" in parts:
            fanout(lab, args.runs, args.followers)
        if "reads" in parts:
            reads(lab, args.runs)
        if "visibility" in parts:
            visibility(lab, args.trials)


if __name__ == "__main__":
    main()
