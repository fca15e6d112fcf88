"""The autograder: run each submission in a fresh, confined kernel against the real lab servers.

For every submission ``grade`` creates a namespace (a database owned by a role of its own and
a cache prefix, ``labkit.grading.namespace``), starts a kernel that sees only that namespace's
credentials (``labkit.grading.sandbox``: unprivileged account, CPU-time and memory limits,
the lab directory and the hidden tests hidden), runs the student's code cells in their order,
then the solution's visible and hidden tests, one test per cell with a wall-clock limit. It
writes ``<submission>.json`` and ``<submission>.md`` per submission and ``gradebook.csv``.

>>> results = grade(["exercises/"], lab, Path("grades"))      # doctest: +SKIP
>>> results[0]["score"], results[0]["max_score"]               # doctest: +SKIP
(0.0, 5.0)
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from labkit._proc import ServiceError, service_account
from labkit.grading import namespace
from labkit.grading.format import Assignment, assignments, marker_of

REPO = Path(__file__).resolve().parents[2]
STUDENT_ACCOUNT = "labkit-student"
SANDBOX = Path(__file__).with_name("sandbox.py")


@dataclass(frozen=True)
class Limits:
    """Per-submission limits: wall clock per cell and overall, CPU seconds, memory."""

    cell_timeout_s: float = 30.0
    submission_timeout_s: float = 300.0
    cpu_s: int = 120
    memory_mb: int = 3072
    startup_timeout_s: float = 60.0


# ------------------------------------------------------------------------------ kernels

UNSHARE = ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"]
_mode: str | None = None


def sandbox_mode() -> str:
    """How graded kernels are confined here: namespaces, account, or none (not root).

    "namespaces" (root, and mount/PID namespaces allowed) hides the lab directory and the
    hidden tests; "account" (root in a container without CAP_SYS_ADMIN) only runs the
    kernel as the unprivileged account; "none" runs it as the grader's own user.
    """
    global _mode
    if _mode is None:
        if os.geteuid() != 0:
            _mode = "none"
        else:
            try:
                ok = subprocess.run([*UNSHARE, "true"], capture_output=True,
                                    timeout=10).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                ok = False
            _mode = "namespaces" if ok else "account"
    return _mode


class _Kernel:
    """One confined kernel for one submission; ``run`` executes a cell with a time limit."""

    def __init__(self, ns: namespace.Namespace, scratch: Path, hide: list[Path],
                 limits: Limits, extra_env: dict[str, str] | None = None) -> None:
        from jupyter_client import KernelManager
        from jupyter_client.kernelspec import KernelSpecManager
        self.limits = limits
        spec_dir = Path(tempfile.mkdtemp(prefix="labkit-kspec-"))
        self._spec_dir = spec_dir
        conn_file = scratch / f"kernel-{secrets.token_hex(4)}.json"
        sandbox = [sys.executable, str(SANDBOX), "--cpu-s", str(limits.cpu_s),
                   "--memory-mb", str(limits.memory_mb), "--cwd", str(scratch)]
        prefix: list[str] = []
        if os.geteuid() == 0:
            import pwd
            pw = pwd.getpwnam(service_account(STUDENT_ACCOUNT))
            os.chown(scratch, pw.pw_uid, pw.pw_gid)
            sandbox += ["--uid", str(pw.pw_uid), "--gid", str(pw.pw_gid), "--chown",
                        "{connection_file}", "--reveal", str(REPO)]
            if sandbox_mode() == "namespaces":
                prefix = UNSHARE
                for path in hide:
                    sandbox += ["--hide", str(path)]
            else:
                sandbox.append("--no-mounts")
        # No history file: the tests the grader sends later must not land on disk.
        argv = [*prefix, *sandbox, "--", sys.executable, "-m", "ipykernel_launcher",
                "-f", "{connection_file}", "--HistoryManager.enabled=False"]
        (spec_dir / "labkit-grade").mkdir()
        (spec_dir / "labkit-grade" / "kernel.json").write_text(json.dumps({
            "argv": argv, "display_name": "labkit grade", "language": "python",
            # SIGINT would reach unshare, not the kernel; ask the kernel itself to interrupt.
            "interrupt_mode": "message"}))
        self.km = KernelManager(kernel_name="labkit-grade", connection_file=str(conn_file),
                                kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec_dir)]))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "HOME": str(scratch), "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(scratch / ".mpl"),
               "IPYTHONDIR": str(scratch / ".ipython"), "JUPYTER_RUNTIME_DIR": str(scratch),
               "JUPYTER_CONFIG_DIR": str(scratch / ".jupyter"),
               "JUPYTER_DATA_DIR": str(scratch / ".jupyter"), "PYTHONUNBUFFERED": "1",
               **ns.env(), **(extra_env or {})}
        # The kernel's own chatter (e.g. ipykernel's TCP warning) is not the student's output.
        self.km.start_kernel(env=env, cwd=str(scratch), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        self.kc = self.km.client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=limits.startup_timeout_s)
        except BaseException:
            self.close()
            raise

    def alive(self) -> bool:
        return self.km.is_alive()

    def run(self, code: str, timeout_s: float) -> dict[str, Any]:
        """Execute ``code``; return {"status": ok|error|timeout|dead, "stdout", "error"}."""
        out: list[str] = []
        err: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                err.append(f"{content['ename']}: {content['evalue']}")

        try:
            reply = self.kc.execute_interactive(code, timeout=timeout_s, output_hook=hook,
                                                allow_stdin=False, stop_on_error=False)
        except TimeoutError:
            if not self.alive():
                return {"status": "dead", "stdout": "".join(out), "error": "the kernel died"}
            self.km.interrupt_kernel()
            try:  # the interrupted cell's reply comes first; a no-op proves the kernel is back
                self.kc.execute_interactive("pass", timeout=10, output_hook=lambda m: None)
            except TimeoutError:
                return {"status": "dead", "stdout": "".join(out),
                        "error": f"stopped after {timeout_s:.0f} s and did not respond"}
            return {"status": "timeout", "stdout": "".join(out),
                    "error": f"stopped after {timeout_s:.0f} s (time limit)"}
        status = reply["content"]["status"]
        return {"status": "ok" if status == "ok" else "error", "stdout": "".join(out),
                "error": "; ".join(err)}

    def close(self) -> None:
        try:
            self.kc.stop_channels()
            self.km.shutdown_kernel(now=True)
        finally:
            shutil.rmtree(self._spec_dir, ignore_errors=True)


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
    name = (nb.metadata.get("labkit", {}) if nb is not None else {}).get("assignment")
    if name in known:
        return known[name]
    # Metadata can be lost (a student re-saves from another tool): fall back on the NN_ prefix.
    for key, assignment in known.items():
        if path.stem.startswith(key[:3]):
            return assignment
    return None


def _student_cells(nb: Any) -> list[tuple[int, str]]:
    """(position, source) of the code cells a student wrote or kept, tests left out."""
    return [(i, c.source) for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and c.source.strip() and marker_of(c.source) is None]


def grade_one(path: Path, known: dict[str, Assignment], lab: Any, hide: list[Path],
              limits: Limits = Limits(), work_dir: Path | None = None) -> dict[str, Any]:
    """Grade one submission; always return a result, whatever the notebook does."""
    path = Path(path)
    result: dict[str, Any] = {"submission": str(path), "assignment": None, "score": 0.0,
                              "max_score": 0.0, "questions": {}, "cells": [], "errors": []}
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:  # not JSON, not a notebook: still graded (zero), with the reason
        nb = None
        result["errors"].append(f"could not read the notebook: {type(e).__name__}: {e}")
    assignment = _assignment_of(path, nb, known)
    if assignment is None:
        result["errors"].append("no matching assignment in solutions/ (by notebook metadata "
                                "or file name NN_topic.ipynb)")
        return result
    result["assignment"] = assignment.name
    result["max_score"] = assignment.points
    tests = [(q.id, t.hidden, name) for q in assignment.questions.values()
             for t in q.tests for name in t.names]
    outcomes: dict[tuple[str, str], dict[str, Any]] = {}
    if nb is not None:
        _run_submission(nb, assignment, lab, hide, limits, result, outcomes, work_dir)
    for q in assignment.questions.values():
        rows = []
        for qid, hidden, name in tests:
            if qid != q.id:
                continue
            o = outcomes.get((qid, name), {"passed": False, "message": "not run"})
            rows.append({"test": name, "hidden": hidden, "passed": bool(o["passed"]),
                         "message": "" if hidden else o.get("message", "")})
        passed = bool(rows) and all(r["passed"] for r in rows)
        result["questions"][q.id] = {"points": q.points, "score": q.points if passed else 0.0,
                                     "passed": passed, "tests": rows}
    result["score"] = sum(q["score"] for q in result["questions"].values())
    return result


def _run_submission(nb: Any, assignment: Assignment, lab: Any, hide: list[Path], limits: Limits,
                    result: dict[str, Any], outcomes: dict[tuple[str, str], dict],
                    work_dir: Path | None = None) -> None:
    ns = namespace.create(lab)
    # Exercise 09 and later: a keyspace and a role of the submission's own on the lab's ring.
    cns = namespace.create_cassandra(lab) if needs_cassandra(assignment) else None
    extra_env = cns.env() if cns else None
    scratch = Path(tempfile.mkdtemp(prefix="sub-", dir=work_dir))
    deadline = time.monotonic() + limits.submission_timeout_s
    nonce = secrets.token_hex(8)
    kernel: _Kernel | None = None
    try:
        kernel = _Kernel(ns, scratch, hide, limits, extra_env)
        done: list[str] = []  # cells that finished (with or without an error), for a replay
        for pos, source in _student_cells(nb):
            left = deadline - time.monotonic()
            if left <= 0:
                result["errors"].append("the submission ran out of time; later cells skipped")
                break
            r = kernel.run(source, min(limits.cell_timeout_s, left))
            result["cells"].append({"cell": pos, "status": r["status"], "error": r["error"]})
            if r["status"] in ("ok", "error"):
                done.append(source)
            elif r["status"] == "dead":
                # A crash (CPU or memory limit, os._exit) costs that cell, not the whole
                # submission: a fresh kernel replays the cells that had finished.
                result["errors"].append(f"cell {pos + 1}: {r['error']}; the cells before it "
                                        "were run again in a new kernel")
                kernel.close()
                kernel = _Kernel(ns, scratch, hide, limits, extra_env)
                for source in done:
                    kernel.run(source, max(1.0, min(limits.cell_timeout_s,
                                                    deadline - time.monotonic())))
        # The solution's tests, not the student's copy of them (which may have been edited).
        setup = "import labkit.grading.student as _lk_g\n_lk_g._registry.clear()"
        kernel.run(setup, limits.cell_timeout_s)
        for q in assignment.questions.values():
            for t in q.tests:
                kernel.run("from labkit.grading.student import tests\n" + t.source,
                           limits.cell_timeout_s)
        for q in assignment.questions.values():
            for t in q.tests:
                for name in t.names:
                    left = max(1.0, min(limits.cell_timeout_s, deadline - time.monotonic()))
                    if not kernel.alive():
                        outcomes[(q.id, name)] = {"passed": False,
                                                  "message": "the kernel died before this test"}
                        continue
                    r = kernel.run(f"import labkit.grading.student as _lk_g\n"
                                   f"_lk_g._grade_line({nonce!r}, {q.id!r}, {name!r})", left)
                    outcomes[(q.id, name)] = _parse_result(r, nonce)
    except Exception as e:
        result["errors"].append(f"grading stopped: {type(e).__name__}: {e}")
    finally:
        if kernel is not None:
            kernel.close()
        try:
            namespace.drop(lab, ns)
        except Exception as e:  # the grade stands; the leftover is named for the instructor
            result["errors"].append(f"could not drop namespace {ns.name}: {e}")
        if cns is not None:
            try:
                namespace.drop_cassandra(lab, cns)
            except Exception as e:
                result["errors"].append(f"could not drop keyspace {cns.keyspace}: {e}")
        shutil.rmtree(scratch, ignore_errors=True)


def needs_cassandra(assignment: Assignment) -> bool:
    """True when the solution notebook's metadata asks for Cassandra (``labkit.needs``)."""
    meta = nbformat.read(assignment.path, as_version=4).metadata.get("labkit", {})
    return "cassandra" in meta.get("needs", [])


