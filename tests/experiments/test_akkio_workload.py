"""The Akkio experiment's workload and summaries (pure: the runs themselves are in notebook 10)."""

from __future__ import annotations

from labkit.backend.akkio import Request
from labkit.experiments.akkio import PolicyRun, Workload, summarize, timeline


def test_the_schedule_is_the_same_for_every_policy_and_follows_the_trips() -> None:
    w = Workload(users=20, duration_s=10, rate=20, travel_share=0.5, for_good_share=0.5)
    assert w.schedule() == w.schedule()
    assert len(w.schedule()) == 200
    homes, trips = w.homes(), w.trips()
    assert len(trips) == 10
    assert sum(until > w.duration_s for _, until in trips.values()) == 5   # for good
    for at_s, user, region, op in w.schedule():
        start, until = trips.get(user, (-1, -1))
        abroad = start <= at_s < until
        assert (region != homes[user]) == abroad
        assert op in ("read", "append")


def test_summary_counts_requests_that_crossed_and_lookup_costs() -> None:
    recs = [Request(100.0, "read", 1, "eu", "us", 1, 90.0, 0.5, "hit"),
            Request(100.5, "read", 1, "eu", "eu", 0, 5.0, 0.7, "hit", stale=0),
            Request(101.0, "append", 2, "us", "us", 0, 8.0, 3.0, "miss"),
            Request(103.0, "read", 2, "us", "eu", 2, 200.0, 0.4, "hit", stale=1)]
    run = PolicyRun("akkio", records=recs, rows={"us": 3, "eu": 4}, started_at=100.0)
    s = summarize(run)
    assert s["cross_share"] == 0.5 and s["cross_region_requests"] == 2
    assert s["rows_total"] == 7 and s["stale_redirects"] == 1
    assert s["cache_hit_ratio"] == 0.75 and s["lookup_miss_p99_ms"] == 3.0
    buckets = timeline(run, bucket_s=2.0)
    assert [b["t_s"] for b in buckets] == [0.0, 2.0]
    assert buckets[0]["cross_share"] == 1 / 3 and buckets[1]["cross_share"] == 1.0
