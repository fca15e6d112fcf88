"""The autograder: each submission in a sandbox of its own; every verdict taken here, outside it.

For every submission ``grade``:

1. makes its namespace (``labkit.grading.namespace``: a database owned by a role of its own,
   a RabbitMQ vhost, a Cassandra keyspace with a role of its own, or one in each regional
   cluster, when the assignment uses them) and starts a memcached of its own on a unix socket;
2. starts a kernel in a sandbox (``labkit.grading.sandbox``: bwrap, a cgroup, forwarders to
   exactly those servers) that sees only the namespace's credentials, and runs the student's
   code cells in their order, each with a time limit (a hung cell is interrupted, a dead or
   unresponsive kernel replaced and the finished cells replayed);
3. runs the solution's tests, visible and hidden, **in this process**: a test asks the kernel
   to call the student's functions and gets back serialised observations, reads the effects
   on the submission's servers with the grader's own credentials, may inject faults into
   them, and decides. Nothing the kernel prints or returns is taken as a verdict, and the
   tests never enter the kernel (only the arguments of the calls they make do);
4. scores each question by the weights of the tests it passed, drops the namespace, stops the
   memcached, and writes ``<submission>.json`` (for the instructor), ``<submission>.md`` (for
   the student: visible tests with their messages, hidden tests with the message written for
   them), and the class's ``gradebook.csv``.

>>> results = grade(["exercises/"], lab, Path("grades"))      # doctest: +SKIP
>>> results[0]["score"], results[0]["max_score"]               # doctest: +SKIP
(0.0, 5.0)
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import nbformat

from labkit._proc import ServiceError, service_account
from labkit.grading import namespace, student
from labkit.grading.export import feedback_markdown, report_id, write_gradebook
from labkit.grading.format import Assignment, Test, assignments, marker_of
from labkit.grading.harness import Faults, NoAnswer, Submission
from labkit.grading.kernel import GradedKernel
from labkit.grading.sandbox import Limits, Sandbox, probe
from labkit.services.memcached import Memcached

REPO = Path(__file__).resolve().parents[2]
INSIDE_CACHE = ("127.0.0.1", 11211)   # the private memcached, as the kernel reaches it
# A kernel that hangs or dies on every call would cost a time limit per test: after this many
# unanswered tests in a row the rest are failed without being run.
MAX_SILENT_TESTS = 3

__all__ = ["Limits", "grade", "grade_one", "find_submissions", "InsecureRefused"]


class InsecureRefused(ServiceError):
    """Full isolation is not available here and ``insecure`` was not asked for."""


# ------------------------------------------------------------------- shared servers

class RWLock:
    """Many readers or one writer, writers first: fault tests on a server others also use."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._waiting_writers = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


# --------------------------------------------------------------------------- one run

