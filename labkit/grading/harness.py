"""What a test sees of a submission: its functions, called and observed, and its servers.

A test is a function of one argument, ``sub`` (a ``Submission``). It never touches the
student's objects: it asks for calls (``sub.call("like_count", sub.ref("conn"), ...)``),
gets back the values they returned (or what they raised), and reads the effects on the
submission's servers itself (``sub.db``, ``sub.follower_db``, ``sub.cache``, and
``sub.cassandra`` for an assignment that uses Cassandra, ``sub.region("eu")`` for one that
uses the regional clusters). It may
inject faults into those servers (``sub.faults``) and run an action at a set moment during
a call (``sub.at``). It passes when it returns; an ``AssertionError`` is its verdict.

The same test runs in two places:

- ``LocalSubmission``: in the student's own kernel, for ``check("q1")`` (visible tests only;
  the student may do anything there, it is their own self-check);
- ``GradedSubmission`` (``labkit.grading.grader``): in the grader's process, where every call
  goes to the submission's sandboxed kernel as a message, comes back serialised
  (``labkit.grading.wire``), and is judged here. ``sub.db`` and ``sub.cache`` are then the
  grader's own connections (the lab's admin credentials, the private memcached's socket).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator


class Raised(Exception):
    """The student's function raised: ``type`` is the exception's class name."""

    def __init__(self, type_: str, message: str) -> None:
        super().__init__(f"{type_}: {message}" if message else type_)
        self.type, self.message = type_, message


class NoAnswer(Exception):
    """The kernel gave no usable answer: it ran past the time limit, died, or said nothing."""


@dataclass
class Outcome:
    """One call as observed: what it returned or raised, and how long it took (kernel clock)."""

    value: Any = None
    raised: str | None = None
    message: str = ""
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.raised is None

    def get(self) -> Any:
        """The returned value; ``Raised`` when the call raised."""
        if self.raised is not None:
            raise Raised(self.raised, self.message)
        return self.value


class Marker:
    """A reference, sent in a call's arguments, to something that exists only in the kernel."""

    def __init__(self, **spec: Any) -> None:
        self.spec = spec

    def __wire__(self) -> dict[str, Any]:
        return self.spec

    def __repr__(self) -> str:
        return f"Marker({self.spec})"


# The grader's probes in a submission's database: a load function whose every call is
# recorded where only the grader may write (a SECURITY DEFINER function owned by the admin).
PROBES_SQL = """
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE SCHEMA IF NOT EXISTS lk_grader;
CREATE TABLE IF NOT EXISTS lk_grader.loads (id bigserial PRIMARY KEY, token text NOT NULL,
                                            at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE IF NOT EXISTS lk_grader.data (token text PRIMARY KEY, value text NOT NULL);
CREATE OR REPLACE FUNCTION lk_grader.load(t text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  INSERT INTO lk_grader.loads (token) VALUES (t);
  RETURN (SELECT value FROM lk_grader.data WHERE token = t);
END $$;
REVOKE ALL ON ALL TABLES IN SCHEMA lk_grader FROM PUBLIC;
REVOKE ALL ON FUNCTION lk_grader.load(text) FROM PUBLIC;
GRANT USAGE ON SCHEMA lk_grader TO PUBLIC;
GRANT EXECUTE ON FUNCTION lk_grader.load(text) TO PUBLIC;
"""


