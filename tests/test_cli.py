"""The `labkit` command against the session's real lab."""

import os
import subprocess
import sys

from labkit.cli import main


def _labkit(*args, env=None):
    return subprocess.run([sys.executable, "-m", "labkit.cli", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_status_shows_health_version_address_and_lag(lab):
    out = _labkit("status")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "postgres-follower1" in out.stdout and "ok" in out.stdout
    assert lab.leader.address in out.stdout and "15." in out.stdout
    assert "delay 0 ms" in out.stdout and "3.1" in out.stdout  # follower lag; rabbitmq 3.1x


def test_env_prints_exports_that_connect(lab):
    out = _labkit("env")
    assert out.returncode == 0, out.stderr
    lines = dict(l.removeprefix("export ").split("=", 1) for l in out.stdout.splitlines())
    assert lines["PGPORT"] == str(lab.leader.port)
    script = out.stdout + '\npsql -tAc "select 7*6"\n'
    psql = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert psql.stdout.strip() == "42", psql.stderr


def test_up_reattaches_quickly(lab):
    out = _labkit("up")
    assert out.returncode == 0, out.stderr
    assert lab.leader.address in out.stdout


def test_doctor_reports_missing_binary_with_install_lines(capsys, monkeypatch):
    monkeypatch.setenv("LABKIT_MEMCACHED_BIN", "/nonexistent/memcached")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "memcached       MISSING" in out
    assert "sudo apt-get install -y memcached" in out and "brew install memcached" in out


def test_doctor_passes_when_everything_is_installed(capsys):
    assert main(["doctor"]) == 0
    assert "all binaries found" in capsys.readouterr().out


def test_bad_service_name_is_a_clear_error(capsys):
    assert main(["up", "--services", "postgres,mongo"]) == 2
    assert "choose from postgres, memcached, rabbitmq" in capsys.readouterr().err
