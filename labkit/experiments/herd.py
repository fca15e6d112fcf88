"""The thundering herd: N clients read one hot key at the moment its cache entry goes away.

Introduced in notebooks/05_thundering_herd.ipynb (and used again in 06_leases).

Each round warms the hot key, parks N clients (threads, or threads spread over separate
processes) on a barrier, deletes the key (an expiry or an invalidation: either way the next
read misses), and releases them all at once. Every client reads the key through a lease kind
(``labkit.backend.leases``). The refill is an expensive query (``slow_like_count``, taking
``refill_ms``), so the misses overlap as they do under production load.

Database queries per expiry come from PostgreSQL itself (``pg_stat_statements`` calls of the
refill), not only from the clients' own counters. Client latency p50/p99 and errors are
reported beside them.

    labkit experiment herd --clients 256 --lease meta --out results.json

>>> dsn = prepare(lab.leader)                                              # doctest: +SKIP
>>> run_herd(dsn, lab.cache_servers, clients=64, lease="tokens")["queries_per_expiry"]  # doctest: +SKIP
1.0
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import psycopg
from psycopg import sql

from labkit.backend import datagen, ids, schema
from labkit.backend.cache import Database, cache_key, percentile, statement_calls
from labkit.backend.leases import KINDS, make_lease
from labkit.experiments.results import save as save_results

REFILL_SQL = "SELECT slow_like_count(%s, %s)"
DEFAULT_DBNAME = "labkit_herd"

# The refill: the post's counter row read from its shard (the schema its ID names, as
# labkit.backend.likes.count does), after ``cost_ms`` of work, like an aggregate or a cold page.
SLOW_LIKE_COUNT_SQL = f"""
CREATE OR REPLACE FUNCTION public.slow_like_count(p_media_id bigint, cost_ms int)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  likes bigint;
BEGIN
  PERFORM pg_sleep(cost_ms / 1000.0);
  EXECUTE format('SELECT count FROM %I.media_likes WHERE media_id = $1',
                 'shard_' || lpad(((p_media_id >> {ids.SEQ_BITS}) & {ids.MAX_SHARDS - 1})::text, 4, '0'))
     INTO likes USING p_media_id;
  RETURN likes;
END $$;
"""


def prepare(leader: Any, dbname: str = DEFAULT_DBNAME) -> str:
    """Make the experiment's database on ``leader`` (kept if it has the data); return its DSN.

    The storage schema (4 shards) with a small generated graph, ``pg_stat_statements`` (to
    count the refills) and the refill function.
    """
    if not leader.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)):
        leader.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    with leader.connect(dbname) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute(SLOW_LIKE_COUNT_SQL)
        schema.install(conn)
        if _hot_media(conn) is None:
            datagen.generate(conn, users=200, likes=2_000, progress=False, seed=5)
    return leader.dsn(dbname)


def _hot_media(conn: psycopg.Connection) -> int | None:
    parts = [sql.SQL("SELECT media_id, count FROM {}.media_likes").format(
        sql.Identifier(schema.shard_schema(s))) for s in schema.shards(conn)]
    row = conn.execute(sql.SQL(" UNION ALL ").join(parts)
                       + sql.SQL(" ORDER BY count DESC, media_id LIMIT 1")).fetchone()
    return None if row is None else row[0]


def hot_media_id(dsn: str) -> int:
    """The most-liked post of the experiment's database: whose like count is the hot key."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        media_id = _hot_media(conn)
    if media_id is None:
        raise schema.NotFound("no media in this database; run herd.prepare(lab.leader, dbname)")
    return media_id