class Submission:
    """The interface of both kinds; subclasses say how calls travel and what the servers are."""

    prefix: str
    db: Any            # psycopg connection to the submission's database on the leader
    follower_db: Any   # ... and on the follower
    cache: Any         # pymemcache client on the submission's memcached
    faults: "Faults"
    graded: bool = False
    keyspace: str = ""          # the submission's Cassandra keyspace ("" when it has none)
    replication_factor: int = 0  # ... and its replication factor
    regions_keyspace: str = ""   # its keyspace in each regional cluster ("" when none)

    # -------------------------------------------------------------------------- calls
    @staticmethod
    def spec(fn: str, *args: Any, after_s: float = 0.0, **kwargs: Any) -> dict[str, Any]:
        """One call for ``call_many``: function name, arguments, start ``after_s`` later."""
        return {"fn": fn, "args": list(args), "kwargs": kwargs, "after_s": after_s}

    def call(self, fn: str, *args: Any, timeout_s: float | None = None, **kwargs: Any) -> Any:
        """Call the submission's ``fn``; return what it returned (``Raised`` if it raised)."""
        return self.outcome(fn, *args, timeout_s=timeout_s, **kwargs).get()

    def outcome(self, fn: str, *args: Any, timeout_s: float | None = None,
                **kwargs: Any) -> Outcome:
        """Call ``fn``; return the ``Outcome`` (value or exception) without raising."""
        return self.call_many([self.spec(fn, *args, **kwargs)], timeout_s=timeout_s)[0]

    def call_many(self, specs: list[dict[str, Any]], *, mode: str = "threads",
                  timeout_s: float | None = None) -> list[Outcome]:
        """Run several calls at once in the kernel: in threads, or each in a forked process.

        ``mode="processes"`` forks one process per call: what the calls share is then only
        what lives in the servers (a lock in the student's Python does not coordinate them).
        """
        from labkit.grading import wire
        if mode not in ("threads", "processes"):
            raise ValueError(f"mode={mode!r}: threads or processes")
        # Arguments go encoded, call by call: the kernel decodes each where it runs it (a
        # fresh connection made in a forked process belongs to that process).
        calls = [{"fn": str(s["fn"]), "args": wire.encode(list(s["args"])),
                  "kwargs": wire.encode(dict(s["kwargs"])), "after_s": float(s["after_s"])}
                 for s in specs]
        raw = self._run({"calls": calls, "mode": mode}, timeout_s)
        if not isinstance(raw, list) or len(raw) != len(specs):
            raise NoAnswer(f"the kernel answered {len(raw) if isinstance(raw, list) else 'no'} "
                           f"results for {len(specs)} calls")
        out = []
        for r in raw:
            if not isinstance(r, dict):
                r = {"raised": "NoAnswer", "message": "a malformed result"}
            elapsed = r.get("elapsed_s", 0.0)
            out.append(Outcome(value=wire.decode(r.get("value")), raised=_str_or_none(r.get("raised")),
                               message=str(r.get("message", ""))[:2000],
                               elapsed_s=float(elapsed) if isinstance(elapsed, (int, float))
                               else 0.0))
        return out

    def _run(self, payload: dict[str, Any], timeout_s: float | None) -> Any:
        """Send ``payload`` (JSON-able) to the kernel; return its JSON answer (a list)."""
        raise NotImplementedError

    # -------------------------------------------------------------- what calls refer to
    @staticmethod
    def ref(name: str) -> Marker:
        """The kernel's global ``name`` (``conn``, ``cache``: what the student's setup made)."""
        return Marker(ref=name)

    @staticmethod
    def new(kind: str) -> Marker:
        """A fresh object made in the kernel per call: ``conn``, ``follower_conn``, ``cache``."""
        if kind not in ("conn", "follower_conn", "cache"):
            raise ValueError(f"new({kind!r}): conn, follower_conn or cache")
        return Marker(new=kind)

    def loader(self, token: str, *, sleep_s: float = 0.0, fail: bool = False) -> Marker:
        """A ``load()`` callable for the kernel: reads ``token``'s value from the database.

        Each call is recorded in the submission's database where only the grader may write
        (``lk_grader.loads``); ``loads(token)`` counts them. The value is read first, then
        the load sleeps ``sleep_s`` (a slow query), then raises if ``fail``, else returns the
        value as bytes. A write made during the sleep is not in what it returns.
        """
        return Marker(loader=token, sleep_s=sleep_s, fail=fail)

    def reader(self, key: str, token: str, *, sleep_s: float = 0.0, ttl_s: int = 60) -> Marker:
        """A ``read()`` callable for the kernel: plain cache-aside on ``key`` (a cache client
        of its own), refilled on a miss by ``loader(token, sleep_s=sleep_s)``."""
        return Marker(reader=key, token=token, sleep_s=sleep_s, ttl_s=ttl_s)

    def install_probes(self) -> None:
        """Create ``lk_grader`` (the recorded load) in the submission's database."""
        self.db.execute(PROBES_SQL)

    def set_value(self, token: str, value: str) -> None:
        """What ``loader(token)`` returns from now on (a write to the database)."""
        self.db.execute("INSERT INTO lk_grader.data (token, value) VALUES (%s, %s) "
                        "ON CONFLICT (token) DO UPDATE SET value = excluded.value",
                        (token, value))

    def loads(self, token: str) -> int:
        """How many times ``loader(token)`` ran, counted by the database."""
        return self.db.execute("SELECT count(*) FROM lk_grader.loads WHERE token = %s",
                               (token,)).fetchone()[0]

    @staticmethod
    def token() -> str:
        return secrets.token_hex(6)

    def connect(self) -> Any:
        """A new connection to the submission's database on the leader (the test's own)."""
        raise NotImplementedError

    def cpu_s(self) -> float:
        """CPU seconds the submission's processes have used so far.

        Graded, this is the sandbox's cgroup counter: the kernel cannot make it smaller.
        """
        raise NotImplementedError

    def code_cells(self) -> list[str] | None:
        """The source of the submission's code cells as submitted (None in the student's own
        kernel, where the notebook file is not known)."""
        return None

    # ---------------------------------------------------------------------- Cassandra
    @property
    def cassandra(self) -> Any:
        """A driver session on the submission's keyspace, made on first use.

        Graded, it logs in as the lab's superuser (the grader's own credentials), not as the
        submission's role: what it reads is what the ring holds.
        """
        session = getattr(self, "_cassandra", None)
        if session is None:
            if not self.keyspace:
                raise RuntimeError("this assignment has no Cassandra keyspace: add \"cassandra\" "
                                   "to its metadata labkit.uses and call workspace(..., "
                                   "cassandra=True)")
            session = self._cassandra = self._connect_cassandra()
        return session

    def _connect_cassandra(self) -> Any:
        raise NotImplementedError

    def region(self, name: str) -> Any:
        """A driver session on the submission's keyspace in regional cluster ``name``.

        Graded, it logs in as the lab's superuser and connects to the cluster directly (no
        link, no delay): the test observes and acts at once, whatever the distance the
        submission pays. Make the sessions a test uses before starting its threads.
        """
        sessions = self.__dict__.setdefault("_regions", {})
        if name not in sessions:
            if not self.regions_keyspace:
                raise RuntimeError("this assignment has no keyspace in the regions: add "
                                   "\"regions\" to its metadata labkit.uses and call "
                                   "workspace(..., regions=True)")
            sessions[name] = self._connect_region(name)
        return sessions[name]

    def _connect_region(self, name: str) -> Any:
        raise NotImplementedError

    def _close_cassandra(self) -> None:
        session = getattr(self, "_cassandra", None)
        if session is not None:
            with contextlib.suppress(Exception):
                session.cluster.shutdown()
            self._cassandra = None
        for session in self.__dict__.pop("_regions", {}).values():
            with contextlib.suppress(Exception):
                session.cluster.shutdown()

    # -------------------------------------------------------------------- task queues
    def broker_url(self) -> str:
        """Where the test publishes: the submission's own vhost (graded: the lab's user)."""
        raise NotImplementedError

    def _tasks_app(self) -> Any:
        app = getattr(self, "_app", None)
        if app is None:
            from labkit.grading.workers import make_app
            app = self._app = make_app(self.broker_url(), self.prefix)
        return app

    def publish(self, fn: str, hold_s: float = 0.0, **kwargs: Any) -> str:
        """Queue a task that calls the submission's ``fn(conn, **kwargs)`` in a worker; its id.

        The worker holds the task ``hold_s`` after ``fn`` returned, before acknowledging it.
        """
        from labkit.grading.workers import TASK
        return self._tasks_app().send_task(
            TASK, kwargs={"fn": fn, "kwargs": kwargs, "hold_s": hold_s}).id

    def consumers(self) -> int:
        """Workers consuming the submission's task queue now (RabbitMQ's count)."""
        from labkit.grading.workers import queue_name
        with self._tasks_app().connection_for_write() as conn:
            try:
                return conn.default_channel.queue_declare(queue_name(self.prefix),
                                                          passive=True).consumer_count
            except Exception:  # no queue yet: nobody consumes it
                return 0

    def purge_tasks(self) -> int:
        """Drop every task waiting in the submission's queue (a test's clean start)."""
        from labkit.grading.workers import queue_name
        with self._tasks_app().connection_for_write() as conn:
            try:
                return conn.default_channel.queue_purge(queue_name(self.prefix)) or 0
            except Exception:
                return 0

    @staticmethod
    def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> None:
        """Poll ``predicate`` every 50 ms; AssertionError(``what``) after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(what)
            time.sleep(0.05)

    # -------------------------------------------------------------------------- timing
    @contextlib.contextmanager
    def at(self, after_s: float, action: Callable[[], Any]) -> Iterator[None]:
        """Run ``action`` (here, in the test's process) ``after_s`` after entering the block.

        The block waits for it at the end; an exception in ``action`` fails the test.
        """
        errors: list[BaseException] = []

        def run() -> None:
            time.sleep(after_s)
            try:
                action()
            except BaseException as e:  # reported when the block ends
                errors.append(e)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        try:
            yield
        finally:
            t.join()
        if errors:
            raise errors[0]

    def close(self) -> None:
        pass


class Faults:
    """Faults a test may inject into the submission's own servers."""

    @contextlib.contextmanager
    def follower_delay(self, delay_ms: int) -> Iterator[None]:
        """The follower applies each commit ``delay_ms`` late (WAL received at once, replayed
        later) for the duration of the block."""
        raise NotImplementedError
        yield  # pragma: no cover

    def kill_workers(self) -> int:
        """SIGKILL every worker process the submission started; return how many died."""
        raise NotImplementedError


def _str_or_none(x: Any) -> str | None:
    return None if x is None else str(x)[:200]


# ----------------------------------------------------------------------- in the kernel

class LocalFaults(Faults):
    """Faults on the student's own lab (``check`` in their own kernel)."""

    def __init__(self, lab_getter: Callable[[], Any]) -> None:
        self._lab = lab_getter

    @contextlib.contextmanager
    def follower_delay(self, delay_ms: int) -> Iterator[None]:
        follower = self._lab().follower
        follower.set_delay(delay_ms, settle=True)
        try:
            yield
        finally:
            follower.set_delay(0)

    def kill_workers(self) -> int:
        from labkit.grading import student
        return student._kill_local_workers()


class LocalSubmission(Submission):
    """The student's own kernel: calls go straight to ``__main__``'s functions."""

    graded = False

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.prefix = ws.prefix
        self.db = ws.connect()
        self.follower_db = ws.connect(follower=True)
        self.cache = ws.cache()
        self.faults = LocalFaults(_student_lab)
        if ws.cassandra is not None:
            self.keyspace = ws.cassandra.keyspace
            self.replication_factor = ws.cassandra.replication_factor
        if ws.regions is not None:
            self.regions_keyspace = ws.regions.keyspace
        try:
            self.install_probes()
        except Exception:  # probes are only for tests that load; a student's DB may refuse
            pass

    def connect(self) -> Any:
        return self.ws.connect()

    def broker_url(self) -> str:
        if not self.ws.broker_url:
            raise RuntimeError("this workspace has no RabbitMQ: workspace(..., rabbitmq=True)")
        return self.ws.broker_url

    def cpu_s(self) -> float:
        return time.process_time()

    def _connect_cassandra(self) -> Any:
        return self.ws.cassandra.connect()

    def _connect_region(self, name: str) -> Any:
        return self.ws.regions.connect(name)  # the student's own lab: through the links

    def _run(self, payload: dict[str, Any], timeout_s: float | None) -> Any:
        import json

        from labkit.grading import student
        # Through JSON text, as in grading: the test sees the same types in both places.
        return json.loads(json.dumps(student._run_calls(json.loads(json.dumps(payload)))))

    def close(self) -> None:
        self._close_cassandra()
        with contextlib.suppress(Exception):
            self.faults.kill_workers()
        for c in (self.db, self.follower_db):
            with contextlib.suppress(Exception):
                c.close()
        with contextlib.suppress(Exception):
            self.cache.close()


def _student_lab() -> Any:
    import labkit as lk
    return lk.up()
