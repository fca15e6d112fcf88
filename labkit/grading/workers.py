"""Celery workers that run a student's task function, started from the student's kernel.

A test of exercise 08 asks the kernel for workers (``sub.call("labkit.grading.workers:start",
"notify")``): each is a process forked from the kernel (so it has the notebook's functions)
that runs a Celery worker (``--pool=solo``: one task at a time, so killing the process kills
exactly the task in hand) on the workspace's own RabbitMQ vhost, queue ``<prefix>.tasks``.
The task ``lk.run`` calls the named function with a connection of the worker's own and the
message's keyword arguments, acknowledged late (``acks_late``: a worker killed mid-task has
its message redelivered). Around the call it marks ``<task id>:start`` and ``<task id>:done`` (or ``:failed``)
through the grader's recorded load (``lk_grader.loads``), and then holds ``hold_s`` before
returning, the window in which the grader kills it.

The grader publishes the messages itself and kills the workers from outside the sandbox (every
process the kernel started): nothing here decides whether a worker was killed.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

TASK = "lk.run"
_children: list[int] = []


def queue_name(prefix: str) -> str:
    return f"{prefix}.tasks"


def make_app(broker_url: str, prefix: str) -> Any:
    """The Celery app both sides use: one durable queue, late acks, one message at a time."""
    from celery import Celery
    from kombu import Exchange, Queue
    queue = queue_name(prefix)
    app = Celery(f"lk-{prefix}", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json", accept_content=["json"], task_ignore_result=True,
        result_backend=None, task_acks_late=True, task_reject_on_worker_lost=True,
        task_queues=[Queue(queue, Exchange(queue, type="direct", durable=True),
                           routing_key=queue, durable=True)],
        task_default_queue=queue, task_default_exchange=queue, task_default_routing_key=queue,
        task_default_delivery_mode="persistent", worker_prefetch_multiplier=1,
        broker_transport_options={"confirm_publish": True},
        broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
        worker_send_task_events=False)
    return app


def _worker_main(fn_name: str, index: int) -> None:
    """In the forked child: a Celery worker whose task calls ``__main__.<fn_name>``."""
    from labkit.grading import student
    ws = student._current["workspace"]
    app = make_app(ws.broker_url, ws.prefix)
    state: dict[str, Any] = {}

    def conn() -> Any:
        c = state.get("conn")
        if c is None or c.closed or c.broken:
            c = state["conn"] = ws.connect()
        return c

    @app.task(name=TASK, bind=True, acks_late=True, reject_on_worker_lost=True, shared=False)
    def run(self: Any, fn: str, kwargs: dict, hold_s: float = 0.0) -> None:
        conn().execute("SELECT lk_grader.load(%s)", (f"{self.request.id}:start",))
        try:
            getattr(sys.modules["__main__"], fn)(conn(), **kwargs)
        except BaseException:  # a failed run is marked, so a test need not wait it out
            conn().execute("SELECT lk_grader.load(%s)", (f"{self.request.id}:failed",))
            raise
        conn().execute("SELECT lk_grader.load(%s)", (f"{self.request.id}:done",))
        time.sleep(hold_s)

    app.worker_main(["worker", "--pool=solo", "--loglevel=WARNING", "-Q", queue_name(ws.prefix),
                     "--without-gossip", "--without-mingle", "--without-heartbeat",
                     f"--hostname=w{index}-{os.getpid()}@lk"])


def start(fn_name: str, n: int = 1) -> list[int]:
    """Fork ``n`` workers running ``fn_name`` for each task; their pids (this kernel's view)."""
    main = sys.modules["__main__"]
    if not callable(getattr(main, fn_name, None)):
        raise NameError(f"your notebook defines no function {fn_name}(); run its cell")
    pids = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:  # the worker: its own output, never the kernel's (that is a zmq socket)
            try:
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                sys.stdout = sys.stderr = open(os.devnull, "w")
                _worker_main(fn_name, i)
            finally:
                os._exit(0)
        pids.append(pid)
        _children.append(pid)
    return pids


def kill_local() -> int:
    """SIGKILL the workers this kernel started (the student's own check: no sandbox there)."""
    n = 0
    while _children:
        pid = _children.pop()
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            n += 1
        except (ProcessLookupError, ChildProcessError):
            pass
    return n
