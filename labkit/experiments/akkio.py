"""Static placement vs Akkio vs full replication, on one travelling workload.

Introduced in notebooks/10_akkio_placement.ipynb.

Users sign up in ``us`` or ``eu`` (half each) with some history. A share of them travel:
after a random start their requests come from the other region, some for good, some for a
short trip that ends within the run. Requests (reads of the user's latest items, and
appends) are issued at a fixed rate by client threads in the region the user is in, through
that region's Toxiproxy links (``lab.regions``: 40 ms each way between regions). Each policy
runs on the same schedule, in a keyspace and location table of its own:

- ``static``: data stays where the user signed up;
- ``akkio``: the placement service moves a user whose requests keep coming from elsewhere;
- ``replicated``: every region holds every user (reads local, writes to all).

Measured per policy: share of requests and bytes crossing regions (bytes from Toxiproxy,
counted when the sessions close, the placement service's migration copies included),
read/write p50/p99, rows stored per region, migrations, and the lookup's own cost split by
cache hit and miss; over time, per second: cross-region share and read latency. A history
check reads every user's list at the end: every acknowledged append must be there.

    labkit experiment akkio --users 40 --duration-s 30 --rate 20
"""

from __future__ import annotations

import argparse
import queue
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labkit.backend.akkio import (AkkioClient, LocationCache, LocationDB, MigrationPolicy,
                                  PlacementService, RegionStore, cache_prefix, sign_up)
from labkit.backend.cache import connect_cache, percentile
from labkit.backend.feeds import DDL_TIMEOUT_S
from labkit.experiments.results import save as save_results

POLICIES = ("static", "akkio", "replicated")
#: A lookup's time inside the placement service (memcached, or PostgreSQL on a miss).
INSIDE = ("inside_hit_p50_ms", "inside_hit_p99_ms", "inside_miss_p50_ms", "inside_miss_p99_ms")
DEFAULT_DBNAME = "labkit_akkio"
#: The driver's schema and token metadata are not needed here; without them a new session
#: costs a few KB instead of ~110 KB of schema across the link.
LEAN = {"schema_metadata_enabled": False, "token_metadata_enabled": False}


@dataclass(frozen=True)
class Workload:
    """Who asks for whose data, from where, and when (the same for every policy)."""

    users: int = 40
    duration_s: float = 30.0
    rate: float = 20.0                 # requests per second, all regions together
    travel_share: float = 0.5          # users who travel
    for_good_share: float = 0.5        # of the travellers: those who stay abroad
    trip_s: float = 4.0                # the others' trip
    write_share: float = 0.3
    history: int = 30                  # items each user starts with
    seed: int = 10
    regions: tuple[str, ...] = ("us", "eu")

    def homes(self) -> dict[int, str]:
        return {u: self.regions[u % len(self.regions)] for u in range(1, self.users + 1)}

    def trips(self) -> dict[int, tuple[float, float]]:
        """{user: (from_s, until_s)} of every traveller."""
        rng = random.Random(self.seed)
        users = sorted(self.homes())
        travellers = rng.sample(users, round(self.travel_share * len(users)))
        out = {}
        for i, u in enumerate(travellers):
            start = rng.uniform(0.05, 0.3) * self.duration_s
            for_good = i < round(self.for_good_share * len(travellers))
            out[u] = (start, self.duration_s + 1 if for_good else start + self.trip_s)
        return out

    def schedule(self) -> list[tuple[float, int, str, str]]:
        """(at_s, user, region asking, read/append), in time order."""
        rng = random.Random(self.seed + 1)
        homes, trips = self.homes(), self.trips()
        out, t = [], 0.0
        while t < self.duration_s:
            user = rng.choice(sorted(homes))
            region = homes[user]
            start, until = trips.get(user, (-1, -1))
            if start <= t < until:
                region = next(r for r in self.regions if r != homes[user])
            out.append((t, user, region, "append" if rng.random() < self.write_share
                        else "read"))
            t += 1 / self.rate
        return out


