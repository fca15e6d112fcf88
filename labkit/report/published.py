"""The published figures the lab compares against, each with its source and conditions.

One place for the table of DESIGN.md's "Published numbers": ``labkit report`` sets each
beside the lab's measured figure, and SYLLABUS.md's readings cite the same sources.
``experiment`` names the ``labkit experiment`` that measures it (None: only a notebook does),
``scale`` says in one sentence where the lab's scale differs from the source's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    short: str
    citation: str
    url: str


@dataclass(frozen=True)
class Published:
    mechanism: str
    figure: str
    conditions: str
    source: Source
    experiment: str | None
    notebook: str
    scale: str


MEMCACHE = Source("Scaling Memcache at Facebook (NSDI'13)",
                  "R. Nishtala et al., Scaling Memcache at Facebook, USENIX NSDI 2013, "
                  "§3.2.1 (leases) and §4.1/§5 (invalidation)",
                  "https://www.usenix.org/conference/nsdi13/technical-sessions/presentation/"
                  "nishtala")
MEMCACHED_META = Source("memcached ≥ 1.6 meta commands",
                        "memcached protocol.txt, \"Meta Commands\" (memcached 1.6)",
                        "https://github.com/memcached/memcached/wiki/MetaCommands")
PBS = Source("PBS (VLDB'12)",
             "P. Bailis, S. Venkataraman, M. J. Franklin, J. M. Hellerstein, I. Stoica, "
             "Probabilistically Bounded Staleness for Practical Partial Quorums, PVLDB 5(8), "
             "VLDB 2012",
             "https://vldb.org/pvldb/vol5/p776_peterbailis_vldb2012.pdf")
AKKIO = Source("Akkio (OSDI'18)",
               "M. Annamalai et al., Sharding the Shards: Managing Datastore Locality at Scale "
               "with Akkio, USENIX OSDI 2018",
               "https://www.usenix.org/conference/osdi18/presentation/annamalai")
IG_IDS = Source("Instagram Engineering, \"Sharding & IDs at Instagram\" (2012)",
                "Instagram Engineering, Sharding & IDs at Instagram, 2012",
                "https://instagram-engineering.com/sharding-ids-at-instagram-1cf5a71e5a5c")
IG_GC = Source("Instagram Engineering, \"Dismissing Python Garbage Collection at Instagram\" "
               "(2017)",
               "Z. Li, Dismissing Python Garbage Collection at Instagram, Instagram "
               "Engineering, 2017; gc.freeze() from CPython bpo-31558",
               "https://instagram-engineering.com/dismissing-python-garbage-collection-at-"
               "instagram-4dca40b29172")
JEPSEN = Source("Jepsen: histories, a nemesis and checkers",
                "K. Kingsbury, Jepsen analyses of distributed systems under faults (jepsen.io)",
                "https://jepsen.io")
IG_CD = Source("Instagram Engineering, \"Continuous Deployment at Instagram\" (2016)",
               "M. Gorven, Continuous Deployment at Instagram, Instagram Engineering, 2016",
               "https://instagram-engineering.com/continuous-deployment-at-instagram-"
               "1e18548f01d1")
KAYENTA = Source("Kayenta (Spinnaker)",
                 "Spinnaker documentation, Canary analysis: how canary judgment works "
                 "(Kayenta's NetflixACAJudge)",
                 "https://spinnaker.io/docs/guides/user/canary/judge/")

PUBLISHED: tuple[Published, ...] = (
    Published("leases against the thundering herd",
              "peak database query rate on herd-prone keys 17K/s without leases, 1.3K/s "
              "with them; one lease token per key per 10 s",
              "Facebook's production memcache tier, herd-prone keys",
              MEMCACHE, "herd", "06_leases",
              "Facebook measured a fleet's peak rate; the lab has one PostgreSQL and at most "
              "256 clients on 2 shared cores, so compare the ratio (queries per expiry with "
              "and without a lease), not the rate."),
    Published("leases in the protocol (meta commands)",
              "`mg ... N<ttl>` answers W (you refill) or Z (someone else does); `md ... I` "
              "marks stale, X",
              "memcached 1.6 and later",
              MEMCACHED_META, "herd", "06_leases",
              "The same server and protocol as in production; the lab's figure is how many "
              "refills the `meta` lease lets through per expiry."),
    Published("invalidation from the write stream",
              "four 9s of invalidations within 1 s in the master region",
              "Facebook's mcsqueal reading MySQL's commit log, master region",
              MEMCACHE, None, "04_invalidation",
              "One PostgreSQL and one memcached on loopback: no network, no fleet of "
              "consumers; notebook 04 measures the commit → delete delay."),
    Published("tunable consistency: t-visibility",
              "N=3, R=W=1: 99.9% of reads consistent 1.85 ms after the write on LinkedIn's "
              "SSD model (45.5 ms on disk); Yammer R=W=1 t-visibility 1,364 ms",
              "Dynamo-style quorums, latencies from LinkedIn's and Yammer's production "
              "traces, Monte Carlo (WARS model)",
              PBS, "consistency", "09_cassandra_feeds",
              "PBS simulates from production latency traces; the lab measures a real 3-node "
              "Cassandra ring on one machine (loopback, shared cores), where staleness comes "
              "from scheduling and a replica frozen on purpose."),
    Published("Akkio data placement",
              "up to 50% less cross-datacenter traffic and up to 50% lower latency; "
              "AccessState avg/p99 10/34 ms with Akkio vs 76/371 ms without",
              "Facebook's production datastores across datacenters (ViewState, AccessState)",
              AKKIO, "akkio", "10_akkio_placement",
              "Two regions are two Cassandra nodes on one machine with a Toxiproxy link of 40 "
              "ms each way, and tens of users instead of billions: the shares compare, the "
              "milliseconds follow the injected delay."),
    Published("denormalized counters and sharded IDs",
              "like count: one row read instead of COUNT(*); 64-bit IDs of 41/13/10 bits",
              "Instagram's PostgreSQL, logical shards as schemas",
              IG_IDS, None, "01_data_model",
              "A design rather than a figure; notebook 01 times COUNT(*) against the counter "
              "row up to 10^6 likes on one server."),
    Published("copy-on-write and the garbage collector",
              "shared memory per worker 140 MB → 225 MB; ~8 GB saved per host; ~10% more CPU "
              "capacity",
              "Instagram's Django fleet under uWSGI, GC disabled then gc.freeze()",
              IG_GC, None, "11_cython_and_memory",
              "A few gunicorn workers on 2 cores; notebook 11 measures private memory growth "
              "per 1,000 requests per GC setting (not yet a `labkit experiment`)."),
    Published("the whole backend under faults",
              "the backend keeps working when one part temporarily fails (a claim; no figure "
              "published): no acknowledged like lost, each notification once, every post in "
              "every feed",
              "Instagram's production backend; Jepsen's method for checking such claims",
              JEPSEN, "chaos", "12_backend_under_faults",
              "One machine, every server and the load generator on 2 shared cores, a few "
              "requests per second: the checkers' verdicts compare, the latencies do not."),
    Published("canary releases (fixed thresholds)",
              "a canary is accepted at < 0.5% 5xx and ≥ 90% 2xx; 30–50 deploys a day",
              "Instagram's production canary tier",
              IG_CD, "canary", "13_continuous_deployment",
              "The canary is one gunicorn pool behind HAProxy at ~100 requests/s on loopback; "
              "detection times depend on that rate, not on Instagram's traffic."),
    Published("canary judged against a baseline (Kayenta)",
              "per-metric Mann-Whitney with a confidence interval and tolerance; a weighted "
              "score with pass / marginal thresholds",
              "Netflix/Google's automated canary analysis in Spinnaker",
              KAYENTA, "canary", "13_continuous_deployment",
              "The same statistics on a few hundred requests per window: fewer samples, "
              "wider intervals than a production canary."),
)


def for_experiment(name: str) -> list[Published]:
    """The published figures ``labkit experiment name`` measures."""
    return [p for p in PUBLISHED if p.experiment == name]
