"""Wrong answers are graded wrong: every file of solutions/wrong/, graded on the real servers.

Each wrong answer replaces the solution's cell that defines the same function; graded, it
must lose points on the question it gets wrong (and the other questions keep theirs, so the
difference is that answer's, not an accident of the run). The wrong answers of one assignment
go through one ``grade`` call.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat
import pytest

from labkit.grading.grader import grade
from labkit.grading.sandbox import Limits

REPO = Path(__file__).resolve().parents[2]
WRONG = REPO / "solutions" / "wrong"
HEADER = re.compile(r"^# WRONG (\d\d_\w+) (\w+): (.+)$")
LIMITS = Limits(cell_timeout_s=60, submission_timeout_s=240)


def wrong_answers() -> dict[str, tuple[str, str, str, str]]:
    """name -> (assignment, question, why, replacement source)."""
    out = {}
    for path in sorted(WRONG.glob("*.py")):
        first, _, body = path.read_text().partition("\n")
        m = HEADER.match(first)
        assert m, f"{path}: the first line must be '# WRONG NN_topic qN: why'"
        out[path.stem] = (m.group(1), m.group(2), m.group(3), body)
    return out


def _defined(source: str) -> set[str]:
    """Top-level functions a cell defines (Python or Cython, so by pattern, not by ast)."""
    return set(re.findall(r"^(?:c?p?def) +(\w+) *\(", source, re.MULTILINE))


def _replace(nb: nbformat.NotebookNode, source: str) -> nbformat.NotebookNode:
    nb = copy.deepcopy(nb)
    names = _defined(source)
    for cell in nb.cells:
        if cell.cell_type == "code" and "BEGIN SOLUTION" in cell.source:
            if names & _defined(cell.source):
                cell.source = source
                return nb
    raise AssertionError(f"no solution cell defines {names}")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """``of(assignment, lab)``: {wrong answer: result} for that assignment's wrong answers.

    Graded on first use, one ``grade`` call per assignment, so that ``-k 09`` grades only
    exercise 09's (on the lab with the Cassandra ring, which only its assignment needs; 10's
    on the lab with the regions).
    """
    done: dict[str, dict[str, dict]] = {}

    def of(assignment: str, lab) -> dict[str, dict]:
        if assignment not in done:
            subs = tmp_path_factory.mktemp(f"wrong-{assignment}")
            nb = nbformat.read(REPO / "solutions" / f"{assignment}.ipynb", as_version=4)
            for name, (a, _, _, source) in wrong_answers().items():
                if a == assignment:
                    (subs / name).mkdir()
                    nbformat.write(_replace(nb, source), subs / name / f"{assignment}.ipynb")
            results = grade([subs], lab, tmp_path_factory.mktemp("out"), limits=LIMITS, jobs=2)
            for r in results:
                print(f"{r['student']:<28} {r['score']:g}/{r['max_score']:g} {r['elapsed_s']:.1f} s")
            done[assignment] = {r["student"]: r for r in results}
        return done[assignment]
    return of


def test_every_assignment_has_wrong_answers():
    covered = {(a, q) for a, q, _, _ in wrong_answers().values()}
    from labkit.grading.format import assignments
    for name, a in assignments(REPO / "solutions").items():
        for q in a.questions:
            assert (name, q) in covered, f"no wrong answer for {name} {q} in solutions/wrong/"


def _lab_fixture(assignment: str) -> str:
    """The session lab an assignment needs: with the ring (09), with the regions (10), plain."""
    from labkit.grading.format import assignments
    uses = assignments(REPO / "solutions")[assignment].uses
    return "ring_lab" if "cassandra" in uses else "regions_lab" if "regions" in uses else "lab"


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.cassandra) if _lab_fixture(a) != "lab" else name
    for name, (a, _, _, _) in sorted(wrong_answers().items())])
def test_a_wrong_answer_loses_points_on_its_question(graded, request, name):
    assignment, question, why, _ = wrong_answers()[name]
    lab = request.getfixturevalue(_lab_fixture(assignment))
    r = graded(assignment, lab)[name]
    q = r["questions"][question]
    assert q["score"] < q["points"], f"{name} ({why}) got full marks on {question}: {q['tests']}"
    for other, o in r["questions"].items():
        if other != question:
            assert o["score"] == o["points"], (f"{name}: {other} should keep its points",
                                               r["errors"], o["tests"])
