"""Time to CQL-ready and peak RSS per node for Cassandra's `single` and `ring` topologies.

Targets on a 2-core machine: single <= 30 s, ring <= 60 s, <= 1.2 GiB RSS per node.
Jars are resolved before the clock starts (resolution is a one-off, measured apart).

    python benchmarks/cassandra_startup.py                  # both topologies, 3 runs each
    python benchmarks/cassandra_startup.py --runs 1 --topology ring --sequential --no-quick-start

Every start is a cluster's first (it creates the lab's superuser and drops the default one),
except with --sequential, which times a restart one node after the other.

"Ready" is the service's own readiness check: every node answers
`SELECT release_version FROM system.local` (and, in a ring, lists its peers).
RSS is sampled every 0.2 s from start through a short write load (1000 rows at ONE).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from labkit._proc import service_account
from labkit.config import LabConfig
from labkit.services.cassandra import Cassandra, resolve_jars


class RssSampler(threading.Thread):
    """Peak RSS per node, sampled in the background."""

    def __init__(self, cas: Cassandra, every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.cas, self.every_s = cas, every_s
        self.peak: dict[str, int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for n in self.cas.nodes:
                key = f"{n.dc}/{n.name}"
                self.peak[key] = max(self.peak.get(key, 0), n.rss_bytes())
            time.sleep(self.every_s)


def one_run(topology: str, cache_dir: Path, heap_mb: int, parallel: bool, quick_start: bool) -> tuple[float, dict[str, int], float]:
    lab_dir = Path(tempfile.mkdtemp(prefix="labkit-bench-", dir="/tmp"))
    lab_dir.chmod(0o755)
    cas = Cassandra(lab_dir, topology, cache_dir=cache_dir, heap_mb=heap_mb, quick_start=quick_start,
                    user=service_account("labkit"))
    cas._build()  # jars resolved and nodes laid out before the clock starts
    if not parallel:
        # A first start creates the lab's superuser and needs every node at once; what runs
        # one node after the other is a restart.
        cas.start()
        cas.stop()
    sampler = RssSampler(cas)
    sampler.start()
    try:
        t0 = time.monotonic()
        if parallel:
            cas.start()
        else:
            for c in cas.clusters.values():
                c.start(parallel=False)
        ready_s = time.monotonic() - t0
        session = cas.connect()
        rf = len(cas.region(cas.regions[0]).nodes)
        session.execute(
            "CREATE KEYSPACE bench WITH replication = "
            f"{{'class': 'NetworkTopologyStrategy', 'us': {rf}}}"
        )
        session.execute("CREATE TABLE bench.feed (user_id int, media_id int, PRIMARY KEY (user_id, media_id))")
        insert = session.prepare("INSERT INTO bench.feed (user_id, media_id) VALUES (?, ?)")
        for i in range(1000):
            session.execute(insert, (i % 50, i))
        time.sleep(1)
    finally:
        sampler.done.set()
        sampler.join()
        t1 = time.monotonic()
        cas.stop()
        stop_s = time.monotonic() - t1
        shutil.rmtree(lab_dir, ignore_errors=True)
    return ready_s, sampler.peak, stop_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--topology", action="append", choices=["single", "ring"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--heap-mb", type=int, default=512)
    ap.add_argument("--sequential", action="store_true",
                    help="restart ring nodes one after the other (after a first, parallel start)")
    ap.add_argument("--no-quick-start", action="store_true", help="full C2 JIT (no -XX:TieredStopAtLevel=1)")
    ap.add_argument(
        "--cache-dir", type=Path,
        default=LabConfig.load().cache_dir, help="where the jars are (default: the lab's)",
    )
    args = ap.parse_args()

    t0 = time.monotonic()
    lib = resolve_jars(args.cache_dir)
    print(f"jars: {lib} ({len(list(lib.glob('*.jar')))} jars), resolve call {time.monotonic() - t0:.1f} s")
    for topology in args.topology or ["single", "ring"]:
        times, stops, peaks = [], [], {}
        for i in range(args.runs):
            ready_s, peak, stop_s = one_run(
                topology, args.cache_dir, args.heap_mb, not args.sequential, not args.no_quick_start
            )
            times.append(ready_s)
            stops.append(stop_s)
            for k, v in peak.items():
                peaks[k] = max(peaks.get(k, 0), v)
            print(f"  {topology} run {i + 1}: ready {ready_s:.1f} s, stop {stop_s:.1f} s, "
                  f"peak RSS {', '.join(f'{k} {v / 2**20:.0f} MiB' for k, v in sorted(peak.items()))}")
        mode = ("sequential" if args.sequential else "parallel") + (", C2" if args.no_quick_start else ", C1 only")
        print(f"{topology} ({mode}, heap {args.heap_mb} MiB): time to CQL-ready median {statistics.median(times):.1f} s "
              f"(min {min(times):.1f}, max {max(times):.1f}); stop median {statistics.median(stops):.1f} s; "
              f"peak RSS per node max {max(peaks.values()) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