def _parse_result(r: dict[str, Any], nonce: str) -> dict[str, Any]:
    tag = f"LABKIT-RESULT-{nonce} "
    for line in r["stdout"].splitlines():
        if line.startswith(tag):
            return json.loads(line[len(tag):])
    return {"passed": False, "message": r["error"] or "the test produced no result"}


# -------------------------------------------------------------------------------- output

def feedback_markdown(result: dict[str, Any]) -> str:
    """A readable report for the student: scores, visible test messages, hidden pass/fail."""
    lines = [f"# Feedback: {Path(result['submission']).name}", "",
             f"Assignment: {result['assignment'] or 'unknown'}  ",
             f"**Score: {result['score']:g} / {result['max_score']:g}**", ""]
    for err in result["errors"]:
        lines.append(f"> {err}")
    if result["errors"]:
        lines.append("")
    for qid, q in result["questions"].items():
        lines += [f"## {qid}: {q['score']:g} / {q['points']:g}", ""]
        hidden_n = 0
        for t in q["tests"]:
            mark = "passed" if t["passed"] else "FAILED"
            if t["hidden"]:
                hidden_n += 1
                lines.append(f"- hidden test {hidden_n}: {mark}")
            else:
                msg = "" if t["passed"] or not t["message"] else f": {t['message']}"
                lines.append(f"- `{t['test']}`: {mark}{msg}")
        lines.append("")
    bad = [c for c in result["cells"] if c["status"] != "ok"]
    if bad:
        lines += ["## Cells that did not finish cleanly", ""]
        lines += [f"- cell {c['cell'] + 1}: {c['status']}: {c['error']}" for c in bad]
        lines.append("")
    return "\n".join(lines)


