"""Like notifications as Celery tasks on the lab's RabbitMQ.

Introduced in notebooks/08_async_tasks.ipynb.

The like request enqueues ``notify_like`` instead of calling the push service inline; a Celery
worker sends the push and records the notification in ``notifications`` (one row per like,
what tests and benchmarks count). The push service is simulated in the database: ``push``
appends every request it receives to ``pushes``, and delivers it to the owner's phone
(``delivered``) unless it is a repeat of an idempotency key it has delivered already.

What is guaranteed is **at-least-once delivery with an idempotent effect**, not "exactly once":

- nothing lost when a worker dies: ``acks_late`` (the message is acknowledged after the task
  ran); when a worker's connection drops (SIGKILL), RabbitMQ hands the messages it had not
  acknowledged to another worker (``reject_on_worker_lost`` does the same for a prefork child).
  A task that was killed after its push but before its ack therefore runs, and pushes, again:
  the push service receives that request twice (``pushes``);
- the owner is notified once anyway: the push carries the like's ``dedup_key`` as its
  idempotency key and the push service delivers a key once (``idempotent_push=False`` turns
  that off, to show the duplicate). Recording "sent" *before* pushing would not do: a crash
  between the two would lose the notification (at-most-once);
- nothing lost when the broker restarts: durable queues, persistent messages, publisher
  confirms;
- a flaky notifier is retried with exponential backoff (``backoff_s * 2**retry``), at most
  ``max_retries`` times; then the failure is recorded in ``task_failures``;
- a malformed payload fails once, is recorded in ``task_failures`` and is never retried; a
  message that is not a task at all (or not even JSON) is recorded too and rejected into the
  dead-letter queue ``<queue>.dead``.

**Feeds** (notebook 09): with ``feeds=FeedConfig(...).to_dict()`` the app also has the fan-out
tasks, and ``notify_like`` first writes the owner's activity row in Cassandra, keyed by the like
(its liker, post and time from ``user_likes_media``), so a redelivered task rewrites the same
row. ``fan_out_post`` lists the author's followers in PostgreSQL and queues one
``fan_out_batch`` per ``batch_size`` of them, or nothing for an author with more than
``threshold`` followers (merged at read time). ``fan_out_batch`` writes the post into each
follower's ``feed_by_user`` and then deletes their cached first pages. Both are idempotent
(the rows carry their whole key); ``fanouts`` records each plan and ``fanout_batches`` each
batch execution (a redelivered batch shows up twice there, never twice in a feed).

>>> app = make_app(lab.broker_url, lab.leader.dsn("app"), queue="notify")        # doctest: +SKIP
>>> with lab.leader.connect("app") as conn:                                      # doctest: +SKIP
...     install(conn)
>>> app.tasks["notify_like"].delay(liker_id=7, media_id=42, owner_id=3)         # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any, Callable

import psycopg
from celery import Celery, Task
from celery.worker.consumer import Consumer
from kombu import Exchange, Queue

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id         bigserial PRIMARY KEY,
    dedup_key  text NOT NULL UNIQUE,
    owner_id   bigint NOT NULL,
    liker_id   bigint NOT NULL,
    media_id   bigint NOT NULL,
    body       text NOT NULL,
    task_id    text,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- One row per execution of notify_like (a redelivered task shows up twice here, once above).
CREATE TABLE IF NOT EXISTS notify_attempts (
    id        bigserial PRIMARY KEY,
    dedup_key text NOT NULL,
    task_id   text,
    attempt   int NOT NULL,
    outcome   text NOT NULL,      -- sent | duplicate | failed
    at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS task_failures (
    id        bigserial PRIMARY KEY,
    task_id   text,
    task_name text,
    reason    text NOT NULL,
    payload   text,
    attempts  int,
    at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- Fault injection: the notifier fails this many more times for this like.
CREATE TABLE IF NOT EXISTS notifier_faults (
    dedup_key      text PRIMARY KEY,
    fail_remaining int NOT NULL
);
-- Fault injection: the worker running this like's task dies (SIGKILL) right after the push.
CREATE TABLE IF NOT EXISTS worker_crashes (
    dedup_key text PRIMARY KEY,
    remaining int NOT NULL
);
-- The simulated push service: every request it received, and whether it reached the phone.
CREATE TABLE IF NOT EXISTS pushes (
    id              bigserial PRIMARY KEY,
    owner_id        bigint NOT NULL,
    liker_id        bigint NOT NULL,
    media_id        bigint NOT NULL,
    body            text NOT NULL,
    idempotency_key text,            -- two requests with the same key are the same push
    delivered       boolean NOT NULL,
    task_id         text,
    at              timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX IF NOT EXISTS pushes_delivered_once ON pushes (idempotency_key)
    WHERE delivered;
-- Feed fan-out (notebook 09): one plan per post, one row per batch execution.
CREATE TABLE IF NOT EXISTS fanouts (
    media_id   bigint PRIMARY KEY,
    author_id  bigint NOT NULL,
    followers  int NOT NULL,
    batches    int NOT NULL,
    mode       text NOT NULL,       -- write (fanned out) | read (merged at read time)
    planned_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS fanout_batches (
    id       bigserial PRIMARY KEY,
    media_id bigint NOT NULL,
    batch    int NOT NULL,
    rows     int NOT NULL,
    task_id  text,
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""


class NotifierError(RuntimeError):
    """The push service failed (transient): the task is retried with backoff."""


class MalformedPayload(ValueError):
    """The task's arguments cannot be a like notification: recorded, never retried."""


