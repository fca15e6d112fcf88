"""The student release and the LMS exports (no servers needed)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from labkit.cli import main
from labkit.grading.export import write_canvas, write_gradescope
from labkit.grading.format import assignments

REPO = Path(__file__).resolve().parents[2]


def test_a_release_has_exercises_and_nothing_of_the_instructors(tmp_path):
    dest = tmp_path / "release"
    assert main(["exercises", "release", str(dest)]) == 0
    assert not (dest / "solutions").exists() and not (dest / "tests" / "grading").exists()
    assert (dest / "labkit" / "grading" / "student.py").exists()
    names = {p.name for p in (dest / "exercises").glob("*.ipynb")}
    assert names == {f"{a}.ipynb" for a in assignments(REPO / "solutions")}
    text = "\n".join(p.read_text(errors="ignore") for p in dest.rglob("*") if p.is_file())
    for a in assignments(REPO / "solutions").values():
        for t in a.load_tests():
            if t.hidden:
                assert t.name not in text and t.feedback[:60] not in text
    assert main(["exercises", "release", str(dest)]) == 2, "a non-empty target is refused"


def _result(student, assignment, score, max_score=5.0):
    return {"student": student, "submission": f"subs/{student}/{assignment}.ipynb",
            "assignment": assignment, "score": score, "max_score": max_score,
            "questions": {}, "errors": []}


def test_canvas_and_gradescope_layouts(tmp_path):
    results = [_result("ana", "03_cache_aside", 4), _result("bo", "03_cache_aside", 0)]
    roster = tmp_path / "roster.csv"
    roster.write_text("student,name,sis_id,email,section\nana,Ana Lima,1001,ana@uni.edu,A\n")
    write_canvas(results, tmp_path / "canvas.csv", roster=roster)
    rows = list(csv.reader(open(tmp_path / "canvas.csv")))
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "03_cache_aside"]
    assert rows[1][0] == "Points Possible" and rows[1][5] == "5"
    assert rows[2] == ["Ana Lima", "", "1001", "ana", "A", "4"]
    write_gradescope(results, tmp_path / "gs.csv", roster=roster)
    rows = list(csv.reader(open(tmp_path / "gs.csv")))
    assert rows[0] == ["Name", "SID", "Email", "Total Score"]
    assert rows[1] == ["Ana Lima", "1001", "ana@uni.edu", "4"] and rows[2] == ["bo", "bo", "", "0"]
    with pytest.raises(ValueError, match="one assignment"):
        write_gradescope(results + [_result("ana", "04_invalidation", 1)], tmp_path / "x.csv")
