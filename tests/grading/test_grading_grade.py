"""`grade` on the real lab: full marks, zero, partial credit, reports, isolation.

All submissions go through one `grade` call (two at a time, as `labkit grade` does). Crashes,
hangs and tampering are the tamper corpus's (test_tamper.py); wrong answers, partial credit
by weight (test_wrong_answers.py).
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from pathlib import Path

import nbformat
import pytest

from labkit.grading import namespace
from labkit.grading.format import assignments, marker_of
from labkit.grading.grader import InsecureRefused, check_isolation, grade
from labkit.grading.sandbox import Limits

REPO = Path(__file__).resolve().parents[2]
SOLUTIONS, EXERCISES = REPO / "solutions", REPO / "exercises"
LIMITS = Limits(cell_timeout_s=60, submission_timeout_s=240)


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _code_index(nb: nbformat.NotebookNode, needle: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and needle in c.source)


def _probe_source(lab, victim: str) -> str:
    # Reversed, so the probe's own source (in the kernel) does not contain what it looks for.
    hidden = sorted(name[::-1] for a in assignments(SOLUTIONS).values()
                    for q in a.questions.values() for t in q.hidden for name in t.names)
    lab_dir = str(lab.config.lab_dir)
    return textwrap.dedent(f"""
        import json, os, psycopg
        found = {{"files": {{}}, "hidden_in": [], "scanned": 0}}
        for name in ("secrets.json", "state.json"):
            try:
                found["files"][name] = open(os.path.join({lab_dir!r}, name)).read()
            except OSError as e:
                found["files"][name] = type(e).__name__
        found["env"] = dict(os.environ)
        try:  # other submissions' scratch directories sit next to this one
            found["siblings"] = os.listdir(os.path.dirname(os.getcwd()))
        except OSError as e:
            found["siblings"] = type(e).__name__
        found["cwd"] = os.getcwd()
        conn = psycopg.connect(os.environ["LABKIT_GRADE_DSN"], autocommit=True)
        try:
            conn.execute('DROP DATABASE "{victim}"')
            found["drop"] = "dropped"
        except psycopg.Error as e:
            found["drop"] = type(e).__name__
        try:
            psycopg.connect(os.environ["LABKIT_GRADE_DSN"].replace(
                "dbname=" + conn.info.dbname, "dbname={victim}"), connect_timeout=5).close()
            found["connect_victim"] = "connected"
        except psycopg.Error as e:
            found["connect_victim"] = type(e).__name__
        hidden = [h[::-1] for h in {hidden!r}]
        texts = [json.dumps(found["env"])]
        for root in ({str(REPO)!r}, os.getcwd(), os.path.expanduser("~")):
            for d, _, files in os.walk(root):
                for f in files:
                    if found["scanned"] > 5000:
                        break
                    try:
                        with open(os.path.join(d, f), errors="replace") as fh:
                            text = fh.read(2_000_000)
                    except OSError:
                        continue
                    found["scanned"] += 1
                    if any(h in text for h in hidden):
                        found["hidden_in"].append(os.path.join(d, f))
        raise RuntimeError("PROBE " + json.dumps(found))
    """)


@pytest.fixture(scope="module")
def graded(ring_lab, regions_lab, tmp_path_factory):
    """Every submission of this module, graded once: {label: result}.

    On the session's lab with the Cassandra ring and the regions side by side: exercise 09 is
    graded in a keyspace of its own on the ring, exercise 10 in one in each region.
    """
    import labkit as lk
    # Reattached once both run, so this handle has both topologies (whichever came first).
    lab = lk.up(followers=1, services=("postgres", "memcached", "rabbitmq"), cassandra="regions")
    subs = tmp_path_factory.mktemp("submissions")
    labels: dict[str, Path] = {}

    def save(label: str, nb: nbformat.NotebookNode, name: str = "03_cache_aside") -> None:
        path = subs / label / f"{name}.ipynb"
        path.parent.mkdir()
        nbformat.write(nb, path)
        labels[label] = path

    for src in sorted(SOLUTIONS.glob("[0-9][0-9]_*.ipynb")):
        save(f"solution-{src.stem}", _read(src), src.stem)
        save(f"exercise-{src.stem}", _read(EXERCISES / src.name), src.stem)

    # Exactly q2 of 03 answered: the q2 stub replaced by the solution's cell.
    one = _read(EXERCISES / "03_cache_aside.ipynb")
    sol = _read(SOLUTIONS / "03_cache_aside.ipynb")
    one.cells[_code_index(one, "def record_like")] = sol.cells[_code_index(sol, "def record_like")]
    save("one-right", one)

    # Reordered, test and check cells deleted, cell types changed: markers still find it all.
    messy = _read(SOLUTIONS / "03_cache_aside.ipynb")
    setup, rest = messy.cells[1], messy.cells[2:]
    rest = [c for c in rest if not (c.cell_type == "code" and marker_of(c.source))]
    for c in rest:
        if c.cell_type == "code" and c.source.startswith("check("):
            c.cell_type = "markdown"
            c.pop("outputs", None), c.pop("execution_count", None)
        elif c.cell_type == "markdown":
            c.cell_type = "raw"
    messy.cells = [setup, *reversed(rest)]
    save("messy", messy)

    broken = subs / "broken" / "03_cache_aside.ipynb"
    broken.parent.mkdir()
    broken.write_text("{ this is not a notebook")
    labels["broken"] = broken

    victim = namespace.create(lab, tag="victim")
    probe = _read(SOLUTIONS / "03_cache_aside.ipynb")
    probe.cells.insert(2, nbformat.v4.new_code_cell(_probe_source(lab, victim.name)))
    save("probe", probe)

    out = tmp_path_factory.mktemp("grades")
    try:
        results = grade([subs], lab, out, limits=LIMITS, jobs=2, exports=("canvas",))
        victim_alive = bool(lab.leader.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (victim.name,)))
    finally:
        namespace.drop(lab, victim)
    for r in results:
        print(f"{r['student']:<32} {r['score']:g}/{r['max_score']:g} {r.get('elapsed_s', 0):.1f} s")
    by_path = {r["submission"]: r for r in results}
    yield {label: by_path[str(path)] for label, path in labels.items()}, out, victim_alive


def test_solutions_get_full_marks(graded):
    results, _, _ = graded
    sols = {k: r for k, r in results.items() if k.startswith("solution-")}
    assert len(sols) >= 6
    for label, r in sols.items():
        assert r["score"] == r["max_score"] > 0, (label, r["errors"], r["questions"])


def test_exercises_get_zero(graded):
    results, _, _ = graded
    for label, r in results.items():
        if label.startswith("exercise-"):
            assert r["score"] == 0 and r["max_score"] > 0, (label, r["questions"])


def test_one_right_question_gets_exactly_its_points(graded):
    r = graded[0]["one-right"]
    assert r["questions"]["q2"]["passed"] and not r["questions"]["q1"]["passed"]
    assert r["score"] == r["questions"]["q2"]["points"] == 2


def test_reordered_deleted_and_retyped_cells_are_found_by_markers(graded):
    r = graded[0]["messy"]
    assert r["score"] == r["max_score"], r


def test_an_unreadable_notebook_still_gets_a_report(graded):
    r = graded[0]["broken"]
    assert r["score"] == 0 and any("could not read" in e for e in r["errors"])


def test_reports_gradebook_and_exports_are_written(graded):
    results, out, _ = graded
    r = results["solution-03_cache_aside"]
    md = (out / f"{r['report_id']}.md").read_text()
    assert "Score: 4 / 4" in md and "hidden test 1 (weight 2): passed" in md
    assert json.loads((out / f"{r['report_id']}.json").read_text())["score"] == 4
    rows = list(csv.reader(io.StringIO((out / "gradebook.csv").read_text())))
    assert len(rows) == len(results) + 1 and rows[0][0] == "student"  # a field may span lines
    canvas = (out / "canvas.csv").read_text().splitlines()
    assert canvas[0].startswith("Student,ID,SIS User ID,SIS Login ID,Section,")
    assert canvas[1].startswith("Points Possible,")
    feedback = (out / f"{results['exercise-03_cache_aside']['report_id']}.md").read_text()
    assert "not implemented yet" in feedback  # visible tests explain themselves
    a = assignments(SOLUTIONS)["03_cache_aside"]
    for t in a.load_tests():
        if t.hidden:   # hidden tests: their own message, never their name or code
            assert t.name not in feedback and t.feedback in feedback


def _probe(graded) -> dict:
    r = graded[0]["probe"]
    err = next(c["error"] for c in r["cells"] if "PROBE " in c["error"])
    return json.loads(err.split("PROBE ", 1)[1])


def test_submissions_cannot_drop_another_namespace(graded):
    found = _probe(graded)
    assert found["drop"] == "InsufficientPrivilege"
    assert found["connect_victim"] == "OperationalError"
    assert graded[2], "the other namespace's database must survive"


def test_submissions_cannot_read_the_lab_admin_credentials(lab, graded):
    found = _probe(graded)
    assert found["files"] == {"secrets.json": "FileNotFoundError",
                              "state.json": "FileNotFoundError"}
    assert lab.leader.password not in json.dumps(found)
    assert not {"PGPASSWORD", "LABKIT_LAB_DIR", "LABKIT_LEADER_DSN"} & set(found["env"])
    assert "user=postgres" not in found["env"]["LABKIT_GRADE_DSN"]


def test_hidden_tests_are_not_in_the_students_environment(graded):
    found = _probe(graded)
    assert found["scanned"] > 20, "the probe must have read the repository's labkit/"
    assert found["hidden_in"] == []
    assert found["cwd"] == "/tmp", "a private /tmp of its own"
    assert graded[0]["probe"]["score"] == graded[0]["probe"]["max_score"]


def test_grading_without_isolation_refuses_unless_insecure(monkeypatch):
    from labkit.grading import grader
    monkeypatch.setattr(grader, "probe", lambda: {"ok": False, "missing": ["bwrap not found"],
                                                  "found": {}})
    with pytest.raises(InsecureRefused, match="--insecure"):
        check_isolation(insecure=False)
    assert check_isolation(insecure=True) is False
