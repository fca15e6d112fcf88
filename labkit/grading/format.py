"""The assignment format: solution notebooks with markers, and the student copies built from them.

A solution notebook (``solutions/NN_topic.ipynb``) is an ordinary notebook with four markers,
all found by their text, never by cell position (see ``solutions/README.md``):

- a Markdown heading ``## Question q1 (2 points)`` declares a question, its id and its points;
- ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` in a code cell wraps solution code; an optional
  ``# HINT: ...`` line inside becomes the stub's message;
- a code cell whose first line is ``# TEST q1`` holds visible tests of question q1;
- a code cell whose first line is ``# HIDDEN TEST q1`` holds hidden tests (graded, never shown).

Tests are functions registered with ``@tests("q1")`` (``labkit.grading.tests``).
"""

from __future__ import annotations

import ast
import copy
import re
from dataclasses import dataclass, field
from pathlib import Path

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

    @property
    def points(self) -> float:
        return sum(q.points for q in self.questions.values())


def marker_of(source: str) -> tuple[str, bool] | None:
    """(question id, hidden) when ``source`` is a test cell, else None."""
    first = next((line for line in source.splitlines() if line.strip()), "")
    m = TEST_RE.match(first)
    return (m.group(2), bool(m.group(1))) if m else None


def registered_names(source: str) -> list[str]:
    """The names of the functions a test cell decorates with ``@tests(...)``."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any(
                isinstance(d, ast.Call) and getattr(d.func, "id", getattr(d.func, "attr", ""))
                == "tests" for d in node.decorator_list):
            names.append(node.name)
    return names


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
        names = registered_names(cell.source)
        if not names:
            raise FormatError(f"{path}: the test cell of {qid} registers no test; decorate "
                              f'each test function with @tests("{qid}")')
        questions[qid].tests.append(TestCell(qid, hidden, cell.source, names))
    for q in questions.values():
        if not q.tests:
            raise FormatError(f"{path}: question {q.id} has no test cell; add one starting "
                              f"with '# TEST {q.id}' or '# HIDDEN TEST {q.id}'")
    return Assignment(path.stem, path, questions)


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
            hints = [h.group(1) for h in map(HINT_RE.match, region) if h]
            hint = " ".join(hints) or "write your solution here"
            out.append(f"{indent}# YOUR CODE HERE")
            out.append(f"{indent}raise NotImplementedError({hint!r})")
            region = None
        else:
            region.append(line)
    if region is not None:
        raise FormatError(f"{where}: '# BEGIN SOLUTION' without '# END SOLUTION'")
    return "\n".join(out)


def build_exercise(path: Path) -> nbformat.NotebookNode:
    """The student copy of one solution notebook: stubs, no hidden tests, no outputs."""
    parse(path)  # validate before writing anything
    nb = nbformat.read(path, as_version=NB_VERSION)
    cells = []
    for cell in nb.cells:
        cell = copy.deepcopy(cell)
        if cell.cell_type == "code":
            marker = marker_of(cell.source)
            if marker and marker[1]:
                continue  # hidden tests never reach the student's copy
            cell.source = stub(cell.source, where=str(path))
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
        cells.append(cell)
    nb.cells = cells
    nb.metadata["labkit"] = {"assignment": Path(path).stem}
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
