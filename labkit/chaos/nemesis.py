"""The nemesis: faults injected into the lab's own servers on a schedule, each window recorded.

Introduced in notebooks/12_backend_under_faults.ipynb.

Every fault is a function of the ``Backend`` that breaks one part and returns what it broke
and how to heal it; ``Nemesis.run`` holds each fault for its window and records it as a
``history.Fault`` (start and end in seconds since the load's start). Every target is a
process this lab started (the backend's helpers, the lab's servers): nothing else is
signalled.

=====================  ==============================================================
fault                  what happens
=====================  ==============================================================
celery-kill            SIGKILL one Celery worker (tasks in hand go back to the queue),
                       started again at the window's end
cassandra-pause        SIGSTOP one Cassandra node (to its peers it hangs), SIGCONT after
follower-delay         the follower the web tier reads from replays commits late
memcached-restart      memcached stopped for the window, started empty (cold cache)
rabbitmq-restart       the broker stopped for the window, then started again
invalidation-stop      the invalidation service stopped; it resumes from its slot
gunicorn-kill          SIGKILL one gunicorn worker (its requests in hand are lost);
                       the window ends when the master has replaced it
client-cut             the web tier cut off from Memcached (its Toxiproxy link
                       ``web-to-memcached`` disabled): reads fall back to the databases;
                       the window ends when the web tier reaches Memcached again
=====================  ==============================================================

>>> nemesis = Nemesis(backend, [("celery-kill", 5, 3)])     # doctest: +SKIP
>>> history = load.record(backend.web, mix, rate_per_s=40, duration_s=15,
...                       during=nemesis.run)              # doctest: +SKIP
>>> history.faults[0].name, history.faults[0].end_s        # doctest: +SKIP
('celery-kill', 8.2)
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any, Callable

from labkit._proc import ServiceError, wait_ready
from labkit.chaos.history import Fault, History

FOLLOWER_DELAY_MS = 3000
# How long client-cut's heal waits for the web tier's first memcached read: its client
# (meta-memcache) marks a server it could not reach down for 5 s, then tries it again.
RECONNECT_TIMEOUT_S = 20.0
# (target, detail, heal); heal() returns more detail.
Injected = tuple[str, dict[str, Any], Callable[[], dict[str, Any]]]


def celery_kill(backend: Any) -> Injected:
    """SIGKILL Celery worker 0; started again at the window's end."""
    pid = backend.workers.kill(0)
    return f"celery worker 0 (pid {pid})", {"pid": pid}, lambda: {
        "new_pid": backend.workers.respawn(0)}


def cassandra_pause(backend: Any) -> Injected:
    """SIGSTOP the ring's last node; SIGCONT at the window's end."""
    node = backend.lab.cassandra.nodes[-1]
    node.pause()
    return f"cassandra {node.name}", {}, lambda: (node.resume(), {})[1]


def follower_delay(backend: Any) -> Injected:
    """The web tier's follower replays commits FOLLOWER_DELAY_MS late."""
    follower = backend.lab.follower
    follower.set_delay(FOLLOWER_DELAY_MS)
    return f"{follower.name} replay", {"delay_ms": FOLLOWER_DELAY_MS}, lambda: (
        follower.set_delay(0), {})[1]


def _restart(backend: Any, server: Any) -> Injected:
    server.stop()

    def heal() -> dict[str, Any]:
        server.start()
        backend.lab.save_state()  # new pids: other processes reattach to the new server
        return {}
    return server.name, {}, heal


def memcached_restart(backend: Any) -> Injected:
    """Memcached stopped for the window, then started empty (a cold cache)."""
    return _restart(backend, backend.lab.memcached[0])


def rabbitmq_restart(backend: Any) -> Injected:
    """RabbitMQ stopped for the window, then started again."""
    return _restart(backend, backend.lab.rabbitmq)


def invalidation_stop(backend: Any) -> Injected:
    """The invalidation service stopped; started again, it resumes from its slot."""
    backend.invalidation.stop()
    return backend.invalidation.name, {}, lambda: (backend.invalidation.start(), {})[1]


def gunicorn_kill(backend: Any) -> Injected:
    """SIGKILL one gunicorn worker; the window ends when the master replaced it."""
    web = backend.web
    before = web.worker_pids()
    pid = before[0]
    os.kill(pid, signal.SIGKILL)

    def heal() -> dict[str, Any]:
        def replaced() -> bool:
            now = web.worker_pids()
            return pid not in now and len(now) == len(before)
        wait_ready("gunicorn's replacement worker", replaced, timeout_s=60)
        return {}
    return f"gunicorn worker (pid {pid})", {"pid": pid}, heal


