"""The herd experiment and its command line, on the real servers."""

from __future__ import annotations

import json

from labkit import cli
from labkit.experiments import herd


def test_processes_mode_shows_coalescing_is_per_process(lab, pg_db):
    dsn = herd.prepare(lab.leader, pg_db)
    r = herd.run_herd(dsn, lab.cache_servers, clients=8, lease="coalescing", rounds=1,
                      mode="processes", processes=2)
    assert r["errors"] == 0, r["error_samples"]
    assert 1 <= r["queries"][0] <= 2       # at most one refill per process


def test_table_lays_out_kinds_by_clients():
    rows = [{"lease": "none", "clients": 1, "queries_per_expiry": 1.0},
            {"lease": "none", "clients": 16, "queries_per_expiry": 15.5},
            {"lease": "meta", "clients": 16, "queries_per_expiry": 1.0}]
    lines = herd.table(rows).splitlines()
    assert lines[0].split() == ["lease", "1", "16"]
    assert lines[1].split() == ["none", "1.0", "15.5"]
    assert lines[2].split() == ["meta", "1.0"]


def test_cli_writes_results(lab, tmp_path, capsys):
    out = tmp_path / "results.json"
    rc = cli.main(["--lab-dir", str(lab.config.lab_dir), "experiment", "herd",
                   "--clients", "16", "--lease", "meta", "--rounds", "1", "--out", str(out)])
    assert rc == 0
    [row] = json.loads(out.read_text())
    assert row["lease"] == "meta" and row["clients"] == 16 and row["queries"] == [1]
    assert "queries per expiry" in capsys.readouterr().out