def install(conn: psycopg.Connection) -> None:
    """Create the notification tables (idempotent), on the leader."""
    conn.execute(SCHEMA)
    if not conn.autocommit:
        conn.commit()


def dedup_key(liker_id: int, media_id: int) -> str:
    """One notification per like: a user likes a given photo at most once."""
    return f"like:{liker_id}:{media_id}"


def inject_failures(conn: psycopg.Connection, liker_id: int, media_id: int, times: int) -> None:
    """Make the notifier fail the next ``times`` attempts for this like."""
    conn.execute("INSERT INTO notifier_faults (dedup_key, fail_remaining) VALUES (%s, %s) "
                 "ON CONFLICT (dedup_key) DO UPDATE SET fail_remaining = EXCLUDED.fail_remaining",
                 (dedup_key(liker_id, media_id), times))


def inject_crash(conn: psycopg.Connection, liker_id: int, media_id: int, times: int = 1) -> None:
    """Make the worker that runs this like's task die (SIGKILL) after the push, ``times`` times.

    The kill lands between the push and the acknowledgement: RabbitMQ redelivers the task.
    """
    conn.execute("INSERT INTO worker_crashes (dedup_key, remaining) VALUES (%s, %s) "
                 "ON CONFLICT (dedup_key) DO UPDATE SET remaining = EXCLUDED.remaining",
                 (dedup_key(liker_id, media_id), times))


def push(conn: psycopg.Connection, owner_id: int, liker_id: int, media_id: int, *,
         idempotency_key: str | None = None, task_id: str | None = None,
         send_ms: float = 0.0) -> bool:
    """The simulated push service: log the request, deliver it; False when it was a repeat.

    Every call appends a row to ``pushes`` (a request is a request). It reaches the owner's
    phone (``delivered``) unless ``idempotency_key`` was delivered before: a real push
    service (APNs' ``apns-collapse-id``, FCM's message ids) dedups the same way.
    """
    if send_ms:
        time.sleep(send_ms / 1000)
    body = f"user {liker_id} liked your photo {media_id}"
    row = conn.execute(
        "INSERT INTO pushes (owner_id, liker_id, media_id, body, idempotency_key, delivered, "
        "task_id) VALUES (%s, %s, %s, %s, %s, true, %s) "
        "ON CONFLICT (idempotency_key) WHERE delivered DO NOTHING RETURNING id",
        (owner_id, liker_id, media_id, body, idempotency_key, task_id)).fetchone()
    if row is None:  # a repeat of a delivered key: received, not delivered again
        conn.execute("INSERT INTO pushes (owner_id, liker_id, media_id, body, idempotency_key, "
                     "delivered, task_id) VALUES (%s, %s, %s, %s, %s, false, %s)",
                     (owner_id, liker_id, media_id, body, idempotency_key, task_id))
    return row is not None


def validate(liker_id: Any, media_id: Any, owner_id: Any) -> tuple[int, int, int]:
    """The three ids as ints, or MalformedPayload naming what is wrong."""
    return positive_ids(liker_id=liker_id, media_id=media_id, owner_id=owner_id)


