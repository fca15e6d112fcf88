"""The tamper corpus, graded for real: no tampering earns a point, and the class finishes.

Every case (``tamper/cases.py``) is the unsolved exercise 01 with cells of a mischievous
student added; one more case solves q2 only and forges everything else. All go through one
``grade`` call with tight limits (two at a time, as in a class), so the module stays short.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import pytest

from labkit.grading.format import assignments
from labkit.grading.grader import grade
from labkit.grading.sandbox import Limits

REPO = Path(__file__).resolve().parents[2]


def _cases() -> dict[str, list[str]]:
    """tamper/cases.py, loaded by path (tests/ is not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("tamper_cases",
                                                  Path(__file__).with_name("tamper") / "cases.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CASES


CASES = _cases()
EXERCISE = REPO / "exercises" / "01_data_model.ipynb"
SOLUTION = REPO / "solutions" / "01_data_model.ipynb"
LIMITS = Limits(cell_timeout_s=4, submission_timeout_s=45, cpu_s=20, memory_mb=512, pids=64,
                disk_mb=64)


def _with_cells(nb: nbformat.NotebookNode, sources: list[str]) -> nbformat.NotebookNode:
    nb = copy.deepcopy(nb)
    nb.cells[2:2] = [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


@pytest.fixture(scope="module")
def graded(lab, tmp_path_factory):
    subs = tmp_path_factory.mktemp("tamper")
    exercise = nbformat.read(EXERCISE, as_version=4)
    notebooks = {name: _with_cells(exercise, cells) for name, cells in CASES.items()}
    # q2 solved for real, results forged and the registry emptied: exactly q2's point. (With
    # the harness replaced, even q2's own observations would be wrong: 0, see above.)
    solved = copy.deepcopy(exercise)
    sol = nbformat.read(SOLUTION, as_version=4)
    at = next(i for i, c in enumerate(solved.cells) if "def like_count" in c.source)
    solved.cells[at] = next(c for c in sol.cells if "def like_count" in c.source)
    notebooks["q2_solved_rest_forged"] = _with_cells(solved, CASES["registry_emptied"]
                                                     + CASES["forged_result_lines"])
    for name, nb in notebooks.items():
        (subs / name).mkdir()
        nbformat.write(nb, subs / name / EXERCISE.name)
    results = grade([subs], lab, tmp_path_factory.mktemp("out"), limits=LIMITS, jobs=2)
    for r in results:
        print(f"{r['student']:<24} {r['score']:g}/{r['max_score']:g} {r['elapsed_s']:.1f} s")
    return {r["student"]: r for r in results}


def test_the_class_finishes_with_every_case_graded(graded):
    assert set(graded) == {*CASES, "q2_solved_rest_forged"}
    for name, r in graded.items():
        assert r["assignment"] == "01_data_model" and set(r["questions"]) == {"q1", "q2"}, name


@pytest.mark.parametrize("case", sorted(CASES))
def test_tampering_earns_nothing(graded, case):
    r = graded[case]
    assert r["score"] == 0, (case, r["questions"], r["errors"])


def test_a_solved_question_keeps_its_points_and_nothing_more(graded):
    r = graded["q2_solved_rest_forged"]
    points = assignments(REPO / "solutions")["01_data_model"].questions["q2"].points
    assert r["questions"]["q2"]["score"] == points and r["questions"]["q1"]["score"] == 0
    assert r["score"] == points


def test_crashes_and_hangs_are_named_in_the_report(graded):
    assert any("died" in e or "did not respond" in e for e in graded["os_exit"]["errors"])
    for case in ("infinite_loop", "never_answers", "stopped_kernel"):
        statuses = [c["status"] for c in graded[case]["cells"]]
        assert {"timeout", "dead"} & set(statuses), (case, graded[case]["cells"])