class Run:
    """One submission being graded: its namespace, memcached, sandboxed kernel and cells."""

    def __init__(self, nb: Any, assignment: Assignment, lab: Any, limits: Limits,
                 work_dir: Path, secure: bool, follower_lock: RWLock) -> None:
        self.nb, self.assignment, self.lab, self.limits = nb, assignment, lab, limits
        self.secure, self.follower_lock = secure, follower_lock
        self.uses = set(assignment.uses)
        self.deadline = time.monotonic() + limits.submission_timeout_s
        self.run_dir = Path(tempfile.mkdtemp(prefix="sub-", dir=work_dir))
        self.run_dir.chmod(0o711)  # the memcached account must reach its socket inside
        self.errors: list[str] = []
        self.cells: list[dict[str, Any]] = []
        self.done: list[str] = []
        self.kernel: GradedKernel | None = None
        self.sandbox: Sandbox | None = None
        self.cpu_used_s = 0.0
        self.ns = namespace.create(lab, rabbitmq="rabbitmq" in self.uses,
                                   cassandra="cassandra" in self.uses,
                                   regions="regions" in self.uses)
        self.memcached = self._start_memcached()
        self._watchdog_stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, daemon=True)
        self._watchdog.start()

    # -- servers ---------------------------------------------------------------------
    def _start_memcached(self) -> Memcached:
        mc_dir = self.run_dir / "memcached"
        user = service_account(self.lab.config.service_user)
        if self.secure:
            mc = Memcached(mc_dir, socket=mc_dir / "memcached.sock", memory_mb=16, threads=1,
                           user=user)
        else:
            mc = Memcached(mc_dir, memory_mb=16, threads=1, user=user)
        mc.start()
        return mc

    def env(self) -> dict[str, str]:
        cache = INSIDE_CACHE if self.secure else self.memcached.host_port
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp",
               "MPLBACKEND": "Agg", "MPLCONFIGDIR": "/tmp/.mpl", "IPYTHONDIR": "/tmp/.ipython",
               "JUPYTER_RUNTIME_DIR": "/tmp", "JUPYTER_CONFIG_DIR": "/tmp/.jupyter",
               "JUPYTER_DATA_DIR": "/tmp/.jupyter", "PYTHONUNBUFFERED": "1",
               "PYTHONDONTWRITEBYTECODE": "1", **self.ns.env(cache)}
        if not self.secure:
            for key in ("MPLCONFIGDIR", "IPYTHONDIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR",
                        "JUPYTER_DATA_DIR"):
                env[key] = str(self.run_dir / "home" / Path(env[key]).name)
        return env

    def new_kernel(self) -> GradedKernel:
        """A fresh sandbox and kernel (the old ones, if any, killed first)."""
        self.close_kernel()
        sandbox = Sandbox(self.run_dir / f"k{secrets.token_hex(3)}", self.limits, self.secure)
        sandbox.run_dir.mkdir()
        sandbox.run_dir.chmod(0o711)
        if self.secure:
            for name, (host, port) in self.ns.servers().items():
                sandbox.forward(name, host, port)
            sandbox.serve_socket("memcached", self.memcached.socket, *INSIDE_CACHE)
        self.sandbox = sandbox
        self.kernel = GradedKernel(sandbox, self.env(), self.limits)
        return self.kernel

    def close_kernel(self) -> None:
        if self.kernel is not None:
            with contextlib.suppress(Exception):
                self.kernel.close()
        if self.sandbox is not None:
            self.cpu_used_s += self.sandbox.cpu_s()
            with contextlib.suppress(Exception):
                self.sandbox.close()
        self.kernel, self.sandbox = None, None

    def _watch(self) -> None:
        """Kill the sandbox when the CPU budget or the wall clock is spent."""
        while not self._watchdog_stop.wait(0.25):
            sb = self.sandbox
            if sb is None:
                continue
            if self.cpu_used_s + sb.cpu_s() > self.limits.cpu_s:
                self.errors.append(f"the submission used its {self.limits.cpu_s} CPU seconds; "
                                   "its kernel was stopped")
                sb.kill()
                self.cpu_used_s = float("inf")  # no new kernel either
            elif time.monotonic() > self.deadline + 5:
                sb.kill()

    # -- cells -----------------------------------------------------------------------
    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def timeout_s(self, wanted: float | None = None) -> float:
        return max(0.5, min(wanted or self.limits.cell_timeout_s, self.left_s()))

    def run_cells(self) -> None:
        """The student's code cells, in order (tests left out), each with a time limit."""
        with self._servers_shared():
            self._ensure_kernel()
            for pos, source in student_cells(self.nb):
                if self.left_s() <= 0 or self.cpu_used_s == float("inf"):
                    self.errors.append("the submission ran out of time; later cells skipped")
                    break
                r = self.kernel.run(source, self.timeout_s())
                self.cells.append({"cell": pos, "status": r["status"], "error": r["error"][:2000]})
                if r["status"] in ("ok", "error"):
                    self.done.append(source)
                elif r["status"] == "dead":
                    why = self.sandbox.why_dead() if self.sandbox else ""
                    self.errors.append(f"cell {pos + 1}: {r['error']}{'; ' + why if why else ''}; "
                                       "the cells before it were run again in a new kernel")
                    self.restart()

    def restart(self) -> None:
        """A new kernel with the finished cells replayed (after a crash or a hang)."""
        if self.left_s() <= 0 or self.cpu_used_s == float("inf"):
            self.close_kernel()
            return
        try:
            self.new_kernel()
        except Exception as e:
            self.errors.append(f"could not start a new kernel: {type(e).__name__}: {e}")
            return
        for source in self.done:
            if self.left_s() <= 0:
                break
            self.kernel.run(source, self.timeout_s())

    def _ensure_kernel(self) -> None:
        if self.kernel is None or not self.kernel.alive():
            if self.kernel is None and not self.done:
                self.new_kernel()
            else:
                self.restart()

    @contextlib.contextmanager
    def _servers_shared(self) -> Iterator[None]:
        if "follower" in self.uses:
            with self.follower_lock.shared():
                yield
        else:
            yield

    # -- calls (what GradedSubmission sends) ----------------------------------------------
    def call(self, payload: dict[str, Any], timeout_s: float | None) -> Any:
        if self.left_s() <= 0:
            raise NoAnswer("the submission's time is up")
        if self.kernel is None or not self.kernel.alive():
            self.restart()
            if self.kernel is None:
                raise NoAnswer("the kernel is not running (it died and could not be replaced)")
        nonce = secrets.token_hex(8)
        code = (f"import labkit.grading.student as _lk_grading\n"
                f"_lk_grading._serve({nonce!r}, {json.dumps(payload)!r})")
        r = self.kernel.run(code, self.timeout_s(timeout_s))
        if r["status"] in ("timeout", "dead"):
            if r["status"] == "dead":
                self.restart()
            raise NoAnswer(f"your code did not answer: {r['error']}")
        tag = f"{student.TAG}{nonce} "
        lines = [ln for ln in r["stdout"].splitlines() if ln.startswith(tag)]
        if not lines:
            raise NoAnswer("your notebook gave no answer" + (f" ({r['error']})" if r["error"]
                                                             else ""))
        try:
            answer = json.loads(lines[-1][len(tag):])
        except ValueError:
            raise NoAnswer("your notebook's answer was cut off or garbled") from None
        if isinstance(answer, dict) and "error" in answer:
            raise NoAnswer(f"the call could not be made: {str(answer['error'])[:500]}")
        return answer

    def close(self) -> None:
        self._watchdog_stop.set()
        self.close_kernel()
        with contextlib.suppress(Exception):
            self.memcached.stop()
        try:
            namespace.drop(self.lab, self.ns)
        except Exception as e:  # the grade stands; the leftover is named for the instructor
            self.errors.append(f"could not drop namespace {self.ns.name}: {e}")
        shutil.rmtree(self.run_dir, ignore_errors=True)


