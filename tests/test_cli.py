"""The `labkit` command against the session's real lab."""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

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


def test_config_errors_and_warnings_read_cleanly_in_the_cli(tmp_path):
    toml = tmp_path / "lab.toml"
    toml.write_text("host = 127\n")
    out = _labkit("status", env={"LABKIT_CONFIG": str(toml)})
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"labkit status: bad setting: host = 127 in {toml}" in out.stderr
    out = _labkit("doctor", env={"LABKIT_FOLOWERS": "2"})
    assert ("labkit: warning: environment variable LABKIT_FOLOWERS is not a labkit setting and "
            "is ignored (did you mean LABKIT_FOLLOWERS?)") in out.stderr, out.stderr


@pytest.mark.slow
def test_up_jupyter_opens_at_the_repository_root(lab, tmp_path):
    """JupyterLab started by `labkit up --jupyter` serves notebooks/ and exercises/ alike."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(8)
    env = {**os.environ, "JUPYTER_PORT": str(port), "JUPYTER_TOKEN": token,
           "JUPYTER_RUNTIME_DIR": str(tmp_path), "JUPYTER_PORT_RETRIES": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "labkit.cli", "up", "--jupyter",
                             "--no-browser"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents?token={token}",
                                            timeout=5) as r:
                    names = {item["name"] for item in json.load(r)["content"]}
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "JupyterLab did not answer within 120 s"
                time.sleep(0.5)
        assert {"notebooks", "exercises", "labkit"} <= names, names
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("env, headless", [({"DISPLAY": ":0"}, False), ({}, True),
                                           ({"DISPLAY": ":0", "CI": "true"}, True)])
def test_up_jupyter_opens_no_browser_in_ci_or_without_a_display(monkeypatch, tmp_path, env,
                                                               headless):
    """The command `labkit up --jupyter` runs: loopback, a free port, a token, and --no-browser
    in CI or where no display could show a browser (Linux without DISPLAY/WAYLAND_DISPLAY)."""
    from types import SimpleNamespace
    from labkit import cli
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "CI", "JUPYTER_PORT", "JUPYTER_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(cli.sys, "platform", "linux")
    ran = []
    monkeypatch.setattr(cli.subprocess, "call", lambda cmd, env: ran.append(cmd) or 0)
    assert cli._jupyter(SimpleNamespace(env=lambda: {}), tmp_path, no_browser=False) == 0
    [cmd] = ran
    assert ("--no-browser" in cmd) is headless, cmd
    assert "--ServerApp.ip=127.0.0.1" in cmd and f"--notebook-dir={tmp_path}" in cmd
    port = int(next(a for a in cmd if a.startswith("--ServerApp.port=")).split("=")[1])
    token = next(a for a in cmd if a.startswith("--IdentityProvider.token=")).split("=", 1)[1]
    assert 0 < port < 65536 and len(token) >= 24


def test_jupyter_opens_at_the_working_directory_outside_a_checkout(tmp_path, monkeypatch):
    from labkit import cli
    assert cli.jupyter_dir() == cli.REPO  # in this checkout
    monkeypatch.setattr(cli, "REPO", tmp_path / "site-packages")  # as a wheel install sees it
    monkeypatch.chdir(tmp_path)
    assert cli.jupyter_dir() == tmp_path


BAD_EXPERIMENT_ARGS = {
    "herd": (["--lease", "nope"], "--lease nope: choose from"),
    "consistency": (["--pairs", "ONE/SOMETIMES"], "--pairs/--delays"),
    "canary": (["--kinds", "good,sneaky"], "--kinds: choose from"),
    "akkio": (["--policy", "nope"], "--policy nope: choose from"),
    "chaos": (["--faults", "celery-kill,meteor"], "unknown fault(s) meteor: choose from"),
}


@pytest.mark.parametrize("name", sorted(BAD_EXPERIMENT_ARGS))
def test_an_experiment_with_bad_arguments_starts_nothing(name, tmp_path, capsys):
    """Bad input is refused before `Lab.up`: no server starts, the lab directory stays empty."""
    from labkit.cli import EXPERIMENTS
    assert set(BAD_EXPERIMENT_ARGS) == set(EXPERIMENTS)  # a new experiment needs a case here
    lab_dir = tmp_path / "lab"
    lab_dir.mkdir()
    bad, says = BAD_EXPERIMENT_ARGS[name]
    assert main(["--lab-dir", str(lab_dir), "experiment", name, *bad]) == 2
    assert says in capsys.readouterr().err
    assert list(lab_dir.iterdir()) == []
