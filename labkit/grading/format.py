"""The assignment format: solution notebooks with markers, and the student copies built from them.

A solution notebook (``solutions/NN_topic.ipynb``) is an ordinary notebook with four markers,
all found by their text, never by cell position (see ``solutions/README.md``):

- a Markdown heading ``## Question q1 (2 points)`` declares a question, its id and its points;
- ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` in a code cell wraps solution code; ``# HINT: ...``
  lines inside are the question's hints (shown by ``check("q1", hint=True)``, never in the stub);
- a code cell whose first line is ``# TEST q1`` holds visible tests of question q1;
- a code cell whose first line is ``# HIDDEN TEST q1`` holds hidden tests (graded, never shown).

Tests are functions of one argument, ``sub`` (``labkit.grading.harness.Submission``),
registered with ``@tests("q1", weight=..., feedback=...)``: they call the student's functions
through ``sub`` and judge what comes back, so the grader can run them in its own process.
A hidden test must say what a student reads when it fails (``feedback=``).
"""

from __future__ import annotations

import ast
import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

NB_VERSION = 4
QUESTION_RE = re.compile(r"^#+\s*Question\s+([A-Za-z]\w*)\s*\((\d+(?:\.\d+)?)\s*points?\)",
                         re.MULTILINE | re.IGNORECASE)
TEST_RE = re.compile(r"^\s*#\s*(HIDDEN\s+)?TESTS?\s+([A-Za-z]\w*)\s*$", re.IGNORECASE)
BEGIN_RE = re.compile(r"^(\s*)#\s*BEGIN SOLUTION\b")
END_RE = re.compile(r"^\s*#\s*END SOLUTION\b")
HINT_RE = re.compile(r"^\s*#\s*HINT:\s*(.*)$")


class FormatError(ValueError):
    """A solution notebook breaks the format; the message names the notebook and the fix."""


@dataclass
class TestCell:
    """One test cell: the question it belongs to, its code, and the test names it registers."""

    question: str
    hidden: bool
    source: str
    names: list[str]


@dataclass
class Test:
    """One test, loaded in the grader's process: where it comes from and how it counts."""

    question: str
    hidden: bool
    name: str
    fn: Any
    weight: float
    feedback: str


@dataclass
class Question:
    id: str
    points: float
    tests: list[TestCell] = field(default_factory=list)

    @property
    def visible(self) -> list[TestCell]:
        return [t for t in self.tests if not t.hidden]

    @property
    def hidden(self) -> list[TestCell]:
        return [t for t in self.tests if t.hidden]


@dataclass
class Assignment:
    """A parsed solution notebook: its name (``03_cache_aside``) and its questions in order."""

    name: str
    path: Path
    questions: dict[str, Question]
    hints: dict[str, list[str]] = field(default_factory=dict)
    # Shared servers its tests use beyond its own database and memcached, from the solution
    # notebook's metadata ``labkit.uses``: "follower" (fault tests lock it), "rabbitmq" (a vhost),
    # "cassandra" (a keyspace on the ring), "regions" (a keyspace in each regional cluster).
    uses: tuple[str, ...] = ()

    @property
    def points(self) -> float:
        return sum(q.points for q in self.questions.values())

    def load_tests(self) -> list[Test]:
        """Every test, run from the solution's cells in a namespace of its own (here, never in
        a student's kernel). The cells run in order, so a later cell may use an earlier
        cell's helpers."""
        from labkit.grading import student
        namespace: dict[str, Any] = {"__name__": f"labkit_tests_{self.name}"}
        found: list[Test] = []
        saved = dict(student._registry)
        try:
            for q in self.questions.values():
                for cell in q.tests:
                    student._registry.clear()
                    namespace["tests"] = student.tests
                    exec(compile(cell.source, f"<{self.name} {cell.question} tests>", "exec"),
                         namespace)
                    for name, spec in student._registry.get(cell.question, {}).items():
                        found.append(Test(cell.question, cell.hidden, name, spec.fn,
                                          spec.weight, spec.feedback))
        finally:
            student._registry.clear()
            student._registry.update(saved)
        return found


def marker_of(source: str) -> tuple[str, bool] | None:
    """(question id, hidden) when ``source`` is a test cell, else None."""
    first = next((line for line in source.splitlines() if line.strip()), "")
    m = TEST_RE.match(first)
    return (m.group(2), bool(m.group(1))) if m else None