class GradedFaults(Faults):
    """Faults on the submission's servers, injected by the grader with its own credentials."""

    def __init__(self, run: Run) -> None:
        self.run = run

    @contextlib.contextmanager
    def follower_delay(self, delay_ms: int) -> Iterator[None]:
        # The follower is shared by every submission graded at once: the delay holds the
        # follower's lock exclusively, so no other submission's test or cell runs meanwhile.
        follower = self.run.lab.follower
        with self.run.follower_lock.exclusive():
            follower.set_delay(delay_ms, settle=True)
            try:
                yield
            finally:
                follower.set_delay(0)
                follower.wait_replayed(timeout_s=30)

    def kill_workers(self) -> int:
        if self.run.sandbox is None:
            return 0
        return len(self.run.sandbox.kill_started())


class GradedSubmission(Submission):
    """A submission as the grader's tests see it: calls go to its sandboxed kernel."""

    graded = True

    def __init__(self, run: Run) -> None:
        import psycopg
        from pymemcache.client.base import PooledClient
        self.run = run
        self.prefix = run.ns.prefix
        self.db = psycopg.connect(run.lab.leader.dsn(run.ns.name), autocommit=True,
                                  connect_timeout=5)
        follower = run.lab.followers[0] if run.lab.followers else run.lab.leader
        self.follower_db = psycopg.connect(follower.dsn(run.ns.name), autocommit=True,
                                           connect_timeout=5)
        self.cache = PooledClient(run.memcached.server, connect_timeout=5, timeout=5,
                                  no_delay=True, default_noreply=False)
        self.faults = GradedFaults(run)
        if run.ns.cassandra is not None:
            self.keyspace = run.ns.cassandra.keyspace
            self.replication_factor = run.ns.cassandra.replication_factor
        if run.ns.regions is not None:
            self.regions_keyspace = run.ns.regions.keyspace
        self.install_probes()

    def _run(self, payload: dict[str, Any], timeout_s: float | None) -> Any:
        return self.run.call(payload, timeout_s)

    def connect(self) -> Any:
        import psycopg
        return psycopg.connect(self.run.lab.leader.dsn(self.run.ns.name), autocommit=True,
                               connect_timeout=5)

    def broker_url(self) -> str:
        from urllib.parse import quote
        mq = self.run.lab.rabbitmq
        if not self.run.ns.rabbitmq or mq is None:
            raise RuntimeError("this assignment has no RabbitMQ vhost: add \"rabbitmq\" to its "
                               "metadata labkit.uses")
        return (f"amqp://{quote(mq.username, safe='')}:{quote(mq.password, safe='')}@"
                f"{mq.host}:{mq.port}/{quote(self.run.ns.vhost, safe='')}")

    def _connect_cassandra(self) -> Any:
        # The grader's own login (the lab's superuser), on the submission's keyspace.
        cns, creds = self.run.ns.cassandra, self.run.lab.cassandra.credentials
        return student.CassandraWorkspace(cns.contact_points, creds.user, creds.password,
                                          cns.keyspace, cns.replication_factor).connect()

    def _connect_region(self, name: str) -> Any:
        # The grader's own login, straight to the cluster (not through the submission's link).
        cas = self.run.lab.cassandra_topologies["regions"]
        return student.CassandraWorkspace(
            tuple(tuple(p) for p in cas.region(name).contact_points), cas.credentials.user,
            cas.credentials.password, self.regions_keyspace, 1).connect()

    def cpu_s(self) -> float:
        sb = self.run.sandbox
        return self.run.cpu_used_s + (sb.cpu_s() if sb else 0.0)

    def code_cells(self) -> list[str] | None:
        return [source for _, source in student_cells(self.run.nb)]

    def close(self) -> None:
        self._close_cassandra()
        for c in (self.db, self.follower_db):
            with contextlib.suppress(Exception):
                c.close()
        with contextlib.suppress(Exception):
            self.cache.close()