@dataclass
class PolicyRun:
    policy: str
    records: list[Any] = field(default_factory=list)
    acked: dict[int, list[int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    cross_bytes: int = 0
    moves: list[dict[str, Any]] = field(default_factory=list)
    lost: int = 0
    started_at: float = 0.0
    inside_ms: dict[str, float] = field(default_factory=dict)  # the service's own lookup cost


def prepare(lab: Any, dbname: str = DEFAULT_DBNAME) -> str:
    """The experiment's database on the leader (its location table is emptied per run)."""
    return lab.postgres.create_database(dbname, replace=True)


def run_policy(lab: Any, dbname: str, policy: str, workload: Workload, *,
               clients_per_region: int = 4,
               migration: MigrationPolicy = MigrationPolicy(threshold=4, ratio=2,
                                                           min_stay_s=3),
               window_s: float = 8.0, keep_keyspace: bool = False) -> PolicyRun:
    """One policy on ``workload``: set up fresh data, replay the schedule, check the history.

    ``keep_keyspace=True`` empties the policy's table (TRUNCATE) instead of dropping and
    recreating its keyspace: the same fresh start, seconds cheaper where a keyspace is there
    already (schema changes are slow on loaded cores; notebook 10's sliders rerun it).
    """
    net = lab.regions
    keyspace = f"akkio_{policy}"
    run = PolicyRun(policy)
    bytes_before = net.settled_bytes_by_link()
    sessions = {c: {r: net.connect(c, r, **LEAN) for r in net.regions} for c in net.regions}
    stores = {c: {r: RegionStore(r, s, keyspace) for r, s in row.items()}
              for c, row in sessions.items()}
    for r, store in stores[r0 := net.regions[0]].items():
        if not keep_keyspace:
            store.session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=DDL_TIMEOUT_S)
        store.create()                                    # kept if there
        if keep_keyspace:
            store.session.execute(f"TRUNCATE {keyspace}.access_state", timeout=DDL_TIMEOUT_S)
    for c in net.regions:
        if c != r0:
            for store in stores[c].values():
                store._prepare()
    db = LocationDB(lab.leader.dsn(dbname))
    db.conn.execute("TRUNCATE akkio_location")
    homes = workload.homes()
    # An earlier run of this policy cached where its users ended up: not where they start now.
    cache = LocationCache(connect_cache(lab.cache_servers), cache_prefix(keyspace))
    for user in homes:
        cache.invalidate(user)
    cache.cache.close()
    for user, home in homes.items():
        sign_up(db, stores[home], user, home, replicated=policy == "replicated")
        history = list(range(-workload.history, 0))
        for r in (net.regions if policy == "replicated" else [home]):
            stores[home][r].preload(user, history)
    svc = None
    if policy != "replicated":
        svc = PlacementService.for_lab(lab, dbname=dbname, keyspace=keyspace,
                                       policy=migration if policy == "akkio" else None,
                                       window_s=window_s).start()
    try:
        _replay(run, workload, stores, svc, policy, clients_per_region)
        if svc is not None:
            stats = svc.client().stats()
            run.moves = stats["moves"]
            run.inside_ms = {k: v for k, v in stats.items() if k.startswith("inside_")}
        _check_history(run, db, stores[r0], policy, net.regions)
        run.rows = {r: stores[r0][r].rows() for r in net.regions}
    finally:
        if svc is not None:
            svc.stop()   # its sessions close: the migration copies are counted
        for row in sessions.values():
            for s in row.values():
                s.cluster.shutdown()
        after = net.settled_bytes_by_link()
        run.cross_bytes = sum(after[k] - bytes_before[k] for k in after if k[0] != k[1])
        db.conn.close()
    return run


def _replay(run: PolicyRun, workload: Workload, stores: dict[str, dict[str, RegionStore]],
            svc: Any, policy: str, clients_per_region: int) -> None:
    queues = {r: queue.Queue() for r in stores}
    lock = threading.Lock()

    def worker(region: str) -> None:
        client = AkkioClient(region, stores[region], svc.client() if svc else None,
                             policy="replicated" if policy == "replicated" else "akkio")
        while True:
            item = queues[region].get()
            if item is None:
                break
            user, op, media_id = item
            try:
                if op == "read":
                    client.read(user)
                else:
                    client.append(user, media_id)
                    with lock:
                        run.acked.setdefault(user, []).append(media_id)
            except Exception as e:  # recorded; the run goes on
                with lock:
                    run.errors.append(f"{op} user {user} from {region}: {e}")
        with lock:
            run.records += client.records

    threads = [threading.Thread(target=worker, args=(r,)) for r in stores
               for _ in range(clients_per_region)]
    for t in threads:
        t.start()
    run.started_at = time.time()
    t0 = time.monotonic()
    for i, (at_s, user, region, op) in enumerate(workload.schedule()):
        delay = at_s - (time.monotonic() - t0)
        if delay > 0:
            time.sleep(delay)
        queues[region].put((user, op, i))
    for r in stores:
        for _ in range(clients_per_region):
            queues[r].put(None)
    for t in threads:
        t.join()


def _check_history(run: PolicyRun, db: LocationDB, stores: dict[str, RegionStore],
                   policy: str, regions: list[str]) -> None:
    """Every acknowledged append is in the user's list, where the location says it lives."""
    for user, media_ids in run.acked.items():
        loc = db.get(user)
        places = regions if policy == "replicated" else [loc.region]
        for r in places:
            found = set(stores[r].read(user, loc.version, limit=100_000))
            run.lost += len(set(media_ids) - found)


def summarize(run: PolicyRun) -> dict[str, Any]:
    """One row of figures for a policy run."""
    recs = run.records
    reads = [r.latency_ms for r in recs if r.op == "read"]
    writes = [r.latency_ms for r in recs if r.op == "append"]
    hits = [r.lookup_ms for r in recs if r.cache == "hit"]
    misses = [r.lookup_ms for r in recs if r.cache == "miss"]
    crossed = sum(r.crossed > 0 for r in recs)  # requests that needed another region
    return {
        "policy": run.policy, "requests": len(recs), "errors": len(run.errors),
        "cross_region_requests": crossed,
        "cross_share": crossed / max(1, len(recs)),
        "cross_mb": run.cross_bytes / 1e6,
        "read_p50_ms": percentile(reads, 50), "read_p99_ms": percentile(reads, 99),
        "write_p50_ms": percentile(writes, 50), "write_p99_ms": percentile(writes, 99),
        **{f"rows_{r}": n for r, n in run.rows.items()},
        "rows_total": sum(run.rows.values()),
        "migrations": len(run.moves),
        "lookup_hit_p50_ms": percentile(hits, 50), "lookup_hit_p99_ms": percentile(hits, 99),
        "lookup_miss_p50_ms": percentile(misses, 50),
        "lookup_miss_p99_ms": percentile(misses, 99),
        "cache_hit_ratio": len(hits) / max(1, len(hits) + len(misses)),
        **{k: run.inside_ms.get(k, 0.0) for k in INSIDE},
        "stale_redirects": sum(r.stale for r in recs),
        "lost_writes": run.lost,
    }


def timeline(run: PolicyRun, bucket_s: float = 2.0) -> list[dict[str, Any]]:
    """Per time bucket: requests, share crossing regions, read p50."""
    out: dict[int, list[Any]] = {}
    for r in run.records:
        out.setdefault(int((r.at - run.started_at) // bucket_s), []).append(r)
    rows = []
    for b in sorted(out):
        recs = out[b]
        reads = [r.latency_ms for r in recs if r.op == "read"]
        rows.append({"t_s": b * bucket_s, "requests": len(recs),
                     "cross_share": sum(r.crossed > 0 for r in recs) / len(recs),
                     "read_p50_ms": percentile(reads, 50)})
    return rows


def run_experiment(lab: Any, workload: Workload = Workload(),
                   policies: tuple[str, ...] = POLICIES, **kw: Any) -> dict[str, Any]:
    """Every policy on the same workload; summaries, timelines and the migrations."""
    dbname = prepare(lab)
    out: dict[str, Any] = {"workload": asdict(workload), "policies": {}}
    for policy in policies:
        run = run_policy(lab, dbname, policy, workload, **kw)
        out["policies"][policy] = {"summary": summarize(run), "timeline": timeline(run),
                                   "moves": run.moves, "errors": run.errors[:10]}
    return out


def table(result: dict[str, Any]) -> str:
    cols = [("policy", "{}"), ("cross_share", "{:.0%}"), ("cross_mb", "{:.2f}"),
            ("read_p50_ms", "{:.1f}"), ("read_p99_ms", "{:.1f}"), ("write_p50_ms", "{:.1f}"),
            ("write_p99_ms", "{:.1f}"), ("rows_total", "{}"), ("migrations", "{}"),
            ("lookup_hit_p99_ms", "{:.2f}"), ("lost_writes", "{}")]
    lines = ["  ".join(f"{c:>14}" for c, _ in cols)]
    for p in result["policies"].values():
        s = p["summary"]
        lines.append("  ".join(f"{f.format(s[c]):>14}" for c, f in cols))
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``labkit experiment akkio``."""
    p.add_argument("--users", type=int, default=40)
    p.add_argument("--duration-s", type=float, default=30.0, help="replay time per policy")
    p.add_argument("--rate", type=float, default=20.0, help="requests per second")
    p.add_argument("--travel-share", type=float, default=0.5)
    p.add_argument("--policy", default="all", help=f"one of {', '.join(POLICIES)}, or all")
    p.add_argument("--out", type=Path, help="write the results here as JSON")
    p.set_defaults(cassandra="regions")  # the lab it needs: two regions, Toxiproxy between


def _policies(args: argparse.Namespace) -> tuple[str, ...]:
    return POLICIES if args.policy == "all" else tuple(p.strip() for p in args.policy.split(","))


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with ``args`` (checked before any server starts), or None."""
    bad = [p for p in _policies(args) if p not in POLICIES]
    if bad:
        return f"--policy {','.join(bad)}: choose from {', '.join(POLICIES)} or all"
    if args.users < 1 or args.duration_s <= 0 or args.rate <= 0:
        return "--users, --duration-s and --rate must be positive"
    if not 0 <= args.travel_share <= 1:
        return "--travel-share: a share of the users, from 0 to 1"
    return None


def run_cli(args: argparse.Namespace, lab: Any) -> int:
    started_s = time.time()
    policies = _policies(args)
    w = Workload(users=args.users, duration_s=args.duration_s, rate=args.rate,
                 travel_share=args.travel_share)
    result = run_experiment(lab, w, policies)
    print(table(result))
    save_results(args, lab, "akkio", result, started_s=started_s)
    return 0


# ------------------------------------------------------------------------------- report
#: What `labkit report --quick` runs: fewer users, 12 s per policy (at 8 s too few trips end
#: in a migration: Akkio's cut did not show, -2% in a run at load 30).
QUICK_ARGS = ("--users", "20", "--duration-s", "12", "--rate", "20")


def headline(result: dict[str, Any]) -> list[str]:
    """Akkio's cut against static first, then cross-region share and latency per policy."""
    pol = {p: v["summary"] for p, v in result["policies"].items()}
    out = [f"{p}: {s['cross_share']:.0%} of requests cross regions ({s['cross_mb']:.2f} MB), "
           f"read p50/p99 {s['read_p50_ms']:.1f}/{s['read_p99_ms']:.1f} ms, "
           f"{s['rows_total']} rows stored, {s['lost_writes']} lost writes"
           for p, s in pol.items()]
    if "static" in pol and "akkio" in pol and pol["static"]["cross_share"]:
        st, ak = pol["static"], pol["akkio"]
        cut = 1 - ak["cross_share"] / st["cross_share"]
        out.insert(0, f"Akkio cuts cross-region requests by {cut:.0%} against static placement; "
                      f"read p50/p99 {ak['read_p50_ms']:.0f}/{ak['read_p99_ms']:.0f} ms vs "
                      f"{st['read_p50_ms']:.0f}/{st['read_p99_ms']:.0f} ms")
    return out


def plot(result: dict[str, Any], ax: Any = None) -> Any:
    """Cross-region share and read p99 per policy, side by side."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    pol = {p: v["summary"] for p, v in result["policies"].items()}
    xs = range(len(pol))
    share = ax.bar([x - 0.2 for x in xs], [s["cross_share"] * 100 for s in pol.values()], 0.4,
                   label="requests crossing regions (%)")
    ax2 = ax.twinx()
    p99 = ax2.bar([x + 0.2 for x in xs], [s["read_p99_ms"] for s in pol.values()], 0.4,
                  color="C1", label="read p99 (ms)")
    ax.set_xticks(list(xs), list(pol))
    ax.set_ylabel("% of requests crossing regions")
    ax2.set_ylabel("read p99 (ms)")
    ax.set_title("Placement policies on one travelling workload")
    ax.legend(handles=[share, p99], loc="upper center", fontsize=8)
    return ax


plot_result = plot