def positive_ids(**named: Any) -> tuple[int, ...]:
    """The named values, if each is a positive int; else MalformedPayload naming the bad ones."""
    bad = [k for k, v in named.items() if not isinstance(v, int) or isinstance(v, bool) or v <= 0]
    if bad:
        raise MalformedPayload(f"not positive integers: {', '.join(bad)} (payload {named!r})")
    return tuple(named.values())


def send_notification(conn: psycopg.Connection, liker_id: int, media_id: int, owner_id: int, *,
                      task_id: str | None = None, attempt: int = 1, send_ms: float = 0.0,
                      idempotent: bool = True,
                      after_push: Callable[[], None] | None = None) -> bool:
    """Push one like notification, then record it; False when it had been recorded already.

    The push goes first and the record after, so a crash between them repeats the push on
    redelivery (at least once) and never loses it. ``idempotent`` sends the like's
    ``dedup_key`` with the push, so that the repeat is not delivered twice. Failures are
    injected per like with ``inject_failures``; ``after_push`` runs between push and record.
    """
    key = dedup_key(liker_id, media_id)
    faulted = conn.execute(
        "UPDATE notifier_faults SET fail_remaining = fail_remaining - 1 "
        "WHERE dedup_key = %s AND fail_remaining > 0 RETURNING fail_remaining", (key,)).fetchone()
    if faulted:
        if send_ms:
            time.sleep(send_ms / 1000)
        conn.execute("INSERT INTO notify_attempts (dedup_key, task_id, attempt, outcome) "
                     "VALUES (%s, %s, %s, 'failed')", (key, task_id, attempt))
        raise NotifierError(f"push service unavailable for {key} (injected fault)")
    push(conn, owner_id, liker_id, media_id, idempotency_key=key if idempotent else None,
         task_id=task_id, send_ms=send_ms)
    if after_push is not None:
        after_push()
    with conn.transaction():
        inserted = conn.execute(
            "INSERT INTO notifications (dedup_key, owner_id, liker_id, media_id, body, task_id) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
            (key, owner_id, liker_id, media_id, f"user {liker_id} liked your photo {media_id}",
             task_id)).fetchone()
        conn.execute("INSERT INTO notify_attempts (dedup_key, task_id, attempt, outcome) "
                     "VALUES (%s, %s, %s, %s)",
                     (key, task_id, attempt, "sent" if inserted else "duplicate"))
    return inserted is not None


def _crash_if_injected(conn: psycopg.Connection, key: str) -> None:
    """Die here, mid-task (after the push, before the ack), if ``inject_crash`` asked for it."""
    if conn.execute("UPDATE worker_crashes SET remaining = remaining - 1 "
                    "WHERE dedup_key = %s AND remaining > 0 RETURNING 1", (key,)).fetchone():
        os.kill(os.getpid(), signal.SIGKILL)


class _DbTask(Task):
    """A task with one lazily opened autocommit connection per worker process."""

    _conn: psycopg.Connection | None = None

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.app.conf.labkit_dsn, autocommit=True,
                                         connect_timeout=5)
        return self._conn

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        """The task gave up (retries spent, or a malformed payload): record it."""
        retries = getattr(self.request, "retries", 0) or 0
        self.conn.execute(
            "INSERT INTO task_failures (task_id, task_name, reason, payload, attempts) "
            "VALUES (%s, %s, %s, %s, %s)",
            (task_id, self.name, f"{type(exc).__name__}: {exc}",
             repr({"args": args, "kwargs": kwargs})[:2000], retries + 1))


class _FeedTask(_DbTask):
    """A ``_DbTask`` that can reach the feeds: one Cassandra session and page cache per worker
    process, opened on first use and shared by the app's tasks."""

    def _feed_clients(self) -> tuple[Any, Any]:
        app = self.app
        if getattr(app, "_labkit_feed_clients", None) is None:
            from labkit.backend.feeds import FeedConfig
            config = FeedConfig.from_dict(app.conf.labkit_feeds)
            app._labkit_feed_clients = (config.feeds(config.connect()), config.cache())
        return app._labkit_feed_clients

    @property
    def feeds(self) -> Any:
        return self._feed_clients()[0]

    @property
    def feed_cache(self) -> Any:
        return self._feed_clients()[1]