# --------------------------------------------------------------------------- submissions

def find_submissions(paths: list[Path]) -> list[Path]:
    """The notebooks named by ``paths`` (files, or folders searched recursively)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.ipynb")
                            if ".ipynb_checkpoints" not in p.parts)
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such submission; pass notebooks or folders")
    return found


def _assignment_of(path: Path, nb: Any, known: dict[str, Assignment]) -> Assignment | None:
    meta = nb.metadata.get("labkit", {}) if nb is not None else {}
    name = meta.get("assignment") if isinstance(meta, dict) else None
    if name in known:
        return known[name]
    # Metadata can be lost (a student re-saves from another tool): fall back on the NN_ prefix.
    for key, assignment in known.items():
        if path.stem.startswith(key[:3]):
            return assignment
    return None


def student_cells(nb: Any) -> list[tuple[int, str]]:
    """(position, source) of the code cells a student wrote or kept, tests left out."""
    return [(i, c.source) for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and isinstance(c.source, str) and c.source.strip()
            and marker_of(c.source) is None]


def grade_one(path: Path, known: dict[str, Assignment], lab: Any, limits: Limits = Limits(),
              work_dir: Path | None = None, *, secure: bool = True,
              follower_lock: RWLock | None = None,
              tests: dict[str, list[Test]] | None = None) -> dict[str, Any]:
    """Grade one submission; always return a result, whatever the notebook does."""
    path = Path(path)
    t0 = time.monotonic()
    result: dict[str, Any] = {"submission": str(path), "student": path.parent.name,
                              "assignment": None, "score": 0.0, "max_score": 0.0,
                              "questions": {}, "cells": [], "errors": []}
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:  # not JSON, not a notebook: still graded (zero), with the reason
        nb = None
        result["errors"].append(f"could not read the notebook: {type(e).__name__}: {e}"[:500])
    assignment = _assignment_of(path, nb, known)
    if assignment is None:
        result["errors"].append("no matching assignment in solutions/ (by notebook metadata "
                                "or file name NN_topic.ipynb)")
        result["elapsed_s"] = 0.0
        return result
    result["assignment"] = assignment.name
    result["max_score"] = assignment.points
    all_tests = (tests or {}).get(assignment.name) or assignment.load_tests()
    verdicts: dict[tuple[str, str], str | None] = {}
    if nb is not None:
        _run_submission(nb, assignment, all_tests, lab, limits, work_dir or Path(tempfile.gettempdir()),
                        secure, follower_lock or RWLock(), result, verdicts)
    for q in assignment.questions.values():
        rows, hidden_n = [], 0
        for t in all_tests:
            if t.question != q.id:
                continue
            failure = verdicts.get((t.question, t.name), "not run")
            hidden_n += t.hidden
            rows.append({"test": t.name, "label": f"hidden test {hidden_n}" if t.hidden else t.name,
                         "hidden": t.hidden, "weight": t.weight, "passed": failure is None,
                         "message": "" if failure is None else
                         (t.feedback or "failed") if t.hidden else failure,
                         "detail": failure or ""})
        total = sum(r["weight"] for r in rows)
        got = sum(r["weight"] for r in rows if r["passed"])
        score = round(q.points * got / total, 2) if total else 0.0
        result["questions"][q.id] = {"points": q.points, "score": score,
                                     "passed": bool(rows) and got == total, "tests": rows}
    result["score"] = round(sum(q["score"] for q in result["questions"].values()), 2)
    result["elapsed_s"] = round(time.monotonic() - t0, 2)
    return result


def _run_submission(nb: Any, assignment: Assignment, all_tests: list[Test], lab: Any,
                    limits: Limits, work_dir: Path, secure: bool, follower_lock: RWLock,
                    result: dict[str, Any], verdicts: dict[tuple[str, str], str | None]) -> None:
    run: Run | None = None
    sub: GradedSubmission | None = None
    try:
        run = Run(nb, assignment, lab, limits, work_dir, secure, follower_lock)
        sub = GradedSubmission(run)   # first: it installs the grader's probes
        run.run_cells()
        silent = 0   # tests in a row the kernel did not answer
        for t in all_tests:
            if run.left_s() <= 0:
                verdicts[(t.question, t.name)] = "not run: the submission's time was up"
                continue
            if silent >= MAX_SILENT_TESTS:
                verdicts[(t.question, t.name)] = ("not run: your notebook stopped answering "
                                                  f"({MAX_SILENT_TESTS} tests in a row)")
                continue
            uses_fault = "follower" in run.uses and "follower_delay" in _source_of(t)
            lock = (contextlib.nullcontext() if uses_fault or "follower" not in run.uses
                    else follower_lock.shared())
            with lock:
                verdict = verdicts[(t.question, t.name)] = student.run_test(t.fn, sub)
            silent = silent + 1 if verdict and verdict.startswith(student.NO_ANSWER) else 0
            # Whatever a test left in the cache or database stays: later tests of the same
            # submission start from it, as in the student's notebook.
    except Exception as e:
        result["errors"].append(f"grading stopped: {type(e).__name__}: {e}"[:1000])
    finally:
        if sub is not None:
            sub.close()
        if run is not None:
            run.close()
            result["cells"] = run.cells
            result["errors"] = run.errors + result["errors"]


def _source_of(t: Test) -> str:
    import inspect
    try:
        return inspect.getsource(t.fn)
    except (OSError, TypeError):
        code = getattr(t.fn, "__code__", None)
        return " ".join(code.co_names) if code else ""


def check_isolation(insecure: bool) -> bool:
    """True for full isolation; False (with a warning) when ``insecure``; else refuse."""
    found = probe()
    if found["ok"]:
        return True
    why = "; ".join(found["missing"])
    if not insecure:
        raise InsecureRefused(
            f"cannot isolate submissions here: {why}. Install what is missing (bash "
            "containers/bootstrap.sh; `labkit doctor` checks it) and grade as root, or pass "
            "--insecure to grade without isolation (a submission could then read other "
            "files and reach other servers; use it for your own solutions only)")
    import sys
    print(f"labkit grade: WARNING: grading without isolation (--insecure): {why}",
          file=sys.stderr)
    return False


def grade(paths: list[Path], lab: Any, out_dir: Path, *, solutions_dir: Path | None = None,
          limits: Limits = Limits(), jobs: int = 2, insecure: bool = False,
          exports: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Grade notebooks (or folders of them) against ``lab``; write reports to ``out_dir``.

    ``solutions_dir`` (default: the repository's ``solutions/``) holds the tests. ``jobs``
    submissions run at once. Without full isolation this raises ``InsecureRefused`` unless
    ``insecure=True``. ``exports`` also writes the gradebook as ``canvas`` and/or
    ``gradescope`` CSV (``labkit.grading.export``).
    """
    secure = check_isolation(insecure)
    solutions_dir = Path(solutions_dir or REPO / "solutions").resolve()
    known = assignments(solutions_dir)
    tests = {name: a.load_tests() for name, a in known.items()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    subs = find_submissions(paths)
    lock = threading.Lock()
    follower_lock = RWLock()
    seen: set[str] = set()
    # Scratch directories live in a parent others may enter but not list (0711).
    work_dir = Path(tempfile.mkdtemp(prefix="labkit-grade-"))
    work_dir.chmod(0o711)

    def one(path: Path) -> dict[str, Any]:
        try:
            r = grade_one(path, known, lab, limits, work_dir, secure=secure,
                          follower_lock=follower_lock, tests=tests)
        except Exception as e:  # the class goes on; this one is named in the gradebook
            r = {"submission": str(path), "student": Path(path).parent.name, "assignment": None,
                 "score": 0.0, "max_score": 0.0, "questions": {}, "cells": [], "elapsed_s": 0.0,
                 "errors": [f"grading failed: {type(e).__name__}: {e}"[:1000]]}
        with lock:
            rid = report_id(Path(path), seen)
        r["report_id"] = rid
        (out_dir / f"{rid}.json").write_text(json.dumps(r, indent=2, default=str))
        (out_dir / f"{rid}.md").write_text(feedback_markdown(r))
        return r

    try:
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            results = list(pool.map(one, subs))
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    write_gradebook(results, out_dir / "gradebook.csv")
    from labkit.grading import export
    for kind in exports:
        export.EXPORTS[kind](results, out_dir / f"{kind}.csv")
    return results
