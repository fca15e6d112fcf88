"""CeleryWorkers: N ``celery worker`` processes for one queue, started and stopped by labkit.

Introduced in notebooks/08_async_tasks.ipynb.

Each worker is a process of its own (``--pool=solo``: it runs one task at a time, so killing
the process kills exactly the task in hand), spawned like the lab's servers (own session, cwd
under the lab directory) so that ``labkit down`` sweeps them too. They run as the current user:
the interpreter may live where the unprivileged server account cannot reach. The app's
settings reach the worker in a JSON file (mode 0600: it holds the broker password), whose path
is the worker's one argument.

>>> workers = CeleryWorkers(lab.config.lab_dir / "celery-notify", broker_url=lab.broker_url,
...                         dsn=lab.leader.dsn("app"), queue="notify", workers=2)  # doctest: +SKIP
>>> with workers:                                                                   # doctest: +SKIP
...     workers.app.tasks["notify_like"].delay(liker_id=1, media_id=2, owner_id=3)
...     workers.queue_depth()
0
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from labkit._proc import BackgroundLoop, ServiceError, wait_ready
from labkit.backend.tasks import declare_queues, make_app, queue_depth
from labkit.services.base import HelperService


class CeleryWorkers(HelperService):
    """``workers`` Celery worker processes consuming ``queue``; ready when each answers a ping.

    ``feeds`` (a ``FeedConfig.to_dict()``, notebook 09) gives them the fan-out tasks and
    Cassandra activity rows; it travels in the same 0600 settings file as the broker password.
    ``demo_acks_early=True`` runs the deliberately broken at-most-once variant
    (``tasks.make_app``), for demonstration.

    >>> w = CeleryWorkers(Path("/tmp/lab/celery"), broker_url=url, dsn=dsn)  # doctest: +SKIP
    >>> w.start().queue_depth()                                             # doctest: +SKIP
    0
    """

    kind = "celery"

    def __init__(self, workdir: Path, *, broker_url: str, dsn: str, queue: str = "notifications",
                 workers: int = 1, max_retries: int = 5, backoff_s: float = 0.5,
                 send_ms: float = 0.0, prefetch: int = 4, idempotent_push: bool = True,
                 feeds: dict[str, Any] | None = None, demo_acks_early: bool = False,
                 python: str = sys.executable,
                 host: str = "127.0.0.1", timeout_s: float = 60.0) -> None:
        super().__init__(workdir, host=host, user=None, timeout_s=timeout_s)
        if workers < 1:
            raise ValueError(f"workers={workers}: start at least one worker")
        self.settings = dict(broker_url=broker_url, dsn=dsn, queue=queue,
                             max_retries=max_retries, backoff_s=backoff_s, send_ms=send_ms,
                             prefetch=prefetch, idempotent_push=idempotent_push, feeds=feeds,
                             demo_acks_early=demo_acks_early)
        self.queue, self.workers, self.python = queue, workers, python
        self.app = make_app(**self.settings)

    @property
    def name(self) -> str:
        return f"celery-{self.queue}"

    @property
    def address(self) -> str:
        return f"queue {self.queue}"

    @property
    def nodenames(self) -> list[str]:
        return [f"{self.queue}-{i}@labkit" for i in range(len(self.procs) or self.workers)]

    @property
    def config_path(self) -> Path:
        return self.workdir / "worker.json"

    def _prepare(self) -> None:
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.settings, f)
        declare_queues(self.app)

    def _launch(self) -> None:
        for i in range(self.workers):
            self.procs.append(self._spawn(i))

    def _spawn(self, i: int):
        return self.spawn_process(f"celery-{self.queue}-{i}",
                                  [self.python, "-m", "labkit.backend.workers",
                                   str(self.config_path), f"--hostname={self.queue}-{i}@labkit"],
                                  log_path=self.workdir / f"worker-{i}.log")

    def ready(self) -> bool:
        """Every worker answers a ping sent through the broker."""
        wanted = set(self.nodenames)
        replies = self.app.control.ping(destination=sorted(wanted), timeout=1.0,
                                        limit=len(wanted))
        return wanted <= {name for reply in replies for name in reply}

    def probe(self) -> dict[str, Any]:
        return {"amqp_consumers": self.queue, "count": len(self.procs)}

    def version(self) -> str:
        import celery
        return f"celery {celery.__version__}"

    def kill(self, index: int = 0, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` (SIGKILL: no goodbye, no ack) to worker ``index``; return its pid."""
        proc = self.procs[index]
        os.kill(proc.pid, sig)
        return proc.pid

    def respawn(self, index: int) -> int:
        """Start worker ``index`` again (after ``kill``); its new pid, once it answers a ping.

        Introduced in notebooks/12_backend_under_faults.ipynb (the nemesis kills and revives).
        """
        if self.procs[index].alive():
            raise ServiceError(f"worker {index} of {self.name} still runs (pid "
                               f"{self.procs[index].pid}); kill it first")
        self.procs[index] = self._spawn(index)
        node = self.nodenames[index]
        wait_ready(node, lambda: bool(self.app.control.ping(destination=[node], timeout=1.0)),
                   timeout_s=self.timeout_s, procs=[self.procs[index]],
                   log_path=self.workdir / f"worker-{index}.log")
        self.record_running()
        return self.procs[index].pid

    def alive(self) -> list[bool]:
        return [p.alive() for p in self.procs]

    def queue_depth(self, queue: str | None = None) -> int:
        """Messages waiting in the task queue (or ``queue``), not counting those in hand."""
        return queue_depth(self.app, queue)

    def dead_letters(self) -> int:
        """Messages the workers rejected into ``<queue>.dead``."""
        return queue_depth(self.app, f"{self.queue}.dead")

    def delete_queues(self) -> None:
        """Delete the task queue and its dead-letter queue from the broker (after ``stop``)."""
        with self.app.connection_for_write() as conn:
            conn.default_channel.queue_delete(self.queue)
            conn.default_channel.queue_delete(f"{self.queue}.dead")

    def _state(self) -> dict[str, Any]:
        return {"queue": self.queue, "workers": self.workers}


