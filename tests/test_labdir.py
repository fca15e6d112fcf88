"""The lab owns only what it made: marked directories, marked processes, and nothing else.

Each incident of issue 10 is reproduced here as it happened (a folder of one's own files, a
process working inside it) and shown refused; then the same on a real lab, which `down` stops
without touching anything it did not make.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

import labkit as lk
from labkit import _labdir
from labkit._proc import ServiceError, listening, service_account, spawn, sweep

REPO = Path(__file__).resolve().parents[1]


def _labkit(*args: str, lab_dir: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "LABKIT_LAB_DIR": str(lab_dir)}
    return subprocess.run([sys.executable, "-m", "labkit.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=cwd)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def my_folder():
    """A folder of a user's own files, that never held a lab."""
    folder = Path(tempfile.mkdtemp(prefix="labkit-mine-", dir="/tmp"))
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "photos").mkdir()
    (folder / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "work").mkdir()
    yield folder
    import shutil
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def bystander():
    """Start an unrelated process; returns a function taking its working directory."""
    started: list[subprocess.Popen] = []

    def start(cwd: Path) -> subprocess.Popen:
        p = subprocess.Popen(["sleep", "600"], cwd=cwd)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()
        p.wait()


# --------------------------------------------------------------------- the two incidents

def test_purge_of_a_folder_of_my_own_files_is_refused_and_deletes_nothing(my_folder):
    before = _snapshot(my_folder)
    out = _labkit("down", "--purge", lab_dir=my_folder)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "deleted" not in out.stdout
    assert f"refusing to delete the data of {my_folder}" in out.stderr
    assert ".labkit-lab marker" in out.stderr and "LABKIT_LAB_DIR" in out.stderr
    assert "notes.txt" in out.stderr  # it says what it found there
    assert _snapshot(my_folder) == before  # not even a lock file was added


def test_down_on_a_folder_of_my_own_files_kills_nothing(my_folder, bystander):
    shell = bystander(my_folder / "work")
    out = _labkit("down", lab_dir=my_folder)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"refusing to stop the processes of {my_folder}" in out.stderr
    assert "Nothing was stopped or deleted" in out.stderr
    assert shell.poll() is None, "an unrelated process was killed"
    with pytest.raises(ServiceError, match="not a lab directory"):
        lk.down(lab_dir=my_folder)
    with pytest.raises(ServiceError, match="no lab marker"):
        sweep(my_folder)
    assert shell.poll() is None


@pytest.mark.slow
def test_down_of_a_real_lab_stops_its_servers_and_spares_a_process_working_inside(
        fresh_lab_dir, bystander):
    lab = lk.up(lab_dir=fresh_lab_dir, services=("memcached",))
    host, port = lab.cache_servers[0]
    shell = bystander(lab.memcached[0].workdir)
    # No state file: everything `down` stops, it finds by the lab's marker (the sweep).
    lab.config.state_file.unlink()
    report = lk.down(lab_dir=fresh_lab_dir)
    assert report.swept == [lab.memcached[0].procs[0].pid]
    assert not listening(host, port)
    assert shell.poll() is None, "the sweep killed a process only because it worked in the lab dir"


# --------------------------------------------------------------- what purge deletes

@pytest.mark.slow
def test_purge_deletes_only_what_the_lab_made(fresh_lab_dir):
    lk.up(lab_dir=fresh_lab_dir, services=("memcached",))
    (fresh_lab_dir / "notes.txt").write_text("mine\n")
    (fresh_lab_dir / "mine").mkdir()
    report = lk.down(lab_dir=fresh_lab_dir, purge=True)
    assert set(report.deleted) == {"memcached-0", "secrets.json"}  # state.json went at down
    assert sorted(report.kept) == ["mine", "notes.txt"]
    assert sorted(p.name for p in fresh_lab_dir.iterdir()) == [".labkit-lab", "lock", "mine",
                                                                "notes.txt"]
    assert "left in place (the lab did not make them): mine, notes.txt" in report.lines()


def test_helpers_spawned_in_a_lab_carry_its_marker_and_are_recorded(fresh_lab_dir):
    from labkit.services.memcached import Memcached
    lab_id = _labdir.read_marker(fresh_lab_dir).lab_id
    helper = spawn("helper", ["sleep", "600"], cwd=fresh_lab_dir,
                   log_path=fresh_lab_dir / "helper.log", user=None)
    try:
        env = psutil.Process(helper.pid).environ()
        assert env["LABKIT_LAB_ID"] == lab_id and env["LABKIT_PROCESS"] == "helper"
    finally:
        helper.stop()
    mc = Memcached(fresh_lab_dir / "nb03-extra" / "mc", port=0,  # as a notebook might
                   user=service_account("labkit"))
    with mc:
        assert psutil.Process(mc.procs[0].pid).environ()["LABKIT_LAB_ID"] == lab_id
    assert "nb03-extra" in _labdir.read_marker(fresh_lab_dir).owns


