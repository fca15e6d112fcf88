"""The whole backend with one call: every part of a like's path, started on the lab's servers.

Introduced in notebooks/12_backend_under_faults.ipynb.

``Backend(lab).start()`` (or ``lab.backend.start()``, or ``labkit up --backend``) makes one
database with the data model of notebook 01 on the PostgreSQL leader (its followers replay it),
loads a small Zipf-shaped graph (``datagen.generate``: a few popular accounts, the first one
the celebrity), installs the task tables (notebook 08) and the feeds keyspace on the Cassandra
ring (notebook 09), and starts four helper processes, each recorded in the lab's state file
(``labkit status`` lists them, ``labkit down`` stops them):

- the invalidation service (notebook 04): the database's write stream -> memcached deletes;
- Celery workers (notebooks 08, 09) on the lab's RabbitMQ: like notifications with the
  owner's activity row in Cassandra, and post fan-out into followers' feeds;
- the Django web tier under gunicorn (notebook 02): likes on the leader, like counts through
  memcached with meta-protocol leases (notebook 06) refilled from a follower, the feed from
  Cassandra, and ``POST /api/posts`` (``feeds.publish``);
- Toxiproxy (``links.ClientLink``, ``web-to-memcached``): the web tier reaches Memcached
  (like counts and feed pages) through it, so the nemesis can cut exactly that client off
  (``client-cut``); the invalidation service and the workers reach Memcached directly.

Under the docker provider the web tier, the workers and the invalidation service run in
containers of the ``app`` image (``labkit.providers.app_image``: host network and pid namespace,
so their addresses, pids and faults are as natively); Toxiproxy stays on the host, as for the
servers. ``containers=False`` keeps them on the host; ``True`` on another provider is an error.

Names: database ``<name>``, cache key prefix ``<name>`` (``<name>:likes:<media_id>``), feed
page prefix ``<name>-feed``, keyspace ``<name>_feeds``, task queue ``<name>-tasks``.

>>> backend = lab.backend.start()              # doctest: +SKIP
>>> backend.web.get("/healthz")                # doctest: +SKIP
(200, b'{"ok": true}')
>>> backend.stop()                             # doctest: +SKIP
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import sql

from labkit import _state
from labkit._proc import Proc, ServiceError
from labkit.backend import datagen, feeds, likes, schema, tasks
from labkit.backend.feeds import FeedConfig
from labkit.backend.invalidation import InvalidationService
from labkit.backend.links import ClientLink
from labkit.backend.workers import CeleryWorkers


@dataclass(frozen=True)
class Dataset:
    """The accounts and media the load acts on: tokens to sign in, media by popularity."""

    tokens: dict[int, str]           # user_id -> "Token" header value
    media_ids: list[int]             # most liked first (what a Zipf draw picks most)
    celebrity_id: int                # the account with the most followers

    @property
    def user_ids(self) -> list[int]:
        return sorted(self.tokens)


class Backend:
    """Web, invalidation, workers and data of one backend on ``lab`` (see the module doc).

    ``users`` sizes the generated graph; ``web_workers`` gunicorn workers,
    ``celery_workers`` worker processes (one task at a time each). ``containers``: run those
    processes where the lab's provider runs its own (None: its choice; the module doc).
    """

    def __init__(self, lab: Any, *, name: str = "chaos", users: int = 300,
                 web_workers: int = 3, celery_workers: int = 2, seed: int = 42,
                 containers: bool | None = None) -> None:
        if not name.isidentifier() or not name.islower():
            raise ValueError(f"name={name!r}: use lower-case letters, digits and _")
        launcher = lab.provider.launcher(lab.config) if containers is not False else None
        if containers and launcher is None:
            raise ServiceError(f"containers=True: the {lab.provider.name} provider runs no "
                               "processes in containers; start the lab with provider=\"docker\" "
                               "(`labkit up --provider docker`), or leave containers unset")
        self.launcher = launcher
        self.lab, self.name, self.users, self.seed = lab, name, users, seed
        self.web_workers, self.celery_workers = web_workers, celery_workers
        self.dbname = self.prefix = name
        self.keyspace = f"{name}_feeds"
        self.queue = f"{name}-tasks"
        self.workdir = Path(lab.config.lab_dir) / "backend" / name
        self.web: Any = None
        self.workers: CeleryWorkers | None = None
        self.invalidation: InvalidationService | None = None
        self.cache_link: ClientLink | None = None
        self.data: Dataset | None = None

    # ------------------------------------------------------------------------ up / down
    def start(self) -> "Backend":
        """Fresh data and every helper process started; returns once each one answers."""
        self._check_lab()
        self._stop_recorded()
        leader = self.lab.leader
        schema.create_database(leader, self.dbname, followers=self.lab.followers)
        with leader.connect(self.dbname) as conn:
            tasks.install(conn)
            graph = datagen.generate(conn, users=self.users, media_per_user=2.0,
                                     follows_per_user=10.0, likes=self.users * 10,
                                     comments_per_media=0.0, seed=self.seed, progress=False)
            self.data = _dataset(conn, graph)
        for follower in self.lab.followers:
            follower.wait_replayed(timeout_s=60)
        session = self.lab.cassandra.connect()
        try:  # kept across runs (DDL on a busy ring is slow): old rows name users that are gone
            feeds.install(session, self.keyspace)
        finally:
            session.cluster.shutdown()
        feed_config = self.feed_config()
        self.invalidation = InvalidationService(
            self.workdir / "invalidation", dsn=leader.dsn(self.dbname), slot=self.slot,
            cache_servers=self.lab.cache_servers, prefix=self.prefix)
        self.workers = CeleryWorkers(
            self.workdir / "celery", broker_url=self.lab.broker_url, dsn=leader.dsn(self.dbname),
            queue=self.queue, workers=self.celery_workers, feeds=feed_config.to_dict())
        from labkit.web.config import WebConfig
        from labkit.web.server import WebServer
        self.cache_link = ClientLink(self.workdir / "link", "web-to-memcached",
                                     upstreams=self.lab.cache_servers, host=self.lab.config.host,
                                     binary=str(self.lab.config.toxiproxy_bin)).start()
        via_link = [list(s) for s in self.cache_link.addresses]  # the web tier's memcached
        web_config = WebConfig.from_lab(
            self.lab, self.dbname, notify=True, notify_queue=self.queue,
            feed_source="cassandra",
            cassandra_feeds={**feed_config.to_dict(), "cache_servers": via_link},
            cache={"servers": via_link, "prefix": self.prefix, "lease": "meta"})
        self.web = WebServer(self.workdir / "web", web_config, workers=self.web_workers)
        for helper in (self.invalidation, self.workers, self.web):
            helper.launcher = self.launcher
        with ThreadPoolExecutor(3) as pool:  # independent processes: start them together
            for started in [pool.submit(h.start) for h in (self.invalidation, self.workers,
                                                            self.web)]:
                started.result()
        self.warm()
        return self

    def warm(self, duration_s: float = 3.0) -> None:
        """Send reads to every gunicorn worker for a while, so none is cold under the load.

        A worker's first feed request builds its ranking model and opens its own Cassandra
        session (seconds on a busy machine): that is start-up, not what a fault costs.
        """
        from labkit.web.loadgen import run_load
        tokens, media = list(self.data.tokens.values()), self.data.media_ids[:50]

        def read(rng: Any) -> tuple:
            path = rng.choice(("/api/feed?count=10", f"/api/media/{rng.choice(media)}"))
            return "GET", path, {"Authorization": rng.choice(tokens)}
        run_load(self.web.host, self.web.port, read, clients=2 * self.web_workers,
                 duration_s=duration_s)

    def stop(self) -> None:
        """Stop the helper processes and drop the invalidation slot (the data stays).

        A slot nobody reads keeps WAL on the leader forever: it goes with its service.
        """
        for helper in (self.web, self.cache_link, self.workers, self.invalidation):
            if helper is not None:
                helper.stop()
        if self.invalidation is not None:
            self.invalidation.drop_slot()

    def __enter__(self) -> "Backend":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------------------- accessors
    @property
    def slot(self) -> str:
        return f"inval_{self.name}"

    @property
    def dsn(self) -> str:
        """The leader's database (what the checkers read)."""
        return self.lab.leader.dsn(self.dbname)

    def feed_config(self) -> FeedConfig:
        return FeedConfig.from_lab(self.lab, self.keyspace, cache_prefix=f"{self.prefix}-feed")

    def quiesce(self, timeout_s: float = 180.0, settle_s: float = 10.0) -> float:
        """Wait until the tasks are done: the seconds waited.

        What the checkers need: the system quiet, every delivery that will happen done. An
        AMQP client sees only the ready messages; a task a worker holds (running, prefetched,
        or waiting out a retry's backoff: 8 s at most with the default 5 retries) shows up as
        the rows tasks write (attempts, batches, failures). Quiet: no ready message and no new
        row for ``settle_s``. (``rabbitmqctl`` would count the unacknowledged messages, but it
        takes tens of seconds per call on a loaded machine.)
        """
        t0 = time.monotonic()
        last, since = None, t0
        while True:
            now = time.monotonic()
            try:
                seen = (self.workers.queue_depth(), self._task_rows())
            except Exception:  # the broker or the leader is coming back: not quiet yet
                seen = None
            if seen is None or seen[0] or seen != last:
                last, since = seen, now
            elif now - since >= settle_s:
                return now - t0
            if now - t0 > timeout_s:
                raise ServiceError(f"backend {self.name}: tasks of queue {self.queue} still "
                                   f"running after {timeout_s} s; look at "
                                   f"{self.workdir}/celery/*.log")
            time.sleep(0.5)

    def _task_rows(self) -> tuple[int, ...]:
        with self.lab.leader.connect(self.dbname) as conn:
            return conn.execute(
                "SELECT (SELECT count(*) FROM notify_attempts), (SELECT count(*) FROM "
                "fanout_batches), (SELECT count(*) FROM task_failures), "
                "(SELECT count(*) FROM fanouts)").fetchone()

    def _check_lab(self) -> None:
        missing = [k for k in ("postgres", "memcached", "rabbitmq", "cassandra")
                   if not getattr(self.lab, k)]
        if missing:
            raise ServiceError(f"the full backend needs {', '.join(missing)} too; start it "
                               "with `labkit up --backend` or `lk.up(cassandra='ring')`")

    def _stop_recorded(self) -> None:
        """Stop helpers an earlier ``start`` of this backend left running (from any process)."""
        lab_dir = Path(self.lab.config.lab_dir)
        for key, entry in _state.read(lab_dir).get("helpers", {}).items():
            if Path(entry.get("workdir", "/")).resolve().is_relative_to(self.workdir.resolve()):
                for p in reversed(entry.get("procs", [])):
                    Proc.from_dict(p).stop()
                _state.forget_helper(lab_dir, key)


def _dataset(conn: Any, graph: datagen.Graph) -> Dataset:
    tokens: dict[int, str] = {}
    for shard in schema.shards(conn):
        q = sql.SQL("SELECT id, token_secret FROM {}.users").format(
            sql.Identifier(schema.shard_schema(shard)))
        tokens.update((uid, f"Token {uid}.{secret}") for uid, secret in conn.execute(q))
    counts = likes.counts(conn, graph.media_ids)
    by_likes = sorted(graph.media_ids, key=lambda m: (-counts.get(m, 0), m))
    followers = schema.popular(conn, 0)  # {user_id: followers}, summed over the shards
    return Dataset(tokens, by_likes, max(followers, key=followers.__getitem__))
