"""What grading writes: feedback for the student, the class gradebook, and LMS import files.

``feedback_markdown`` is the student's report: per question the score, each visible test with
its message, each hidden test by number with the message written for it (never its code,
name or inputs). ``write_gradebook`` is the instructor's CSV: one row per submission,
named by its folder (the student), with an ``errors`` column naming crashes and hangs.

``write_canvas`` and ``write_gradescope`` write the layouts those systems import:

- Canvas (Grades > Import): ``Student, ID, SIS User ID, SIS Login ID, Section``, then one
  column per assignment, and a second row ``Points Possible``. Canvas matches a row by any of
  the ID columns; an assignment column without a Canvas id in parentheses becomes a new
  assignment on import.
- Gradescope (an assignment's Upload Scores): ``Name, SID, Email, Total Score``, matched on
  Email or SID.

The student column is the submission's folder name (``submissions/<login>/03_x.ipynb``);
``roster`` (a CSV with ``student,name,sis_id,email,section``) fills in the rest.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Callable


def report_id(path: Path, seen: set[str]) -> str:
    """A unique file name for a submission's reports (its folder name when the stem repeats)."""
    rid = path.stem
    if rid in seen:
        rid = f"{path.parent.name}__{path.stem}"
    n = 2
    while rid in seen:
        rid, n = f"{path.parent.name}__{path.stem}_{n}", n + 1
    seen.add(rid)
    return rid


def feedback_markdown(result: dict[str, Any]) -> str:
    """The student's report: scores, visible test messages, hidden tests' own messages."""
    lines = [f"# Feedback: {Path(result['submission']).name}", "",
             f"Assignment: {result['assignment'] or 'unknown'}  ",
             f"**Score: {result['score']:g} / {result['max_score']:g}**", ""]
    for err in result["errors"]:
        lines.append(f"> {err}")
    if result["errors"]:
        lines.append("")
    for qid, q in result["questions"].items():
        lines += [f"## {qid}: {q['score']:g} / {q['points']:g}", ""]
        for t in q["tests"]:
            mark = "passed" if t["passed"] else "FAILED"
            name = t["label"] if t["hidden"] else f"`{t['label']}`"
            msg = "" if t["passed"] or not t["message"] else f": {t['message']}"
            lines.append(f"- {name} (weight {t['weight']:g}): {mark}{msg}")
        lines.append("")
    bad = [c for c in result["cells"] if c["status"] != "ok"]
    if bad:
        lines += ["## Cells that did not finish cleanly", ""]
        lines += [f"- cell {c['cell'] + 1}: {c['status']}: {c['error']}" for c in bad]
        lines.append("")
    return "\n".join(lines)


def _question_columns(results: list[dict[str, Any]]) -> tuple[list[str], bool]:
    several = len({r["assignment"] for r in results if r["assignment"]}) > 1
    cols: list[str] = []
    for r in results:
        for q in r["questions"]:
            col = f"{r['assignment']}:{q}" if several else q
            if col not in cols:
                cols.append(col)
    return cols, several


def write_gradebook(results: list[dict[str, Any]], path: Path) -> None:
    """One row per submission: student, assignment, score, per-question scores, errors."""
    qids, several = _question_columns(results)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "submission", "assignment", "score", "max_score", *qids, "errors"])
        for r in results:
            w.writerow([r.get("student", ""), r["submission"], r["assignment"] or "",
                        f"{r['score']:g}", f"{r['max_score']:g}",
                        *[_column(r, col, several) for col in qids], " | ".join(r["errors"])])


def _column(r: dict[str, Any], col: str, several: bool) -> str:
    if several:
        assignment, _, qid = col.rpartition(":")
        if assignment != r["assignment"]:
            return ""
    else:
        qid = col
    return f"{r['questions'][qid]['score']:g}" if qid in r["questions"] else ""


def read_roster(path: Path | None) -> dict[str, dict[str, str]]:
    """student -> {name, sis_id, email, section} from a roster CSV (empty without one)."""
    if path is None:
        return {}
    with open(path, newline="") as f:
        return {row["student"]: row for row in csv.DictReader(f) if row.get("student")}


def _by_student(results: list[dict[str, Any]]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    assignments = sorted({r["assignment"] for r in results if r["assignment"]})
    table: dict[str, dict[str, Any]] = {}
    for r in results:
        row = table.setdefault(r.get("student") or Path(r["submission"]).parent.name, {})
        if r["assignment"]:
            row[r["assignment"]] = r
    return assignments, table


def write_canvas(results: list[dict[str, Any]], path: Path, roster: Path | None = None) -> None:
    """The CSV Canvas's gradebook imports: one column per assignment, a Points Possible row."""
    people = read_roster(roster)
    assignments, table = _by_student(results)
    maxima = {a: next(r["max_score"] for r in results if r["assignment"] == a) for a in assignments}
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Student", "ID", "SIS User ID", "SIS Login ID", "Section", *assignments])
        w.writerow(["Points Possible", "", "", "", "", *(f"{maxima[a]:g}" for a in assignments)])
        for student, row in sorted(table.items()):
            p = people.get(student, {})
            w.writerow([p.get("name", student), "", p.get("sis_id", ""), student,
                        p.get("section", ""),
                        *(f"{row[a]['score']:g}" if a in row else "" for a in assignments)])


def write_gradescope(results: list[dict[str, Any]], path: Path,
                     roster: Path | None = None) -> None:
    """The CSV a Gradescope assignment's Upload Scores takes (one assignment per file)."""
    people = read_roster(roster)
    assignments, table = _by_student(results)
    if len(assignments) > 1:
        raise ValueError(f"a Gradescope upload holds one assignment; these results hold "
                         f"{', '.join(assignments)}: grade each assignment into its own --out")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Name", "SID", "Email", "Total Score"])
        for student, row in sorted(table.items()):
            p = people.get(student, {})
            score = next(iter(row.values()))["score"] if row else 0
            w.writerow([p.get("name", student), p.get("sis_id", student), p.get("email", ""),
                        f"{score:g}"])


EXPORTS: dict[str, Callable[..., None]] = {"canvas": write_canvas, "gradescope": write_gradescope}
