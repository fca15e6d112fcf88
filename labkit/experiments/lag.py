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

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from labkit.backend import likes, schema
from labkit.backend.replication import STRATEGIES, ReadRouter

DELAYS_MS = (0, 250, 500, 1000, 2000)


def prepare(lab: Any, dbname: str, *, users: int, photos: int) -> tuple[list[int], list[int]]:
    """``users`` fresh accounts and ``photos`` fresh posts in ``dbname`` (storage schema).

    The schema is installed if missing; returns (user ids, media ids) once the follower has
    them. Fresh posts make every like of the experiment a real change (no double taps).
    """
    with lab.leader.connect(dbname) as conn:
        schema.install(conn)
        user_ids = [schema.create_user(conn, f"lag-user{i}").user_id for i in range(users)]
        poster = schema.create_user(conn, "lag-poster").user_id
        media_ids = [schema.create_media(conn, poster, f"photo {i}") for i in range(photos)]
    lab.follower.wait_replayed()
    return user_ids, media_ids


def measure_point(lab: Any, dbname: str, strategy: str, delay_ms: int, *,
                  user_ids: Sequence[int], media_ids: Sequence[int], pin_s: float = 3.0,
                  lsn_timeout_s: float = 1.0) -> dict:
    """One (strategy, delay) point: each user likes each of ``media_ids`` and reads it back."""
    leader_dsn, follower_dsn = lab.leader.dsn(dbname), lab.follower.dsn(dbname)

    def one_user(user_id: int) -> list[tuple[bool, float, float, str]]:
        out = []
        with ReadRouter(leader_dsn, follower_dsn, strategy, pin_s=pin_s,
                        lsn_timeout_s=lsn_timeout_s) as router:
            for media_id in media_ids:
                t0 = time.perf_counter()
                router.write(user_id, lambda conn: likes.like(conn, user_id, media_id))
                t1 = time.perf_counter()
                seen = router.read(user_id, lambda conn: likes.liked(conn, user_id, media_id))
                t2 = time.perf_counter()
                out.append((not seen, (t1 - t0) * 1000, (t2 - t1) * 1000, router.last_source))
        return out

    with ThreadPoolExecutor(len(user_ids)) as pool:
        cycles = [c for user in pool.map(one_user, user_ids) for c in user]
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

    ``dbname`` must exist on the leader (and have replicated); the storage schema is
    installed if missing, and each point gets ``rounds`` fresh posts that ``users`` fresh
    accounts like. ``remote_apply`` switches the leader to ``synchronous_commit =
    remote_apply`` for its points only.
    """
    points = [(s, d) for s in strategies for d in delays_ms]
    user_ids, media_ids = prepare(lab, dbname, users=users, photos=rounds * len(points))
    old_delay_ms = lab.follower.delay_ms()
    old_mode = lab.postgres.synchronous_commit()
    rows = []
    try:
        for i, (strategy, delay_ms) in enumerate(points):
            lab.postgres.set_synchronous_commit(
                "remote_apply" if strategy == "remote_apply" else "local")
            lab.follower.set_delay(delay_ms)
            lab.follower.wait_replayed(timeout_s=10 + delay_ms / 1000)
            rows.append(measure_point(lab, dbname, strategy, delay_ms, user_ids=user_ids,
                                      media_ids=media_ids[i * rounds:(i + 1) * rounds],
                                      pin_s=pin_s, lsn_timeout_s=lsn_timeout_s))
    finally:
        lab.postgres.set_synchronous_commit(old_mode)
        lab.follower.set_delay(old_delay_ms)
        lab.follower.wait_replayed(timeout_s=10 + old_delay_ms / 1000)
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