def _transient_feed_errors() -> tuple[type[BaseException], ...]:
    """What a feed task retries: the database or Cassandra unreachable or too slow for now."""
    from cassandra import OperationTimedOut, Unavailable, WriteTimeout
    from cassandra.cluster import NoHostAvailable
    return (psycopg.OperationalError, Unavailable, WriteTimeout, OperationTimedOut,
            NoHostAvailable)


class DeadLetteringConsumer(Consumer):
    """Celery's consumer, but a message that is not a task is recorded and dead-lettered.

    Celery acknowledges (drops) a message it cannot decode, and rejects one that decodes but is
    no task; here both end up in ``task_failures`` and, rejected without requeue, in
    ``<queue>.dead``. It also wakes its event loop often, so a SIGTERM stops the worker at once.
    """

    def register_with_event_loop(self, hub) -> None:
        super().register_with_event_loop(hub)
        # The event loop sleeps up to 10 s in poll() when idle, and a SIGTERM only takes effect
        # once it wakes; a tick every 0.25 s makes `stop()` take a fraction of a second.
        hub.call_repeatedly(0.25, lambda: None)

    def _record(self, reason: str, body: Any) -> None:
        try:
            with psycopg.connect(self.app.conf.labkit_dsn, autocommit=True,
                                 connect_timeout=5) as conn:
                conn.execute("INSERT INTO task_failures (reason, payload, attempts) "
                             "VALUES (%s, %s, 0)", (reason, repr(body)[:2000]))
        except psycopg.Error:
            logger.exception("could not record a rejected message")

    def on_decode_error(self, message, exc) -> None:
        logger.error("rejecting an undecodable message into the dead-letter queue: %s", exc)
        self._record(f"undecodable message: {exc}", message.body)
        message.reject_log_error(logger, self.connection_errors)

    def on_unknown_message(self, body, message) -> None:
        self._record("not a Celery task", body)
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body, message, exc) -> None:
        self._record(f"unknown task: {exc}", body)
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body, message, exc) -> None:
        self._record(f"invalid task: {exc}", body)
        super().on_invalid_task(body, message, exc)


def make_app(broker_url: str, dsn: str, *, queue: str = "notifications", max_retries: int = 5,
             backoff_s: float = 0.5, send_ms: float = 0.0, prefetch: int = 4,
             idempotent_push: bool = True, feeds: dict[str, Any] | None = None,
             demo_acks_early: bool = False) -> Celery:
    """A Celery app on ``broker_url`` whose ``notify_like`` pushes and records via ``dsn``.

    Each test or notebook passes its own ``queue`` so that no two see each other's messages.
    ``send_ms`` simulates the push service's latency; ``idempotent_push=False`` pushes without
    an idempotency key (a redelivered task then notifies twice). ``feeds`` (a
    ``FeedConfig.to_dict()``) adds the fan-out tasks and the activity row of each like.

    >>> app = make_app(lab.broker_url, lab.leader.dsn("app"), queue="notify-test")  # doctest: +SKIP
    >>> app.tasks["notify_like"].delay(liker_id=1, media_id=2, owner_id=3)         # doctest: +SKIP
    """
    app = Celery(f"labkit-{queue}", broker=broker_url, set_as_current=False)
    dead = f"{queue}.dead"
    app.conf.update(
        labkit_dsn=dsn, labkit_queue=queue, labkit_send_ms=send_ms, labkit_backoff_s=backoff_s,
        labkit_idempotent_push=idempotent_push, labkit_feeds=feeds,
        task_serializer="json", accept_content=["json"], result_serializer="json",
        task_ignore_result=True, result_backend=None,
        task_acks_late=not demo_acks_early, task_reject_on_worker_lost=not demo_acks_early,
        task_queues=[Queue(queue, Exchange(queue, type="direct", durable=True), routing_key=queue,
                           durable=True,
                           # Messages the consumer rejects (not a task, unknown task) go here.
                           queue_arguments={"x-dead-letter-exchange": "",
                                            "x-dead-letter-routing-key": dead})],
        task_default_queue=queue, task_default_exchange=queue, task_default_routing_key=queue,
        task_default_delivery_mode="persistent",
        # Wait for RabbitMQ to confirm each publish: a task "sent" is a task on disk.
        broker_transport_options={"confirm_publish": True},
        broker_connection_retry_on_startup=True,
        worker_prefetch_multiplier=prefetch,
        worker_consumer="labkit.backend.tasks:DeadLetteringConsumer",
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )

    # shared=False: Celery would otherwise register this app's task in every app made later.
    @app.task(name="notify_like", bind=True, base=_FeedTask, max_retries=max_retries,
              acks_late=not demo_acks_early, reject_on_worker_lost=not demo_acks_early,
              typing=False, shared=False)
    def notify_like(self, liker_id=None, media_id=None, owner_id=None, **unexpected):
        """Notify ``owner_id`` that ``liker_id`` liked ``media_id`` (pushed at least once)."""
        if unexpected:
            raise MalformedPayload(f"unexpected field(s) {sorted(unexpected)}")
        liker_id, media_id, owner_id = validate(liker_id, media_id, owner_id)
        key = dedup_key(liker_id, media_id)
        try:
            if self.app.conf.labkit_feeds:
                record_like_activity(self.conn, self.feeds, liker_id, media_id, owner_id)
            send_notification(self.conn, liker_id, media_id, owner_id, task_id=self.request.id,
                              attempt=self.request.retries + 1,
                              send_ms=self.app.conf.labkit_send_ms,
                              idempotent=self.app.conf.labkit_idempotent_push,
                              after_push=lambda: _crash_if_injected(self.conn, key))
        except (NotifierError, *_transient_feed_errors()) as exc:
            # A lost database connection is as transient as a push-service error; the next
            # attempt reconnects (the ``conn`` property replaces a broken connection).
            _retry(self, exc)

    if feeds is not None:
        _add_feed_tasks(app, max_retries)
    return app


