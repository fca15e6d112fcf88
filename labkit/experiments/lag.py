"""Experiment: stale reads right after a write, per read-your-writes strategy, vs follower lag.

Introduced in notebooks/07_replication_lag.ipynb.

For each injected replay delay (``recovery_min_apply_delay`` on the follower) and each
strategy of ``labkit.backend.replication.ReadRouter``, ``users`` threads each do ``rounds``
cycles of "like a photo on the leader, then at once ask whether I liked it". A read that does
not see the like is stale. The cost of each strategy is measured on the same cycles: the share
of reads that went to the leader, and the write and read latencies.

>>> from labkit.experiments import lag
>>> rows = lag.run(lab, "exp_lag", delays_ms=(0, 500))   # doctest: +SKIP
>>> print(lag.table(rows))                                # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from labkit.backend.replication import STRATEGIES, ReadRouter, install, wait_for_lsn

DELAYS_MS = (0, 250, 500, 1000, 2000)

WRITE_SQL = "INSERT INTO ryw_likes (user_id, media_id) VALUES (%s, %s)"
READ_SQL = "SELECT count(*) FROM ryw_likes WHERE user_id = %s AND media_id = %s"


def catch_up(lab: Any, timeout_s: float = 10.0) -> bool:
    """Wait until the follower has replayed everything the leader has written so far."""
    (lsn,) = lab.leader.execute("SELECT pg_current_wal_insert_lsn()::text")[0]
    with lab.follower.connect() as conn:
        return wait_for_lsn(conn, lsn, timeout_s, poll_s=0.01)


def measure_point(lab: Any, dbname: str, strategy: str, delay_ms: int, *, users: int = 8,
                  rounds: int = 3, pin_s: float = 3.0, lsn_timeout_s: float = 1.0) -> dict:
    """One (strategy, delay) point: ``users`` x ``rounds`` write-then-read cycles."""
    leader_dsn, follower_dsn = lab.leader.dsn(dbname), lab.follower.dsn(dbname)
    media_ids = itertools.count(int(time.time() * 1000) * 1000)
    lock = threading.Lock()

    def one_user(user_id: int) -> list[tuple[bool, float, float, str]]:
        out = []
        with ReadRouter(leader_dsn, follower_dsn, strategy, pin_s=pin_s,
                        lsn_timeout_s=lsn_timeout_s) as router:
            for _ in range(rounds):
                with lock:
                    media_id = next(media_ids)
                t0 = time.perf_counter()
                router.write(user_id, WRITE_SQL, (user_id, media_id))
                t1 = time.perf_counter()
                ((seen,),) = router.read(user_id, READ_SQL, (user_id, media_id))
                t2 = time.perf_counter()
                out.append((seen == 0, (t1 - t0) * 1000, (t2 - t1) * 1000, router.last_source))
        return out

    with ThreadPoolExecutor(users) as pool:
        cycles = [c for user in pool.map(one_user, range(1, users + 1)) for c in user]
    n = len(cycles)
    return {
        "strategy": strategy, "delay_ms": delay_ms, "reads": n,
        "stale_reads": sum(c[0] for c in cycles),
        "stale_rate": sum(c[0] for c in cycles) / n,
        "leader_read_share": sum(c[3] == "leader" for c in cycles) / n,
        "write_ms": statistics.median(c[1] for c in cycles),
        "read_ms": statistics.median(c[2] for c in cycles),
    }


def run(lab: Any, dbname: str, delays_ms: Sequence[int] = DELAYS_MS,
        strategies: Sequence[str] = STRATEGIES, *, users: int = 8, rounds: int = 3,
        pin_s: float = 3.0, lsn_timeout_s: float = 1.0) -> list[dict]:
    """Every (strategy, delay) point; the follower's delay and commit mode are restored after.

    ``dbname`` must exist on the leader (and have replicated). ``remote_apply`` switches the
    leader to ``synchronous_commit = remote_apply`` for its points only.
    """
    with lab.leader.connect(dbname) as conn:
        install(conn)
        conn.execute("TRUNCATE ryw_likes")
    old_delay_ms = lab.follower.delay_ms()
    old_mode = lab.postgres.synchronous_commit()
    rows = []
    try:
        for strategy in strategies:
            lab.postgres.set_synchronous_commit(
                "remote_apply" if strategy == "remote_apply" else "local")
            for delay_ms in delays_ms:
                lab.follower.set_delay(delay_ms)
                catch_up(lab)
                rows.append(measure_point(lab, dbname, strategy, delay_ms, users=users,
                                          rounds=rounds, pin_s=pin_s,
                                          lsn_timeout_s=lsn_timeout_s))
    finally:
        lab.postgres.set_synchronous_commit(old_mode)
        lab.follower.set_delay(old_delay_ms)
        catch_up(lab)
    return rows


def table(rows: Sequence[dict]) -> str:
    """The result rows as an aligned text table."""
    lines = [f"{'strategy':<13}{'lag_ms':>7}{'reads':>6}{'stale':>7}{'leader':>8}"
             f"{'write_ms':>10}{'read_ms':>9}"]
    for r in rows:
        lines.append(f"{r['strategy']:<13}{r['delay_ms']:>7}{r['reads']:>6}"
                     f"{r['stale_rate']:>7.0%}{r['leader_read_share']:>8.0%}"
                     f"{r['write_ms']:>10.1f}{r['read_ms']:>9.1f}")
    return "\n".join(lines)


def plot(rows: Sequence[dict]):
    """Stale-read rate, leader-read share and latencies vs injected lag, one line per strategy."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    panels = [("stale_rate", "stale reads right after a write", "share of reads"),
              ("leader_read_share", "reads sent to the leader", "share of reads"),
              ("write_ms", "write latency (median)", "ms"),
              ("read_ms", "read latency (median)", "ms")]
    for ax, (key, title, unit) in zip(axes, panels):
        for strategy in dict.fromkeys(r["strategy"] for r in rows):
            pts = [r for r in rows if r["strategy"] == strategy]
            ax.plot([r["delay_ms"] for r in pts], [r[key] for r in pts], marker="o",
                    label=strategy)
        ax.set(title=title, xlabel="injected replay delay (ms)", ylabel=unit)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    return fig
