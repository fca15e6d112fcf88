"""The assignment format and the exercise generator (no servers needed)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from labkit.cli import main
from labkit.grading.format import (FormatError, assignments, build_exercise, build_exercises,
                                   parse, stub)

REPO = Path(__file__).resolve().parents[2]
SOLUTIONS, EXERCISES = REPO / "solutions", REPO / "exercises"


def test_exercises_are_up_to_date_with_solutions():
    stale = build_exercises(SOLUTIONS, EXERCISES, check=True)
    assert not stale, (f"exercises out of date: {[p.name for p in stale]}; run "
                       "`labkit exercises build` and commit exercises/")


def test_cli_check_passes_on_the_repo_and_fails_when_stale(tmp_path, capsys):
    assert main(["exercises", "build", "--check"]) == 0
    out = tmp_path / "exercises"
    assert main(["exercises", "build", "--exercises", str(out), "--check"]) == 1
    assert main(["exercises", "build", "--exercises", str(out)]) == 0
    assert main(["exercises", "build", "--exercises", str(out), "--check"]) == 0


def test_every_topic_has_an_assignment_with_points():
    found = assignments(SOLUTIONS)
    assert {"01_data_model", "03_cache_aside", "04_invalidation", "06_leases",
            "07_replication_lag"} <= set(found)
    for a in found.values():
        assert a.points > 0 and a.questions, f"{a.name} declares no question with points"
        for q in a.questions.values():
            assert q.visible and q.hidden, f"{a.name} {q.id} needs visible and hidden tests"


def test_student_copies_have_stubs_no_hidden_tests_no_outputs():
    for name, a in assignments(SOLUTIONS).items():
        text = (EXERCISES / f"{name}.ipynb").read_text()
        nb = nbformat.reads(text, as_version=4)
        assert nb.metadata["labkit"]["assignment"] == name
        assert "BEGIN SOLUTION" not in text and "NotImplementedError" in text
        assert "HIDDEN TEST" not in text and "feedback=" not in text
        for hint in (h for hs in a.hints.values() for h in hs):
            assert hint not in text, f"{name}: a hint is readable in the student copy: {hint}"
        for q in a.questions.values():
            for t in q.hidden:
                for test_name in t.names:
                    assert test_name not in text, f"hidden test {test_name} leaked into {name}"
            for t in q.visible:
                assert any(c.source == t.source for c in nb.cells), "visible tests are kept"
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None


def test_solution_notebooks_are_committed_without_outputs():
    for path in SOLUTIONS.glob("*.ipynb"):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, path


def test_stub_keeps_the_signature_and_not_the_hint():
    src = ("def f(x):\n    \"\"\"Doc.\"\"\"\n    # BEGIN SOLUTION\n    # HINT: add one\n"
           "    return x + 1\n    # END SOLUTION\n")
    out = stub(src)
    assert out.splitlines()[:2] == ["def f(x):", '    """Doc."""']
    assert "add one" not in out and "x + 1" not in out
    ns: dict = {}
    exec(out, ns)
    with pytest.raises(NotImplementedError, match="check"):
        ns["f"](1)


def test_hints_only_on_request(tmp_path, capsys):
    from labkit.grading import student
    path = _write(tmp_path, [nbformat.v4.new_markdown_cell("## Question q1 (1 point)"),
                             nbformat.v4.new_code_cell("def f(x):\n    # BEGIN SOLUTION\n"
                                                       "    # HINT: add one\n    return x + 1\n"
                                                       "    # END SOLUTION"),
                             nbformat.v4.new_code_cell("# TEST q1\n@tests('q1')\ndef t(sub):\n"
                                                       "    pass")])
    copy = build_exercise(path)
    code = copy.cells[1].source
    assert "add one" not in code and 'hints("q1"' in code
    exec(code, {})   # registers the hints, encoded in the copy
    student.check("q1", hint=True)
    assert "add one" in capsys.readouterr().out


def _write(tmp_path: Path, cells: list) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    path = tmp_path / "99_x.ipynb"
    nbformat.write(nb, path)
    return path


def test_malformed_solutions_name_the_fix(tmp_path):
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    path = _write(tmp_path, [code("# TEST q9\n@tests('q9')\ndef t(sub):\n    pass")])
    with pytest.raises(FormatError, match="Question q9"):
        parse(path)
    path = _write(tmp_path, [md("## Question q1 (1 point)"), code("# TEST q1\nassert True")])
    with pytest.raises(FormatError, match="@tests"):
        parse(path)
    path = _write(tmp_path, [md("## Question q1 (1 point)")])
    with pytest.raises(FormatError, match="no test cell"):
        parse(path)
    with pytest.raises(FormatError, match="END SOLUTION"):
        stub("# BEGIN SOLUTION\nx = 1\n")
    path = _write(tmp_path, [md("## Question q1 (1 point)"),
                             code("# TEST q1\n@tests('q1')\ndef t():\n    pass")])
    with pytest.raises(FormatError, match="one argument, sub"):
        parse(path)
    path = _write(tmp_path, [md("## Question q1 (1 point)"),
                             code("# HIDDEN TEST q1\n@tests('q1')\ndef t(sub):\n    pass")])
    with pytest.raises(FormatError, match="feedback="):
        parse(path)


def test_every_lesson_with_an_exercise_links_to_it():
    for ex in sorted(EXERCISES.glob("[0-9][0-9]_*.ipynb")):
        lessons = list((REPO / "notebooks").glob(f"{ex.name[:3]}*.ipynb"))
        assert lessons, f"exercise {ex.name} has no lesson notebook"
        text = lessons[0].read_text()
        assert f"../exercises/{ex.name}" in text, f"{lessons[0].name} does not link to {ex.name}"