def _retry(task: Task, exc: BaseException) -> None:
    """Retry ``task`` after ``backoff_s * 2**retries``; re-raise once the retries are spent."""
    if task.request.retries >= task.max_retries:
        raise exc  # gives up: on_failure records it
    backoff_s = task.app.conf.labkit_backoff_s
    raise task.retry(exc=exc, countdown=backoff_s * 2 ** task.request.retries)


def record_like_activity(conn: psycopg.Connection, feeds: Any, liker_id: int, media_id: int,
                         owner_id: int) -> bool:
    """Write the owner's activity row for this like; False when the like is gone (unliked).

    The row's key is the like's (liker, post, time of the like read from PostgreSQL), not a
    fresh timeuuid: a redelivered task writes the very same row again.
    """
    from labkit.backend import likes
    liked_at = likes.liked_at(conn, liker_id, media_id)
    if liked_at is None:
        return False
    feeds.record_like(owner_id, liker_id, media_id, liked_at)
    return True


def _add_feed_tasks(app: Celery, max_retries: int) -> None:
    """Register ``fan_out_post`` and ``fan_out_batch`` on ``app`` (its ``labkit_feeds`` config)."""
    settings = app.conf.labkit_feeds

    @app.task(name="fan_out_post", bind=True, base=_FeedTask, max_retries=max_retries,
              acks_late=True, reject_on_worker_lost=True, typing=False, shared=False)
    def fan_out_post(self, media_id=None, author_id=None):
        """Plan the fan-out of a new post: one ``fan_out_batch`` per batch of followers."""
        from labkit.backend import schema
        media_id, author_id = positive_ids(media_id=media_id, author_id=author_id)
        try:
            followers = schema.followers(self.conn, author_id)
            # For demonstration only (FeedConfig.demo_skip_followers): a fan-out that
            # leaves followers out, which notebook 12's feed checker must catch.
            followers = followers[settings.get("demo_skip_followers", 0):]
            size = settings["batch_size"]
            mode = "read" if len(followers) > settings["threshold"] else "write"
            batches = [followers[i:i + size] for i in range(0, len(followers), size)]
            if mode == "write":
                # Queued before the plan is recorded: a crash in between queues them again
                # (the batches are idempotent), never loses them.
                batch_task = self.app.tasks["fan_out_batch"]
                with self.app.producer_or_acquire() as producer:
                    for i, batch in enumerate(batches):
                        batch_task.apply_async(kwargs=dict(media_id=media_id, author_id=author_id,
                                                           follower_ids=batch, batch=i),
                                               producer=producer)
            self.conn.execute(
                "INSERT INTO fanouts (media_id, author_id, followers, batches, mode) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (media_id) DO NOTHING",
                (media_id, author_id, len(followers), len(batches) if mode == "write" else 0,
                 mode))
        except _transient_feed_errors() as exc:
            _retry(self, exc)

    @app.task(name="fan_out_batch", bind=True, base=_FeedTask, max_retries=max_retries,
              acks_late=True, reject_on_worker_lost=True, typing=False, shared=False)
    def fan_out_batch(self, media_id=None, author_id=None, follower_ids=None, batch=0):
        """Write the post into these followers' feeds, then delete their cached pages."""
        media_id, author_id = positive_ids(media_id=media_id, author_id=author_id)
        if not isinstance(follower_ids, list) or not all(
                isinstance(f, int) and not isinstance(f, bool) and f > 0 for f in follower_ids):
            raise MalformedPayload(f"follower_ids must be a list of positive integers, not "
                                   f"{str(follower_ids)[:80]}")
        try:
            rows = self.feeds.deliver(media_id, author_id, follower_ids)
            # After the write, never before: a refill between a delete and the write would
            # cache the old page again (labkit.backend.feeds, FeedCache).
            if self.feed_cache is not None:
                self.feed_cache.invalidate(follower_ids)
            self.conn.execute("INSERT INTO fanout_batches (media_id, batch, rows, task_id) "
                              "VALUES (%s, %s, %s, %s)", (media_id, batch, rows, self.request.id))
        except _transient_feed_errors() as exc:
            _retry(self, exc)