def _test_functions(source: str) -> list[tuple[ast.FunctionDef, ast.Call]]:
    """(function, its @tests(...) decorator) for each test a cell registers."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    out = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            for d in node.decorator_list:
                if isinstance(d, ast.Call) and getattr(d.func, "id",
                                                       getattr(d.func, "attr", "")) == "tests":
                    out.append((node, d))
    return out


def registered_names(source: str) -> list[str]:
    """The names of the functions a test cell decorates with ``@tests(...)``."""
    return [fn.name for fn, _ in _test_functions(source)]


def parse(path: Path) -> Assignment:
    """Read a solution notebook into an ``Assignment``; raise FormatError when it is malformed."""
    path = Path(path)
    nb = nbformat.read(path, as_version=NB_VERSION)
    questions: dict[str, Question] = {}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for qid, points in QUESTION_RE.findall(cell.source):
                if qid in questions:
                    raise FormatError(f"{path}: question {qid} is declared twice; give each "
                                      "'## Question <id> (<n> points)' heading its own id")
                questions[qid] = Question(qid, float(points))
    for cell in nb.cells:
        marker = marker_of(cell.source) if cell.cell_type == "code" else None
        if marker is None:
            continue
        qid, hidden = marker
        if qid not in questions:
            raise FormatError(f"{path}: a test cell names question {qid}, which no "
                              f"'## Question {qid} (<n> points)' heading declares")
        found = _test_functions(cell.source)
        if not found:
            raise FormatError(f"{path}: the test cell of {qid} registers no test; decorate "
                              f'each test function with @tests("{qid}")')
        for fn, deco in found:
            if len(fn.args.args) != 1:
                raise FormatError(f"{path}: test {fn.name} of {qid} must take one argument, "
                                  f"sub (the submission it calls), e.g. def {fn.name}(sub):")
            if hidden and not any(k.arg == "feedback" for k in deco.keywords):
                raise FormatError(f"{path}: hidden test {fn.name} of {qid} needs feedback=\"...\" "
                                  "(what a student reads when it fails: what went wrong, "
                                  "without the test's inputs)")
        questions[qid].tests.append(TestCell(qid, hidden, cell.source, [f.name for f, _ in found]))
    for q in questions.values():
        if not q.tests:
            raise FormatError(f"{path}: question {q.id} has no test cell; add one starting "
                              f"with '# TEST {q.id}' or '# HIDDEN TEST {q.id}'")
    meta = nb.metadata.get("labkit", {})
    uses = tuple(meta.get("uses", ())) if isinstance(meta, dict) else ()
    unknown = set(uses) - {"follower", "rabbitmq", "cassandra", "regions"}
    if unknown:
        raise FormatError(f"{path}: metadata labkit.uses names {sorted(unknown)}; use "
                          "follower, rabbitmq, cassandra or regions")
    return Assignment(path.stem, path, questions, hints_of(nb, path), uses)


def hints_of(nb: nbformat.NotebookNode, path: Path | str = "") -> dict[str, list[str]]:
    """question id -> its ``# HINT:`` lines, from the solution regions after its heading."""
    out: dict[str, list[str]] = {}
    current = None
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            ids = QUESTION_RE.findall(cell.source)
            if ids:
                current = ids[-1][0]
        elif cell.cell_type == "code" and marker_of(cell.source) is None:
            found = _hint_lines(cell.source)
            if found:
                if current is None:
                    raise FormatError(f"{path}: a # HINT comes before any '## Question' heading")
                out.setdefault(current, []).extend(found)
    return out


def _hint_lines(source: str) -> list[str]:
    inside, found = False, []
    for line in source.splitlines():
        if BEGIN_RE.match(line):
            inside = True
        elif END_RE.match(line):
            inside = False
        elif inside:
            m = HINT_RE.match(line)
            if m:
                found.append(m.group(1).strip())
    return found


def stub(source: str, where: str = "") -> str:
    """``source`` with every solution region replaced by a ``NotImplementedError`` stub."""
    out: list[str] = []
    region: list[str] | None = None
    indent = ""
    for line in source.splitlines():
        if region is None:
            m = BEGIN_RE.match(line)
            if m:
                region, indent = [], m.group(1)
            else:
                out.append(line)
        elif END_RE.match(line):
            # The hints are not the stub's message: check("q1", hint=True) shows them.
            out.append(f"{indent}# YOUR CODE HERE")
            out.append(f"{indent}raise NotImplementedError(\"write this, then run check(...)\")")
            region = None
        else:
            region.append(line)
    if region is not None:
        raise FormatError(f"{where}: '# BEGIN SOLUTION' without '# END SOLUTION'")
    return "\n".join(out)


def build_exercise(path: Path) -> nbformat.NotebookNode:
    """The student copy of one solution notebook: stubs, no hidden tests, no outputs."""
    assignment = parse(path)  # validate before writing anything
    nb = nbformat.read(path, as_version=NB_VERSION)
    cells = []
    given: set[str] = set()
    current = None
    for cell in nb.cells:
        cell = copy.deepcopy(cell)
        if cell.cell_type == "markdown":
            ids = QUESTION_RE.findall(cell.source)
            current = ids[-1][0] if ids else current
        if cell.cell_type == "code":
            marker = marker_of(cell.source)
            if marker and marker[1]:
                continue  # hidden tests never reach the student's copy
            had_solution = any(BEGIN_RE.match(line) for line in cell.source.splitlines())
            cell.source = stub(cell.source, where=str(path))
            if had_solution and current in assignment.hints and current not in given:
                from labkit.grading.student import encode_hints
                given.add(current)
                cell.source += (f"\n\nfrom labkit.grading import hints\n"
                                f'hints("{current}", "{encode_hints(assignment.hints[current])}")'
                                f'  # read by check("{current}", hint=True)')
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
        cells.append(cell)
    nb.cells = cells
    nb.metadata["labkit"] = {"assignment": Path(path).stem}
    if assignment.uses:
        nb.metadata["labkit"]["uses"] = list(assignment.uses)
    return nb


def _text(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def build_exercises(solutions_dir: Path, exercises_dir: Path, *, check: bool = False) -> list[Path]:
    """Write ``exercises_dir/NN_topic.ipynb`` for every solution; return the files that changed.

    With ``check=True`` nothing is written: the return value lists the student copies that are
    missing or out of date (what CI fails on).
    """
    solutions_dir, exercises_dir = Path(solutions_dir), Path(exercises_dir)
    changed = []
    for src in sorted(solutions_dir.glob("[0-9][0-9]_*.ipynb")):
        dest = exercises_dir / src.name
        text = _text(build_exercise(src))
        if not dest.exists() or dest.read_text() != text:
            changed.append(dest)
            if not check:
                exercises_dir.mkdir(parents=True, exist_ok=True)
                dest.write_text(text)
    return changed


def assignments(solutions_dir: Path) -> dict[str, Assignment]:
    """Every solution notebook of ``solutions_dir`` by name (``03_cache_aside``)."""
    return {p.stem: parse(p) for p in sorted(Path(solutions_dir).glob("[0-9][0-9]_*.ipynb"))}
