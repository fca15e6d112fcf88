"""Per-worker memory and profiles of a real preloading gunicorn serving the feed.

Structure and mechanism only (no thresholds on how much memory moves: that is a
measurement, in benchmarks/speedups.py and notebook 11).
"""

from __future__ import annotations

import os
import uuid

import pytest

from labkit.backend import datagen, schema
from labkit.experiments import profiling, worker_memory
from labkit.web import WebConfig, WebServer
from labkit.web.loadgen import get_requests, run_load


@pytest.fixture(scope="module")
def feed_db(lab):
    db = f"mem_{uuid.uuid4().hex[:10]}"
    schema.create_database(lab.leader, db, followers=lab.followers, shards=4)
    with lab.leader.connect(db) as conn:
        graph = datagen.generate(conn, users=2_000, media_per_user=2, follows_per_user=3,
                                 likes=2_000, progress=False)
        readers = datagen.add_readers(conn, graph, n=3, follows=100, among=500)
    lab.follower.wait_replayed()
    yield WebConfig.from_lab(lab, db), get_requests("/api/feed", [r.token for r in readers])
    lab.postgres.drop_database(db)


def test_memory_of_reads_this_process():
    m = worker_memory.memory_of(os.getpid())
    assert 0 < m.uss_mb <= m.rss_mb and 0 < m.pss_mb <= m.rss_mb
    assert m.shared_mb == pytest.approx(m.rss_mb - m.uss_mb)


def test_workers_start_out_sharing_the_preloaded_master(lab, feed_db):
    config, request = feed_db
    rows = worker_memory.run(config, lab.config.lab_dir / "mem-web", request,
                             gc_modes=("freeze", "disabled"), workers=2, steps=1,
                             requests_per_step=40)
    assert len(rows) == 2 * 2 * 2  # settings x workers x (fork + 1 step)
    for row in rows:
        if row["requests"] == 0:
            # Right after the fork almost everything is still the master's pages.
            assert row["shared_mb"] > 2 * row["uss_mb"], row
    after = [r for r in rows if r["requests"] == 40]
    assert {r["requests"] for r in after} == {40}
    frozen = [r["frozen_objects"] for r in after if r["gc_mode"] == "freeze"]
    assert all(n > 10_000 for n in frozen), frozen  # gc.freeze() moved the master's objects
    assert all(r["frozen_objects"] == 0 for r in after if r["gc_mode"] == "disabled")
    summary = {s["gc_mode"]: s for s in worker_memory.summarize(rows)}
    assert set(summary) == {"freeze", "disabled"} and summary["freeze"]["workers"] == 2


def test_profiles_of_a_worker_under_load(lab, feed_db, tmp_path):
    import threading
    config, request = feed_db
    with WebServer(lab.config.lab_dir / "prof-web", config.replace(feed_kernel="pure"),
                   workers=1, preload=True, profile_dir=tmp_path / "prof") as web:
        load = threading.Thread(target=run_load,
                                args=(web.host, web.port, request),
                                kwargs=dict(clients=2, duration_s=4, max_requests=400))
        load.start()
        raw = profiling.py_spy_record(web.worker_pids()[0], tmp_path / "feed.txt",
                                      duration_s=2, fmt="raw")
        load.join()
    hot = {r["function"]: r for r in profiling.hot_functions(raw, top=50)}
    assert "ranking.py:feed_page" in hot, list(hot)
    assert hot["ranking.py:feed_page"]["total_share"] > 0.2
    top = profiling.cprofile_top((tmp_path / "prof").glob("worker-*.prof"), only="labkit")
    assert "feedscore.py:score_candidates" in [r["function"] for r in top]