def _report_id(path: Path, seen: set[str]) -> str:
    rid = path.stem
    if rid in seen:
        rid = f"{path.parent.name}__{path.stem}"
    n = 2
    while rid in seen:
        rid, n = f"{path.parent.name}__{path.stem}_{n}", n + 1
    seen.add(rid)
    return rid


def write_gradebook(results: list[dict[str, Any]], path: Path) -> None:
    # One assignment: columns q1, q2...; several: 03_cache_aside:q1, ... (ids repeat).
    several = len({r["assignment"] for r in results if r["assignment"]}) > 1
    qids: list[str] = []
    for r in results:
        for q in r["questions"]:
            col = f"{r['assignment']}:{q}" if several else q
            if col not in qids:
                qids.append(col)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["submission", "assignment", "score", "max_score", *qids, "errors"])
        for r in results:
            w.writerow([r["submission"], r["assignment"] or "", f"{r['score']:g}",
                        f"{r['max_score']:g}",
                        *[_column(r, col, several) for col in qids], " | ".join(r["errors"])])


def _column(r: dict[str, Any], col: str, several: bool) -> str:
    if several:
        assignment, _, qid = col.rpartition(":")
        if assignment != r["assignment"]:
            return ""
    else:
        qid = col
    return f"{r['questions'][qid]['score']:g}" if qid in r["questions"] else ""


