"""The course reads like one: every notebook opens with its header, SYLLABUS.md lists it all.

A notebook's first markdown cell must have the sections **What you will learn**, **What you
need** (earlier notebooks, and readings with a link) and **Time on 2 cores**; SYLLABUS.md
must name every notebook and every exercise. A new notebook or exercise without them fails.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("**What you will learn**", "**What you need**", "**Time on 2 cores**")


def header_problems(path: Path) -> list[str]:
    """What the first markdown cell of the notebook at ``path`` lacks (empty: nothing)."""
    cells = json.loads(path.read_text())["cells"]
    first = next((c for c in cells if c["cell_type"] == "markdown"), None)
    if first is None:
        return ["no markdown cell"]
    text = "".join(first["source"])
    problems = [f"no {s} section" for s in SECTIONS if s not in text]
    if not problems:
        need = text.split("**What you need**")[1].split("**Time on 2 cores**")[0]
        if "http" not in need:
            problems.append("What you need cites no reading (a link)")
        if not re.search(r"\bnotebooks? \d\d\b|nothing before", need):
            problems.append("What you need names no earlier notebook (or 'nothing before')")
        time = text.split("**Time on 2 cores**")[1]
        if not re.search(r"\d+\s*(min|s)\b", time):
            problems.append("Time on 2 cores gives no duration")
    return problems


def syllabus_problems(syllabus: str, notebooks: list[Path], exercises: list[Path]) -> list[str]:
    """Notebooks and exercises that SYLLABUS.md does not list."""
    return [f"{p.parent.name}/{p.name} is not in SYLLABUS.md" for p in notebooks + exercises
            if f"{p.parent.name}/{p.name}" not in syllabus]


def _notebooks() -> list[Path]:
    return sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _exercises() -> list[Path]:
    return sorted((REPO / "exercises").glob("[0-9][0-9]_*.ipynb"))


def test_every_notebook_opens_with_its_header():
    assert _notebooks()
    bad = {p.name: problems for p in _notebooks() if (problems := header_problems(p))}
    assert bad == {}


def test_syllabus_lists_every_notebook_and_exercise():
    syllabus = (REPO / "SYLLABUS.md").read_text()
    assert syllabus_problems(syllabus, _notebooks(), _exercises()) == []
    assert "12_backend_under_faults" in syllabus      # coming with issue 14
    assert "```mermaid" in syllabus                   # the dependency graph


def test_the_checks_fail_on_a_notebook_and_a_syllabus_without_them(tmp_path):
    nb = tmp_path / "notebooks" / "99_new.ipynb"
    nb.parent.mkdir()
    nb.write_text(json.dumps({"cells": [{"cell_type": "markdown", "metadata": {},
                                         "source": "# 99 · New\n\n**What you will learn**\n- x"}],
                              "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    assert header_problems(nb) == ["no **What you need** section", "no **Time on 2 cores** section"]
    nb.write_text(nb.read_text().replace(
        "- x", "- x\\n\\n**What you need**\\n- nothing\\n\\n**Time on 2 cores**\\nquick"))
    assert header_problems(nb) == ["What you need cites no reading (a link)",
                                   "What you need names no earlier notebook (or 'nothing before')",
                                   "Time on 2 cores gives no duration"]
    assert syllabus_problems("notebooks/00_lab_tour.ipynb", [nb], []) == [
        "notebooks/99_new.ipynb is not in SYLLABUS.md"]
