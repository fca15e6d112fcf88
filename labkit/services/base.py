"""What every native server module has in common.

A subclass says how to prepare its directory, which processes to launch, and how to tell
that it is ready over its real protocol; this class does the rest (start, stop, context
manager, state for reattaching). The shape follows pytest-postgresql/mirakuru executors.
"""

from __future__ import annotations

import signal
import time
import warnings
from pathlib import Path
from typing import Any, Callable, ClassVar

from labkit import _state
from labkit._labdir import find_lab, record
from labkit._proc import Proc, ServiceError, check_reachable, log_tail, own, spawn, wait_ready


class StopSignal:
    """True once SIGTERM or SIGINT arrived: the main loop of a helper process checks it.

    Installed by creating it (in the helper's main thread), so that ``stop()`` ends the loop
    cleanly (its last batch done, its connections closed) instead of killing it mid-step.
    """

    def __init__(self) -> None:
        self.received = False
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.received = True

    def __bool__(self) -> bool:
        return self.received


class NativeService:
    """One server (or a server and its helper processes) started from installed binaries."""

    kind: ClassVar[str] = "service"

    def __init__(self, workdir: Path, *, host: str = "127.0.0.1", user: str | None = None,
                 timeout_s: float = 120.0) -> None:
        self.workdir = Path(workdir)
        self.host = host
        self.user = user
        self.timeout_s = timeout_s
        self.procs: list[Proc] = []
        self.startup_s: float | None = None
        #: How its processes start: ``spawn`` on the host when None; a provider's launcher with
        #: the same call otherwise (the docker provider's app containers, for the backend).
        self.launcher: Callable[..., Proc] | None = None

    # -- what a subclass provides -------------------------------------------------------
    @property
    def name(self) -> str:
        return self.kind

    @property
    def address(self) -> str:
        """Where clients reach it: ``host:port`` (a service without one ``port`` says its own)."""
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.kind}.log"

    def _prepare(self) -> None:
        """Create the data directory and config files (idempotent: reuse what is there)."""

    def _launch(self) -> None:
        """Spawn the process(es) and append them to ``self.procs``."""
        raise NotImplementedError

    def spawn_process(self, name: str, cmd: list[str], *, log_path: Path | None = None,
                      env: dict[str, str] | None = None) -> Proc:
        """Start one of its processes in its directory (``self.launcher``, else ``spawn``)."""
        return (self.launcher or spawn)(name, cmd, cwd=self.workdir,
                                        log_path=log_path or self.log_path, user=self.user,
                                        env=env)

    def ready(self) -> bool:
        """The one readiness check: a real round trip over the server's own protocol."""
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def _state(self) -> dict[str, Any]:
        return {}

    def _restore(self, state: dict[str, Any]) -> None:
        pass

    # -- shared behaviour -----------------------------------------------------------------
    def start(self) -> "NativeService":
        """Start the server and return once it answers over its protocol."""
        if self.procs and self.running():
            return self
        self.stop()  # leftovers of an earlier, half-dead start
        t0 = time.monotonic()
        record(self.workdir)  # inside a lab directory: the lab made it, `down --purge` deletes it
        self.workdir.mkdir(parents=True, exist_ok=True)
        check_reachable(self.workdir, self.user)
        own(self.workdir, self.user)
        self._prepare()
        own(self.workdir, self.user)
        self._launch()
        try:
            wait_ready(self.name, self.ready, timeout_s=self.timeout_s, procs=self.procs,
                       log_path=self.log_path)
        except ServiceError:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Stop the server's processes (last started first); nothing is left listening."""
        for p in reversed(self.procs):
            p.stop(self.stop_signal(p))
        self.procs = []

    def stop_signal(self, proc: Proc) -> int:
        return signal.SIGTERM

    def running(self) -> bool:
        return bool(self.procs) and all(p.alive() for p in self.procs)

    def health(self) -> dict[str, Any]:
        """Name, address, whether it answers, and its version (for `labkit status`)."""
        return health_row(self, self.running)

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "workdir": str(self.workdir), "host": self.host,
                "user": self.user, "procs": [p.to_dict() for p in self.procs], **self._state()}

    def restore(self, state: dict[str, Any]) -> "NativeService":
        """Reattach to processes recorded by ``to_state`` (possibly in another process)."""
        self.procs = [Proc.from_dict(p) for p in state.get("procs", [])]
        self._restore(state)
        return self

    def log_tail(self, lines: int = 15) -> str:
        return log_tail(self.log_path, lines)

    def __enter__(self) -> "NativeService":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        status = "running" if self.running() else "stopped"
        return f"<{type(self).__name__} {self.name} {self.address} {status}>"


class HelperService(NativeService):
    """A process notebooks start beside the servers (web server, Celery workers, ...).

    While it runs it is recorded in its lab's state file (kind, name, pids, address, and how
    to check it without its Python object: ``probe``), so ``labkit status`` lists it from any
    process; ``stop`` removes the record. Outside a lab directory nothing is recorded.
    """

    def probe(self) -> dict[str, Any]:
        """How `labkit status` checks it beyond its processes being alive (JSON; no secrets).

        ``{"http": url}`` (answers 200), ``{"postgres_application": name}`` (connected to the
        lab's leader), ``{"amqp_consumers": queue, "count": n}`` (consuming from the lab's
        broker); ``{}`` when live processes are all there is to check.
        """
        return {}

    def start(self) -> "HelperService":
        super().start()
        self.record_running()
        return self

    def record_running(self) -> None:
        """Record (again) what runs now: after one of its processes was replaced by hand."""
        self._record(lambda lab_dir, key: _state.record_helper(lab_dir, key, {
            "kind": self.kind, "name": self.name, "address": self.address,
            "workdir": str(self.workdir), "procs": [p.to_dict() for p in self.procs],
            "probe": self.probe()}))

    def stop(self) -> None:
        had = bool(self.procs)
        super().stop()
        if had:
            self._record(_state.forget_helper)

    def _record(self, change: Any) -> None:
        found = find_lab(self.workdir)
        if found is None:
            return
        lab_dir = found[0]
        try:
            change(lab_dir, str(self.workdir.resolve().relative_to(lab_dir)))
        except ServiceError as e:  # a damaged state file: `labkit status` says so itself
            warnings.warn(f"{self.name} could not be recorded in the lab's state file: {e}")


def health_row(server: Any, alive: Any) -> dict[str, Any]:
    """``server``'s status row: it answers when ``alive()`` and its readiness check pass."""
    try:
        ok = bool(alive() and server.ready())
        version = server.version() if ok else "-"
    except Exception as e:  # a health report never raises
        ok, version = False, f"error: {e}"
    return {"name": server.name, "ok": ok, "address": server.address, "version": version}


class ServiceGroup:
    """Several servers that start and stop as one service (a leader and its followers, a ring).

    A subclass lists its members and says how to start and stop them together; the group
    answers the same questions as a single server: running, ready, health, processes.
    """

    kind: ClassVar[str] = "group"

    def members(self) -> list[NativeService]:
        raise NotImplementedError

    def start(self) -> Any:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return self.kind

    @property
    def procs(self) -> list[Proc]:
        return [p for m in self.members() for p in m.procs]

    def running(self) -> bool:
        return bool(self.members()) and all(m.running() for m in self.members())

    def ready(self) -> bool:
        return all(m.ready() for m in self.members())

    def health(self) -> list[dict[str, Any]]:
        """One row per member (for `labkit status`)."""
        return [m.health() for m in self.members()]

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