def declare_queues(app: Celery) -> None:
    """Declare the task queue and its dead-letter queue on the broker (idempotent)."""
    queue = app.conf.labkit_queue
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        Queue(f"{queue}.dead", durable=True)(channel).declare()
        app.conf.task_queues[0](channel).declare()


def queue_depth(app: Celery, queue: str | None = None) -> int:
    """Messages ready in ``queue`` (default: the app's task queue), by a passive declare."""
    with app.connection_for_write() as conn:
        return conn.default_channel.queue_declare(queue or app.conf.labkit_queue,
                                                  passive=True).message_count


def enqueue_likes(app: Celery, liker_ids: Any, media_id: int, owner_id: int) -> int:
    """Queue one ``notify_like`` per liker over a single producer (fast for spikes)."""
    notify_like = app.tasks["notify_like"]
    n = 0
    with app.producer_or_acquire() as producer:
        for liker_id in liker_ids:
            notify_like.apply_async(kwargs=dict(liker_id=liker_id, media_id=media_id,
                                                owner_id=owner_id), producer=producer)
            n += 1
    return n


def fanout_progress(conn: psycopg.Connection, media_id: int) -> tuple[int, int | None]:
    """(batches done, batches planned) of a post's fan-out; planned is None before the plan."""
    plan = conn.execute("SELECT batches FROM fanouts WHERE media_id = %s", (media_id,)).fetchone()
    (done,), = conn.execute("SELECT count(DISTINCT batch) FROM fanout_batches WHERE media_id = %s",
                            (media_id,)).fetchall()
    return done, plan[0] if plan else None


def wait_for_fanout(conn: psycopg.Connection, media_id: int, timeout_s: float = 60.0,
                    poll_s: float = 0.02) -> float:
    """Wait until every batch of ``media_id``'s fan-out ran once; return the seconds waited."""
    t0 = time.monotonic()
    while True:
        done, planned = fanout_progress(conn, media_id)
        if planned is not None and done >= planned:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"fan-out of {media_id}: {done} of {planned} batches after "
                               f"{timeout_s} s; are the workers running? (worker-*.log)")
        time.sleep(poll_s)


def wait_for_notifications(conn: psycopg.Connection, count: int, timeout_s: float = 60.0) -> int:
    """Wait until ``notifications`` holds at least ``count`` rows; return how many it holds."""
    deadline = time.monotonic() + timeout_s
    while True:
        (have,) = conn.execute("SELECT count(*) FROM notifications").fetchone()
        if have >= count:
            return have
        if time.monotonic() > deadline:
            raise TimeoutError(f"{have} of {count} notifications after {timeout_s} s; are the "
                               "workers running? (see worker-*.log in their workdir)")
        time.sleep(0.05)