def refill_calls(dsn: str) -> int:
    """How many refills PostgreSQL has executed in this database so far."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return statement_calls(conn, "slow_like_count")


def _clients(lease: Any, db: Database, media_id: int, key: str, n: int, refill_ms: int,
             ttl_s: int, start: Any) -> tuple[list[threading.Thread], list[float], list[str]]:
    """``n`` parked client threads: each waits for ``start`` then reads ``key`` once."""
    latencies_ms: list[float] = []
    errors: list[str] = []

    def load() -> Any:
        return db.query_one(REFILL_SQL, (media_id, refill_ms))[0]

    def client() -> None:
        start.wait()
        t0 = time.perf_counter()
        try:
            lease.read(key, load, ttl_s)
            latencies_ms.append((time.perf_counter() - t0) * 1000)
        except Exception as e:  # the experiment reports errors instead of stopping
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=client, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, latencies_ms, errors


def run_herd(dsn: str, cache_servers: Sequence[tuple[str, int]], *, clients: int = 64,
             lease: str = "none", rounds: int = 3, mode: str = "threads", processes: int = 4,
             refill_ms: int = 20, stale_s: int = 0, pool_size: int = 32,
             prefix: str | None = None, lease_options: dict | None = None,
             media_id: int | None = None) -> dict[str, Any]:
    """Run ``rounds`` expiries of the hot key under ``clients`` concurrent readers.

    ``mode="threads"``: all clients are threads of this process; ``"processes"``: they are
    spread over ``processes`` worker processes (each with its own lease object and pool).
    ``stale_s > 0`` invalidates by marking the value stale for that long (waiters may take
    it) instead of deleting it. The hot key is ``media_id``'s like count (default: the
    most-liked post, ``hot_media_id``). Returns one result row (a dict, JSON-ready).
    """
    if lease not in KINDS:
        raise ValueError(f"lease={lease!r}: choose one of {', '.join(KINDS)}")
    if mode not in ("threads", "processes"):
        raise ValueError(f"mode={mode!r}: choose threads or processes")
    prefix = prefix or f"herd{uuid.uuid4().hex[:8]}"
    media_id = media_id or hot_media_id(dsn)
    key = cache_key(prefix, "likes", media_id)
    options = {"allow_stale": stale_s > 0, **(lease_options or {})}
    if mode == "threads":
        per_round = _run_threads(dsn, cache_servers, clients, lease, rounds, refill_ms,
                                 stale_s, pool_size, media_id, key, options)
    else:
        per_round = _run_processes(dsn, cache_servers, clients, lease, rounds, refill_ms,
                                   stale_s, pool_size, media_id, key, options, processes)
    latencies = [ms for r in per_round for ms in r["latencies_ms"]]
    queries = [r["queries"] for r in per_round]
    return {
        "lease": lease, "clients": clients, "mode": mode, "rounds": rounds, "media_id": media_id,
        "processes": processes if mode == "processes" else 1, "refill_ms": refill_ms,
        "stale_s": stale_s,
        "queries_per_expiry": sum(queries) / len(queries),
        "queries": queries,
        "client_loads": [r["loads"] for r in per_round],
        "peak_queries_per_s": max(r["queries"] / r["seconds"] for r in per_round),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "errors": sum(r["errors"] for r in per_round),
        "error_samples": sorted({e for r in per_round for e in r["error_samples"]})[:3],
        "waits": sum(r["waits"] for r in per_round),
        "stale_served": sum(r["stale_served"] for r in per_round),
    }


def _warm_up(lease: Any, db: Database, media_id: int, key: str, n: int) -> None:
    """One unmeasured round of hits, so every client thread has its memcached connection."""
    gate = threading.Event()
    threads, _, _ = _clients(lease, db, media_id, key, n, 0, 60, gate)
    gate.set()
    for t in threads:
        t.join(timeout=60)


def _round_row(queries: int, seconds: float, latencies: list[float], errors: list[str],
               stats: dict[str, int]) -> dict[str, Any]:
    return {"queries": queries, "seconds": max(seconds, 1e-3), "latencies_ms": latencies,
            "errors": len(errors), "error_samples": errors[:3], "loads": stats["loads"],
            "waits": stats["waits"], "stale_served": stats["stale_served"]}


def _run_threads(dsn: str, servers: Sequence[tuple[str, int]], clients: int, kind: str,
                 rounds: int, refill_ms: int, stale_s: int, pool_size: int, media_id: int,
                 key: str, options: dict) -> list[dict[str, Any]]:
    lease = make_lease(kind, servers, **options)
    out = []
    with Database(dsn, size=min(pool_size, clients)) as db:
        db.warm()
        lease.read(key, lambda: db.query_one(REFILL_SQL, (media_id, 0))[0], 60)
        _warm_up(lease, db, media_id, key, clients)
        for _ in range(rounds):
            before_stats = lease.stats.as_dict()
            start = threading.Barrier(clients + 1)
            threads, latencies, errors = _clients(lease, db, media_id, key, clients, refill_ms,
                                                  60, start)
            before = refill_calls(dsn)
            lease.invalidate(key, stale_s=stale_s)
            t0 = time.perf_counter()
            start.wait()
            for t in threads:
                t.join(timeout=60)
            seconds = time.perf_counter() - t0
            stats = {k: v - before_stats[k] for k, v in lease.stats.as_dict().items()}
            out.append(_round_row(refill_calls(dsn) - before, seconds, latencies, errors, stats))
    lease.close()
    return out


def _process_worker(dsn: str, servers: list, kind: str, options: dict, media_id: int, key: str,
                    n: int, rounds: int, refill_ms: int, pool_size: int, ready: Any, go: list,
                    results: Any) -> None:
    """One worker process: ``n`` client threads per round, its own lease object and pool."""
    lease = make_lease(kind, [tuple(s) for s in servers], **options)
    with Database(dsn, size=max(1, min(pool_size, n))) as db:
        db.warm()
        _warm_up(lease, db, media_id, key, n)
        for r in range(rounds):
            before_stats = lease.stats.as_dict()
            gate = threading.Event()
            threads, latencies, errors = _clients(lease, db, media_id, key, n, refill_ms, 60,
                                                  gate)
            ready.put(r)
            go[r].wait()
            gate.set()
            for t in threads:
                t.join(timeout=60)
            stats = {k: v - before_stats[k] for k, v in lease.stats.as_dict().items()}
            results.put((latencies, errors, stats))
    lease.close()


def _run_processes(dsn: str, servers: Sequence[tuple[str, int]], clients: int, kind: str,
                   rounds: int, refill_ms: int, stale_s: int, pool_size: int, media_id: int,
                   key: str, options: dict, processes: int) -> list[dict[str, Any]]:
    # spawn, not fork: the parent may be a Jupyter kernel with threads of its own.
    ctx = mp.get_context("spawn")
    processes = max(1, min(processes, clients))
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    ready, results = ctx.Queue(), ctx.Queue()
    go = [ctx.Event() for _ in range(rounds)]
    lease = make_lease(kind, servers, **options)
    with Database(dsn, size=1) as db:
        lease.read(key, lambda: db.query_one(REFILL_SQL, (media_id, 0))[0], 60)
    workers = [ctx.Process(target=_process_worker, daemon=True,
                           args=(dsn, [list(s) for s in servers], kind, options, media_id, key,
                                 share, rounds, refill_ms, pool_size // processes + 1, ready,
                                 go, results))
               for share in shares]
    for w in workers:
        w.start()
    out = []
    try:
        for r in range(rounds):
            for _ in workers:
                ready.get(timeout=120)
            before = refill_calls(dsn)
            lease.invalidate(key, stale_s=stale_s)
            t0 = time.perf_counter()
            go[r].set()
            latencies: list[float] = []
            errors: list[str] = []
            stats = {"loads": 0, "waits": 0, "stale_served": 0}
            for _ in workers:
                lat, errs, st = results.get(timeout=120)
                latencies += lat
                errors += errs
                for k in stats:
                    stats[k] += st[k]
            seconds = time.perf_counter() - t0
            out.append(_round_row(refill_calls(dsn) - before, seconds, latencies, errors, stats))
    except queue.Empty:
        raise TimeoutError("herd worker processes did not report within 120 s; "
                           "run with fewer --clients or mode=threads") from None
    finally:
        for w in workers:
            w.join(timeout=30)
            if w.is_alive():
                w.kill()
        lease.close()
    return out


def sweep(dsn: str, cache_servers: Sequence[tuple[str, int]], *,
          clients: Sequence[int] = (1, 16, 64, 256), leases: Sequence[str] = KINDS,
          **kw: Any) -> list[dict[str, Any]]:
    """``run_herd`` for every (lease, clients) pair: the rows of the herd table."""
    return [run_herd(dsn, cache_servers, clients=n, lease=kind, **kw)
            for kind in leases for n in clients]


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Queries per expiry, lease kind by client count, as aligned text."""
    counts = sorted({r["clients"] for r in rows})
    kinds = list(dict.fromkeys(r["lease"] for r in rows))
    lines = [f"{'lease':<12}" + "".join(f"{n:>9}" for n in counts)]
    for kind in kinds:
        cells = {r["clients"]: r["queries_per_expiry"] for r in rows if r["lease"] == kind}
        lines.append(f"{kind:<12}" + "".join(
            f"{cells[n]:>9.1f}" if n in cells else f"{'':>9}" for n in counts))
    return "\n".join(lines)


