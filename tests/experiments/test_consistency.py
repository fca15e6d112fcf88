"""The consistency experiment: its checker against hand-made and broken histories, and the
stale read at ONE with a slow replica (none at QUORUM/QUORUM) on the real ring."""

from __future__ import annotations

import pytest

from labkit.experiments import consistency as C


def op(kind, key, value, invoke_s, complete_s, status="ok", **meta) -> C.Op:
    return C.Op(0, kind, key, value, invoke_s, complete_s, status, "ONE", meta)


def test_a_read_that_missed_an_acknowledged_write_is_stale():
    w1, w2 = op("write", 1, 10, 0.0, 1.0), op("write", 1, 20, 2.0, 3.0)
    stale = op("read", 1, 10, 4.0, 5.0)
    nothing = op("read", 1, None, 1.5, 1.6)
    anomalies = C.check([w1, w2, stale, nothing])
    assert [(a.kind, a.read, a.write) for a in anomalies] == [
        ("stale", stale, w2), ("stale", nothing, w1)]


def test_concurrent_reads_and_unacknowledged_writes_oblige_nothing():
    w1 = op("write", 1, 10, 0.0, 1.0)
    w2 = op("write", 1, 20, 2.0, 3.0)
    timed_out = op("write", 1, 30, 4.0, 6.0, status="info")
    ops = [w1, w2, timed_out,
           op("read", 1, 10, 2.5, 3.5),   # began before w2 was acknowledged: either is fine
           op("read", 1, 20, 3.5, 3.6),
           op("read", 1, 20, 7.0, 7.1),   # the timed-out write need not be seen...
           op("read", 1, 30, 7.2, 7.3),   # ...but may be
           op("read", 2, None, 9.0, 9.1),  # another key: nothing written there
           op("read", 1, None, 8.0, 9.0, status="fail")]
    assert C.check(ops) == []


def test_a_value_nobody_wrote_is_flagged():
    ops = [op("write", 1, 10, 0.0, 1.0), op("read", 1, 99, 2.0, 3.0)]
    assert [a.kind for a in C.check(ops)] == ["unknown"]


def test_the_checker_catches_a_deliberately_broken_history():
    ops = []
    for key in range(20):
        ops += [op("write", key, 5, key, key + 0.1), op("read", key, 5, key + 0.5, key + 0.6)]
    assert C.check(ops) == []
    broken, victim = C.corrupt(ops)
    anomalies = C.check(broken)
    assert len(anomalies) == 1 and anomalies[0].read is victim and anomalies[0].kind == "stale"


@pytest.mark.cassandra
def test_a_slow_replica_gives_stale_reads_at_one_and_none_at_quorum(ring_lab):
    keyspace = C.prepare(ring_lab, "consistency_test")
    history, rows = C.t_visibility(ring_lab, keyspace,
                                   pairs=[("ONE", "ONE"), ("QUORUM", "QUORUM")],
                                   delays_ms=[0, 20, 100], trials=25,
                                   slow={"pause_ms": 800, "run_ms": 200})
    assert all(n.running() for n in ring_lab.cassandra.nodes)
    one, one_reads = C.stale_rate(rows, "ONE", "ONE")
    quorum, quorum_reads = C.stale_rate(rows, "QUORUM", "QUORUM")
    assert one_reads >= 60 and quorum_reads >= 60, rows
    assert one >= 1, f"no stale read at ONE/ONE in {one_reads} with C frozen 80% of the time"
    assert quorum == 0, f"W + R > N, yet {quorum} stale reads at QUORUM/QUORUM"
    assert history.windows, "the nemesis' pauses are in the history"
    # The checker catches a stale read slipped into this very history.
    quorum_ops = [o for o in history.ops if o.meta["w"] == "QUORUM"]
    broken, victim = C.corrupt(quorum_ops)
    assert [a.read for a in C.check(broken)] == [victim]
