"""Lab lifecycle on real servers: reattach, down after kill -9, ports, loopback, errors."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import labkit as lk
from labkit import _labdir
from labkit._proc import PortAllocator, ServiceError, listening
from labkit.config import LabConfig


def _describe(pids: list[int]) -> list[str]:
    """pid, name and command line of each process (for a failure message)."""
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            out.append(f"{pid} {p.name()} {' '.join(p.cmdline())[:200]}")
        except psutil.Error as e:
            out.append(f"{pid} ({type(e).__name__})")
    return out


def _lab_pids(lab_dir: Path) -> list[int]:
    """Processes of the lab: carrying its marker, or spawned in (or working inside) its dir.

    Wider than what `down` matches (the marker only), so a leftover shows up here either way.
    """
    root = str(lab_dir.resolve())
    lab_id = _labdir.read_marker(lab_dir).lab_id
    out = []
    for p in psutil.process_iter(["cwd"]):
        try:
            env = p.environ()
            marks = [p.info.get("cwd") or "", env.get("LABKIT_SERVER_DIR", "")]
        except psutil.Error:
            continue
        if env.get("LABKIT_LAB_ID") == lab_id or any(
                m == root or m.startswith(root + os.sep) for m in marks):
            out.append(p.pid)
    return out


def _recorded_ports(state: dict) -> list[int]:
    """Ports of the servers the state file says were started (not those merely allotted)."""
    svc = state["services"]
    servers = [*svc.get("postgres", {}).get("servers", []), *svc.get("memcached", [])]
    if "rabbitmq" in svc:
        servers.append(svc["rabbitmq"])
    ports = []
    for s in servers:
        if s.get("procs"):
            ports += [s[k] for k in ("port", "dist_port", "epmd_port") if k in s]
    return ports


def test_up_is_idempotent_and_reattaches_from_another_process(lab):
    again = lk.up()
    assert again.leader.port == lab.leader.port and again.broker_url == lab.broker_url
    code = ("import labkit as lk, json; lab = lk.attach(); "
            "print(json.dumps([lab.leader.port, lab.cache_servers[0][1], lab.broker_url, "
            "lab.leader.execute('SELECT 40 + 2')[0][0]]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [lab.leader.port, lab.cache_servers[0][1], lab.broker_url, 42]


def test_every_server_is_healthy(lab):
    rows = lab.health()
    assert {r["name"] for r in rows} >= {"postgres-leader", "postgres-follower1", "memcached-0",
                                         "rabbitmq"}
    assert all(r["ok"] for r in rows), rows
    assert [r for r in rows if r["name"] == "postgres-leader"][0]["version"].startswith("15.")


def test_no_server_listens_on_a_non_loopback_address(lab):
    pids = set(_lab_pids(lab.config.lab_dir))
    for pid in list(pids):
        try:
            pids.update(c.pid for c in psutil.Process(pid).children(recursive=True))
        except psutil.Error:
            pass
    listens = [c for c in psutil.net_connections("inet")
               if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert listens, "found no listening sockets of the lab at all"
    # Any loopback address: Cassandra nodes have their own (127.0.0.2, .3, ...).
    outside = [c for c in listens if not ipaddress.ip_address(c.laddr.ip).is_loopback]
    assert not outside, outside


def test_state_file_is_private(lab):
    assert lab.config.state_file.stat().st_mode & 0o077 == 0
    assert (lab.config.lab_dir / "secrets.json").stat().st_mode & 0o077 == 0


def test_port_allocator_skips_a_taken_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        alloc = PortAllocator("127.0.0.1", base=port)
        assert alloc.take() != port
        assert alloc.take() != port


@pytest.mark.slow
def test_taken_port_is_skipped_by_a_real_lab(fresh_lab_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        lab = lk.up(lab_dir=fresh_lab_dir, services=("memcached",), memcached_instances=2,
                    port_base=port)
        ports = [p for _, p in lab.cache_servers]
        assert port not in ports and all(p > port for p in ports)
        assert lab.memcached[0].ready() and lab.memcached[1].ready()


def test_missing_binary_names_the_fix(fresh_lab_dir):
    cfg = LabConfig.load(lab_dir=fresh_lab_dir, services=("memcached",),
                         memcached_bin="/nonexistent/memcached")
    with pytest.raises(ServiceError) as e:
        lk.up(cfg)
    msg = str(e.value)
    assert "not found" in msg and "apt-get install -y memcached" in msg
    assert "brew install memcached" in msg and "labkit doctor" in msg


def test_attach_without_a_lab_says_how_to_start_one(fresh_lab_dir):
    with pytest.raises(ServiceError, match="labkit up"):
        lk.attach(lab_dir=fresh_lab_dir)


STARTER = """
import sys, labkit as lk
lab = lk.up(lab_dir=sys.argv[1], followers=1)
print("UP", flush=True)
import time; time.sleep(600)
"""


def _start_and_kill(lab_dir: Path, after: str) -> dict:
    """Start a lab in a child process, SIGKILL the child, return the state it left."""
    child = subprocess.Popen([sys.executable, "-c", STARTER, str(lab_dir)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        if after == "up":
            assert child.stdout.readline().strip() == "UP"
        else:  # mid-start: PostgreSQL is up, RabbitMQ is still booting
            deadline = time.monotonic() + 60
            while not (lab_dir / "state.json").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    state_file = lab_dir / "state.json"
    return json.loads(state_file.read_text()) if state_file.exists() else {"services": {}}


@pytest.mark.slow
@pytest.mark.parametrize("after", ["up", "mid-start"])
def test_down_after_kill_9_of_the_starter(fresh_lab_dir, after):
    state = _start_and_kill(fresh_lab_dir, after)
    assert _lab_pids(fresh_lab_dir), "the servers should outlive their starter"
    if after == "up":  # a fresh process reattaches to the orphaned servers
        lab = lk.attach(lab_dir=fresh_lab_dir)
        assert all(r["ok"] for r in lab.health())
    ports = _recorded_ports(state)
    lk.down(lab_dir=fresh_lab_dir)
    time.sleep(0.2)
    left = _lab_pids(fresh_lab_dir)
    assert left == [], _describe(left)
    still = [p for p in ports if listening("127.0.0.1", p)]
    assert still == [], (still, subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout)
    assert not any(p.info["name"] in ("beam.smp", "epmd", "postgres", "memcached")
                   and str(fresh_lab_dir) in " ".join(p.info["cmdline"] or [])
                   for p in psutil.process_iter(["name", "cmdline"]))


# ------------------------------------------------------------------ a damaged state file

def _labkit(lab_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labkit.cli", "--lab-dir", str(lab_dir), *args],
                          capture_output=True, text=True, timeout=120)


DAMAGES = {
    "truncated": lambda text: text[: len(text) // 2],
    "empty": lambda text: "",
    "not json": lambda text: "\x00\x00garbage",
    "wrong shape": lambda text: json.dumps({"version": 1, "services": {"memcached": [{"x": 1}]}}),
    "other version": lambda text: json.dumps({**json.loads(text), "version": 99}),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_down_recovers_from_a_damaged_state_file(fresh_lab_dir, damage):
    lab = lk.up(lab_dir=fresh_lab_dir, services=("memcached",))
    host, port = lab.cache_servers[0]
    pid = lab.memcached[0].procs[0].pid
    state = fresh_lab_dir / "state.json"
    state.write_text(DAMAGES[damage](state.read_text()))
    for command, code in (("status", 1), ("up", 2), ("env", 1)):
        out = _labkit(fresh_lab_dir, command)
        assert out.returncode == code, (command, out.stdout, out.stderr)
        msg = out.stdout + out.stderr
        assert "state file" in msg and "damaged" in msg and "Fix: run `labkit down`" in msg, msg
        assert "Traceback" not in msg
    out = _labkit(fresh_lab_dir, "down")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "state.json is damaged" in out.stdout and f"pid {pid}" in out.stdout, out.stdout
    assert "stopped instead every process carrying this lab's marker" in out.stdout
    assert "run `labkit down`" not in out.stdout + out.stderr  # no advice to do what it just did
    assert not listening(host, port) and not _alive(pid)
    assert not state.exists()
    assert _lab_pids(fresh_lab_dir) == []
    assert lk.up(lab_dir=fresh_lab_dir, services=("memcached",)).memcached[0].ready()


def _alive(pid: int) -> bool:
    try:  # a server this test process started stays a zombie until reaped: that is gone
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_state_is_written_with_fsync_before_the_rename(tmp_path, monkeypatch):
    from labkit import _state
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(
        f"/proc/self/fd/{fd}"))), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))),
                                                      real_replace(a, b))[1])
    target = tmp_path / "state.json"
    _state.write_private(target, {"version": 1, "services": {}})
    assert events == [("fsync", str(tmp_path / "state.json.tmp")),
                      ("replace", str(target)), ("fsync", str(tmp_path))]
    assert json.loads(target.read_text()) == {"version": 1, "services": {}}
    assert target.stat().st_mode & 0o077 == 0