class DepthSampler(BackgroundLoop):
    """Samples a queue's depth every ``interval_s`` in a background thread (a context manager).

    >>> with DepthSampler(workers.app, interval_s=0.1) as depth:   # doctest: +SKIP
    ...     enqueue_likes(workers.app, range(1, 10_001), media_id=1, owner_id=2)
    >>> depth.samples[:2]                                          # doctest: +SKIP
    [(0.0, 0), (0.1, 312)]
    """

    def __init__(self, app: Any, queue: str | None = None, interval_s: float = 0.1) -> None:
        super().__init__()
        self.app, self.queue, self.interval_s = app, queue or app.conf.labkit_queue, interval_s
        self.samples: list[tuple[float, int]] = []

    def _loop(self) -> None:
        t0 = time.monotonic()
        with self.app.connection_for_write() as conn:
            channel = conn.default_channel
            while not self._stop.is_set():
                depth = channel.queue_declare(self.queue, passive=True).message_count
                self.samples.append((time.monotonic() - t0, depth))
                self._stop.wait(self.interval_s)

    def wait_empty(self, timeout_s: float = 60.0) -> float:
        """Block until a sample shows an empty queue; return the time of that sample (s)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.samples and self.samples[-1][1] == 0:
                return self.samples[-1][0]
            time.sleep(self.interval_s)
        raise TimeoutError(f"queue {self.queue} not empty after {timeout_s} s")


def main(argv: list[str] | None = None) -> None:
    """Entry point of one worker process: ``python -m labkit.backend.workers CONFIG [args]``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit("usage: python -m labkit.backend.workers CONFIG.json [celery args]")
    settings = json.loads(Path(argv[0]).read_text())
    app = make_app(**settings)
    pool = ["--pool=solo"]
    if settings.get("demo_acks_early"):
        # The solo pool runs a task inside the consumer's event loop, and Celery sends an
        # early ack through that loop (call_soon): it would leave only once the task returned,
        # never early. One thread beside the loop lets it go out as the task starts (as with
        # prefork), which is what the at-most-once demonstration needs.
        pool = ["--pool=threads", "--concurrency=1"]
    app.worker_main(["worker", *pool, "--loglevel=INFO", "-Q", settings["queue"],
                     "--without-gossip", "--without-mingle", "--without-heartbeat", *argv[1:]])


if __name__ == "__main__":
    main()