def _memcached_gets(backend: Any) -> int:
    # Counted by memcached itself, asked directly (not through the link). Only the web tier
    # reads the backend's keys during a run: the invalidation service and workers delete.
    return sum(m.stats()["cmd_get"] for m in backend.lab.memcached)


def client_cut(backend: Any) -> Injected:
    """The web tier cut off from Memcached by its Toxiproxy link; healed, it reads it again.

    The detail shows the cut is real: ``gets_while_cut``, the reads Memcached served during
    the window (0: the web tier could not reach it), and ``reconnect_s``, how long after the
    heal its first read arrived (the window ends then; None if none came within
    RECONNECT_TIMEOUT_S, say without load).
    """
    link = backend.cache_link
    link.cut()
    before = _memcached_gets(backend)

    def heal() -> dict[str, Any]:
        during = _memcached_gets(backend) - before
        link.heal()
        healed = _memcached_gets(backend)
        try:
            waited_s = wait_ready("the web tier's first memcached read",
                                  lambda: _memcached_gets(backend) > healed,
                                  timeout_s=RECONNECT_TIMEOUT_S)
        except ServiceError:
            waited_s = None
        return {"gets_while_cut": during,
                "reconnect_s": None if waited_s is None else round(waited_s, 2)}
    return f"web -> memcached ({link.link})", {}, heal


FAULTS: dict[str, Callable[[Any], Injected]] = {
    "celery-kill": celery_kill,
    "cassandra-pause": cassandra_pause,
    "follower-delay": follower_delay,
    "memcached-restart": memcached_restart,
    "rabbitmq-restart": rabbitmq_restart,
    "invalidation-stop": invalidation_stop,
    "gunicorn-kill": gunicorn_kill,
    "client-cut": client_cut,
}


def parse_faults(text: str) -> list[str]:
    """``"celery-kill,memcached-restart"`` (or ``all``, or ``none``) as a list of fault names."""
    if text.strip() in ("all", ""):
        return list(FAULTS)
    if text.strip() == "none":
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        raise ValueError(f"unknown fault(s) {', '.join(unknown)}: choose from "
                         f"{', '.join(FAULTS)} (or all, or none)")
    return names


def schedule(names: list[str], duration_s: float, *, warmup_s: float | None = None,
             hold_s: float = 5.0) -> list[tuple[str, float, float]]:
    """(fault, start_s, hold_s) for each name, spread evenly after a healthy warm-up.

    Each fault gets an equal slot; it is held for ``hold_s`` (at most a third of its slot),
    and the rest of the slot shows the recovery.
    """
    if not names:
        return []
    warmup_s = duration_s * 0.15 if warmup_s is None else warmup_s
    slot_s = (duration_s - warmup_s) / len(names)
    if slot_s < 3:
        raise ValueError(f"{len(names)} fault(s) in {duration_s:g} s leave {slot_s:.1f} s each; "
                         f"give at least {warmup_s + 3 * len(names):.0f} s (--duration) or "
                         "fewer faults")
    hold = min(hold_s, slot_s / 3)
    return [(name, round(warmup_s + i * slot_s, 3), round(hold, 3))
            for i, name in enumerate(names)]


class Nemesis:
    """Injects ``plan`` = [(fault, start_s, hold_s)] into ``backend``; ``run`` records each."""

    def __init__(self, backend: Any, plan: list[tuple[str, float, float]]) -> None:
        for name, _, _ in plan:
            if name not in FAULTS:
                raise ValueError(f"unknown fault {name!r}: choose from {', '.join(FAULTS)}")
        self.backend, self.plan = backend, plan
        self.errors: list[str] = []

    def run(self, history: History, t0: float) -> None:
        """Inject each fault at its time, hold it, heal it, record it (``load.record``'s hook)."""
        for name, start_s, hold_s in self.plan:
            time.sleep(max(0.0, t0 + start_s - time.monotonic()))
            began = time.monotonic() - t0
            try:
                target, detail, heal = FAULTS[name](self.backend)
                time.sleep(hold_s)
                detail.update(heal())
            except Exception as e:  # recorded, and the run goes on: a report, not a crash
                self.errors.append(f"{name}: {type(e).__name__}: {e}")
                target, detail = name, {"error": f"{type(e).__name__}: {e}"}
            history.add_fault(Fault(name, target, round(began, 3),
                                    round(time.monotonic() - t0, 3),
                                    {**detail, "hold_s": hold_s}))
