"""`labkit report` from real result files, and `labkit render` of one short notebook."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from labkit import cli, report
from labkit.experiments import results
from labkit.report.published import PUBLISHED

REPO = Path(__file__).resolve().parents[1]
REGISTRY = {name: module for name, (module, _) in cli.EXPERIMENTS.items()}


def test_every_experiment_saves_its_results_where_the_report_reads(lab, tmp_path, capsys):
    """A real herd run lands in <lab_dir>/results/herd.json and, with --out, in --out too."""
    out = tmp_path / "rows.json"
    rc = cli.main(["--lab-dir", str(lab.config.lab_dir), "experiment", "herd", "--clients",
                   "1,8", "--lease", "none,meta", "--rounds", "1", "--out", str(out)])
    assert rc == 0
    envelope = results.load(lab.config.lab_dir, "herd")
    assert envelope["experiment"] == "herd"
    assert envelope["data"] == json.loads(out.read_text())  # --out: the rows, as before
    assert envelope["params"]["clients"] == "1,8" and envelope["params"]["rounds"] == 1
    assert envelope["command"].startswith("labkit experiment herd ")
    assert envelope["machine"]["cpus"] >= 1 and envelope["duration_s"] > 0

    # The report, from that real file alone (a lab directory holding only it).
    only = tmp_path / "lab"
    (only / "results").mkdir(parents=True)
    shutil.copy(results.result_path(lab.config.lab_dir, "herd"), only / "results")
    rc = cli.main(["--lab-dir", str(only), "report", "--collect-only", "--out",
                   str(tmp_path / "report")])
    assert rc == 0
    md = (tmp_path / "report" / "report.md").read_text()
    page = (tmp_path / "report" / "report.html").read_text()
    # every published figure is on the page, with its source
    for p in PUBLISHED:
        assert p.figure in md and p.source.url in md
    # the lab's figure is the measured one: queries per expiry of the 8-client rows
    row = {r["lease"]: r for r in envelope["data"] if r["clients"] == 8}
    for kind in ("none", "meta"):
        assert f"{kind}: {row[kind]['queries_per_expiry']:.1f} per expiry" in md
    assert envelope["machine"]["hostname"] in md and "clients=1,8" in md
    png = (tmp_path / "report" / "herd.png").read_bytes()
    assert png.startswith(b"\x89PNG") and "data:image/png;base64," in page
    assert "<table>" in page
    # the others never ran in that lab directory: shown so, with the command that runs them
    assert "not run: `labkit experiment consistency`" in md
    assert "labkit experiment akkio --users 20" in md   # the --quick variant of the command


def test_a_missing_experiment_shows_as_not_run(tmp_path):
    html, md = report.write(tmp_path / "empty-lab", REGISTRY, tmp_path / "out")
    text = md.read_text()
    for name in REGISTRY:
        assert f"not run: `labkit experiment {name}`" in text
    assert f"0 of {len(REGISTRY)} experiments have results" in text
    assert not list((tmp_path / "out").glob("*.png"))
    assert "not run" in html.read_text()


def test_a_failed_run_is_not_reported_with_an_older_result(lab, tmp_path):
    """If this run of an experiment failed, an older result file must not pass for it."""
    lab_dir = tmp_path / "lab"
    (lab_dir / "results").mkdir(parents=True)
    src = results.result_path(lab.config.lab_dir, "herd")
    if not src.exists():  # run alone: make one real result first
        assert cli.main(["--lab-dir", str(lab.config.lab_dir), "experiment", "herd",
                         "--clients", "4", "--lease", "meta", "--rounds", "1"]) == 0
    shutil.copy(src, lab_dir / "results")
    failed = {"herd": report.Outcome("herd", "labkit experiment herd", 1, 3.0, "boom: it broke")}
    _, md = report.write(lab_dir, REGISTRY, tmp_path / "out", outcomes=failed)
    text = md.read_text()
    assert "failed (exit 1) running `labkit experiment herd`" in text and "boom: it broke" in text
    assert "**The lab** measured" not in text               # no figures from the old file


def test_render_writes_notebook_00_executed_with_its_machine(lab, tmp_path):
    rc = cli.main(["--lab-dir", str(lab.config.lab_dir), "render",
                   str(REPO / "notebooks" / "00_lab_tour.ipynb"), "--out", str(tmp_path)])
    page = (tmp_path / "00_lab_tour.html").read_text()
    assert "Rendered by <code>labkit render</code>" in page
    assert results.machine()["hostname"] in page
    assert "lab ready in" in page                       # an output of the first code cell
    # Whether notebook 00's own claims hold on a loaded machine is nbval's test of it (its
    # lag tolerance failed here at load 40); this one checks the render says which it was.
    if rc == 0:
        assert "every cell ran without an error" in page
    else:
        assert "stopped at an error" in page and "AssertionError" in page


def test_experiments_without_cassandra_run_first():
    """A Cassandra node that fails to start must not fail the experiments that need none."""
    order = sorted(REGISTRY, key=lambda n: report._needs_cassandra(REGISTRY[n]))
    assert order[:2] == ["herd", "canary"] and set(order[2:]) == {"consistency", "akkio", "chaos"}


def test_no_experiment_writes_into_the_working_directory_unasked() -> None:
    """`labkit report` runs every experiment wherever it is run: no option may default to a
    relative path (chaos's --out once left chaos.json, .png and .history.jsonl in the
    directory the report was run from). Without --out, results go to the lab's directory."""
    import argparse
    import importlib

    for name, module_name in REGISTRY.items():
        parser = argparse.ArgumentParser()
        importlib.import_module(module_name).add_arguments(parser)
        relative = {a.dest: a.default for a in parser._actions
                    if isinstance(a.default, (str, Path)) and a.dest in ("out", "output")
                    or isinstance(a.default, Path) and not a.default.is_absolute()}
        assert not relative, f"{name}: {relative}"