def grade(paths: list[Path], lab: Any, out_dir: Path, *, solutions_dir: Path | None = None,
          limits: Limits = Limits(), jobs: int = 2) -> list[dict[str, Any]]:
    """Grade notebooks (or folders of them) against ``lab``; write reports to ``out_dir``.

    ``solutions_dir`` (default: the repository's ``solutions/``) holds the tests. ``jobs``
    submissions run at once (each in its own kernel and namespace).
    """
    solutions_dir = Path(solutions_dir or REPO / "solutions").resolve()
    known = assignments(solutions_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # What the student's kernel must not see: the lab's credentials, the hidden tests (also
    # in git's objects), and other students' reports.
    hide = [Path(lab.config.lab_dir).resolve(), solutions_dir, out_dir.resolve()]
    if (REPO / ".git").is_dir():
        hide.append(REPO / ".git")
    mode = sandbox_mode()
    if mode == "none":
        print("labkit grade: not running as root, so submissions run under your own account "
              "and could read the lab's credentials; grade as root for full isolation",
              file=sys.stderr)
    elif mode == "account":
        from labkit.grading.sandbox import _blocked_ancestor
        for path in (Path(sys.base_prefix), Path(sys.prefix), REPO):
            blocked = _blocked_ancestor(path)
            if blocked is not None:
                raise ServiceError(
                    f"graded kernels run as {STUDENT_ACCOUNT}, which cannot enter {blocked} "
                    f"(on the way to {path}), and mount namespaces are not permitted here to "
                    "work around it; install Python and labkit outside it (e.g. a venv under "
                    "/opt) or grade where `unshare --mount --pid` works")
        print("labkit grade: `unshare --mount --pid` is not permitted here (a container "
              "without CAP_SYS_ADMIN?), so submissions run as the unprivileged account "
              f"{STUDENT_ACCOUNT} but could read world-readable files such as solutions/; "
              "grade on a host or a privileged container for full isolation", file=sys.stderr)
    subs = find_submissions(paths)
    lock = threading.Lock()
    seen: set[str] = set()

    # Scratch directories live in a parent others may enter but not list (0711): a kernel
    # knows its own random name only, so it cannot find a concurrent submission's files.
    work_dir = Path(tempfile.mkdtemp(prefix="labkit-grade-"))
    work_dir.chmod(0o711)

    def one(path: Path) -> dict[str, Any]:
        r = grade_one(path, known, lab, hide, limits, work_dir)
        with lock:
            rid = _report_id(path, seen)
        r["report_id"] = rid
        (out_dir / f"{rid}.json").write_text(json.dumps(r, indent=2))
        (out_dir / f"{rid}.md").write_text(feedback_markdown(r))
        return r

    try:
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            results = list(pool.map(one, subs))
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    write_gradebook(results, out_dir / "gradebook.csv")
    return results