# ------------------------------------------------------------------------------- report
#: What `labkit report --quick` runs: a few client counts, no protection against two leases.
QUICK_ARGS = ("--clients", "1,16,64", "--lease", "none,tokens,meta", "--rounds", "2")


def headline(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The lab's figures: a one-line summary, then queries per expiry per lease kind."""
    top = max(r["clients"] for r in rows)
    at_top = [r for r in rows if r["clients"] == top]
    out = [f"at {top} clients, DB queries per expiry (peak q/s): " + ", ".join(
        f"{r['lease']} {r['queries_per_expiry']:.1f} ({r['peak_queries_per_s']:.0f})"
        for r in at_top)]
    for r in at_top:
        out.append(f"{r['lease']}: {r['queries_per_expiry']:.1f} per expiry "
                   f"({r['peak_queries_per_s']:.0f} q/s peak), client p99 {r['p99_ms']} ms, "
                   f"{r['errors']} errors")
    return out


def plot(rows: Sequence[dict[str, Any]], ax: Any = None) -> Any:
    """Queries per expiry against concurrent clients, one line per lease kind."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.8))
    for i, kind in enumerate(dict.fromkeys(r["lease"] for r in rows)):
        sel = sorted((r for r in rows if r["lease"] == kind), key=lambda r: r["clients"])
        # kinds that coincide (every lease at 1.0) stay visible: shrinking markers, dashes
        ax.plot([r["clients"] for r in sel], [r["queries_per_expiry"] for r in sel],
                marker="osD^"[i % 4], ms=9 - 2 * (i % 4), ls="-" if i == 0 else "--", label=kind)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="concurrent clients at the expiry", ylabel="DB queries per expiry",
           title="Thundering herd: refills per expiry (pg_stat_statements)")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


plot_result = plot


# ---------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``labkit experiment herd`` (shared by ``main`` and ``labkit.cli``)."""
    p.add_argument("--clients", default="64",
                   help="concurrent clients, or a comma-separated list (e.g. 1,16,64,256)")
    p.add_argument("--lease", default="none",
                   help=f"one of {', '.join(KINDS)}, a comma-separated list, or 'all'")
    p.add_argument("--rounds", type=int, default=3, help="expiries per configuration")
    p.add_argument("--mode", choices=("threads", "processes"), default="threads")
    p.add_argument("--processes", type=int, default=4, help="worker processes (mode processes)")
    p.add_argument("--refill-ms", type=int, default=20, help="cost of the refill query")
    p.add_argument("--stale-s", type=int, default=0, help="mark stale for this long instead "
                                                          "of deleting (waiters may take it)")
    p.add_argument("--out", type=Path, help="write the result rows here as JSON")


def _clients_and_leases(args: argparse.Namespace) -> tuple[list[int], list[str]]:
    clients = [int(c) for c in str(args.clients).split(",") if c.strip()]
    leases = list(KINDS) if args.lease == "all" else [s.strip() for s in args.lease.split(",")]
    return clients, leases


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with ``args`` (checked before any server starts), or None."""
    try:
        clients, leases = _clients_and_leases(args)
    except ValueError:
        return f"--clients {args.clients}: numbers separated by commas, e.g. 1,16,64"
    if not clients or any(not 1 <= c <= 256 for c in clients):
        return "--clients: choose 1 to 256 (PostgreSQL's max_connections is 300)"
    unknown = [k for k in leases if k not in KINDS]
    if unknown:
        return f"--lease {','.join(unknown)}: choose from {', '.join(KINDS)} or 'all'"
    return None


def run_cli(args: argparse.Namespace, lab: Any) -> int:
    """Run the experiment described by ``args`` on ``lab``; print the table."""
    started_s = time.time()
    clients, leases = _clients_and_leases(args)
    dsn = prepare(lab.leader)
    rows = sweep(dsn, lab.cache_servers, clients=clients, leases=leases, rounds=args.rounds,
                 mode=args.mode, processes=args.processes, refill_ms=args.refill_ms,
                 stale_s=args.stale_s)
    print("database queries per expiry (from pg_stat_statements)")
    print(table(rows))
    for r in rows:
        print(f"  {r['lease']:<11} clients={r['clients']:<4} p50={r['p50_ms']} ms "
              f"p99={r['p99_ms']} ms errors={r['errors']} peak={r['peak_queries_per_s']:.0f} q/s")
    save_results(args, lab, "herd", rows, started_s=started_s)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m labkit.experiments.herd ...``: the same as ``labkit experiment herd``."""
    from labkit.config import LabConfig
    from labkit.lab import Lab
    p = argparse.ArgumentParser(prog="labkit experiment herd", description=__doc__.split("\n")[0])
    p.add_argument("--lab-dir", type=Path)
    add_arguments(p)
    args = p.parse_args(argv)
    problem = check_args(args)
    if problem:
        p.error(problem)
    return run_cli(args, Lab.up(LabConfig.load(lab_dir=args.lab_dir)))


if __name__ == "__main__":
    import sys
    sys.exit(main())