# ----------------------------------------------------------------- taking a directory

def test_up_refuses_a_folder_of_my_own_files(my_folder):
    before = _snapshot(my_folder)
    with pytest.raises(ServiceError) as e:
        lk.up(lab_dir=my_folder, services=("memcached",))
    msg = str(e.value)
    assert f"refusing to start a lab in {my_folder}" in msg and "notes.txt" in msg
    assert "new or empty directory" in msg
    assert _snapshot(my_folder) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="modes matter when the servers run as another account")
def test_a_new_lab_dir_is_made_0755_and_an_existing_one_is_never_chmodded():
    base = Path(tempfile.mkdtemp(prefix="labkit-modes-", dir="/tmp"))
    base.chmod(0o755)
    try:
        new = base / "a" / "lab"
        made = _labdir.claim(new, user="labkit")
        assert made and stat.S_IMODE(new.stat().st_mode) == 0o755
        assert stat.S_IMODE((base / "a").stat().st_mode) == 0o755
        private = base / "private"
        private.mkdir(mode=0o700)
        private.chmod(0o700)
        with pytest.raises(ServiceError) as e:
            lk.up(lab_dir=private, services=("memcached",))
        assert f"chmod o+x {private}" in str(e.value) and "cannot enter" in str(e.value)
        assert stat.S_IMODE(private.stat().st_mode) == 0o700  # untouched
        assert not (private / ".labkit-lab").exists()
    finally:
        import shutil
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_an_empty_dir_becomes_a_lab_at_up(fresh_lab_dir):
    empty = fresh_lab_dir / "empty"
    empty.mkdir(mode=0o755)
    empty.chmod(0o755)
    assert lk.down(lab_dir=empty).nothing  # nothing of a lab yet: a no-op
    lab = lk.up(lab_dir=empty, services=("memcached",))
    marker = _labdir.read_marker(empty)
    assert marker is not None and not marker.made_dir and "memcached-0" in marker.owns
    assert lab.memcached[0].ready()
    lk.down(lab_dir=empty, purge=True)


def test_a_lab_made_before_markers_is_adopted_with_only_its_own_names(fresh_lab_dir):
    old = fresh_lab_dir / "old"
    old.mkdir()
    (old / "secrets.json").write_text(json.dumps({"pg_password": "x", "mq_vhost": "lab"}))
    (old / "memcached-0").mkdir()
    (old / "lock").touch()
    (old / "my-notes.txt").write_text("mine\n")
    lab_id = _labdir.for_down(old, purge=True)
    marker = _labdir.read_marker(old)
    assert marker.lab_id == lab_id and "memcached-0" in marker.owns
    assert "my-notes.txt" not in marker.owns
    assert _labdir.purge(old) == (["memcached-0", "secrets.json"], ["my-notes.txt"])


# ----------------------------------------------------------- directories never touched

def test_down_of_a_dir_that_never_held_a_lab_is_a_harmless_no_op(fresh_lab_dir):
    missing = fresh_lab_dir / "never-made"
    out = _labkit("down", "--purge", lab_dir=missing)
    assert out.returncode == 0, out.stderr
    assert f"no lab in {missing} (it does not exist)" in out.stdout
    assert not missing.exists()
    empty = fresh_lab_dir / "empty"
    empty.mkdir()
    out = _labkit("down", lab_dir=empty)
    assert out.returncode == 0 and "nothing to stop" in out.stdout, out.stdout + out.stderr
    assert list(empty.iterdir()) == []  # no lock file left behind


@pytest.mark.parametrize("where", ["root", "home", "cwd", "checkout"])
def test_down_refuses_root_a_home_the_working_directory_and_the_checkout(
        where, fresh_lab_dir, monkeypatch):
    if where == "root":
        lab_dir, words = Path("/"), "it is the root directory"
    elif where == "home":
        lab_dir, words = Path.home(), "home directory"
    elif where == "cwd":  # even a real lab's directory, while we work inside it
        lab_dir, words = fresh_lab_dir, "it holds the current directory"
        (fresh_lab_dir / "sub").mkdir()
        monkeypatch.chdir(fresh_lab_dir / "sub")
    else:
        lab_dir, words = REPO.parent, "it holds the labkit checkout"
    for purge in (False, True):
        with pytest.raises(ServiceError, match=words) as e:
            lk.down(lab_dir=lab_dir, purge=purge)
        assert str(lab_dir) in str(e.value) and "Nothing was changed" in str(e.value)
    if where != "cwd":
        with pytest.raises(ServiceError, match=words):
            lk.up(lab_dir=lab_dir, services=("memcached",))
