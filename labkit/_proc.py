"""Process plumbing shared by every native service: ports, accounts, spawn, stop, sweep.

Servers start in a session of their own so they outlive the process that started them (a
notebook kernel that restarts, a CLI call that ends). Each is remembered by pid *and* start
time, so a later ``down`` from any process never signals a pid the OS has reused.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import psutil


# Set in every server's environment (and so inherited by whatever it spawns) to find strays.
SERVER_DIR_ENV = "LABKIT_SERVER_DIR"


class ServiceError(RuntimeError):
    """A server could not be started, reached or stopped; the message says what to do."""


# ---------------------------------------------------------------------------------- ports

def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class PortAllocator:
    """Hands out free TCP ports on one host: from ``base`` upwards (skipping busy ones), or any."""

    def __init__(self, host: str, base: int = 0) -> None:
        self.host, self.next, self.given = host, base, set()

    def take(self) -> int:
        if not self.next:
            while True:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind((self.host, 0))
                    port = s.getsockname()[1]
                if port not in self.given:
                    self.given.add(port)
                    return port
        while self.next < 65535:
            port, self.next = self.next, self.next + 1
            if port not in self.given and port_is_free(self.host, port):
                self.given.add(port)
                return port
        raise ServiceError(f"no free port above {self.next} on {self.host}; set port_base lower or 0")


def listening(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


# ------------------------------------------------------------------------------ accounts

def service_account(user: str) -> str | None:
    """The account servers run under: ``user`` when we are root (created if missing), else None."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(user)
    except KeyError:
        useradd = shutil.which("useradd")
        if not useradd:
            raise ServiceError(
                f"running as root, the servers need an unprivileged account {user!r}; create it "
                f"(e.g. `useradd --system {user}`) or run labkit as an ordinary user"
            ) from None
        subprocess.run([useradd, "--system", "--no-create-home", "--user-group",
                        "--shell", "/usr/sbin/nologin", user], check=False,
                       capture_output=True)
        pwd.getpwnam(user)  # raises KeyError with the name if creation failed
    return user


def own(path: Path, user: str | None) -> None:
    """Give ``path`` (recursively) to ``user``; a no-op when not root."""
    if user is None:
        return
    for p in [path, *path.rglob("*")]:
        shutil.chown(p, user, user)


def check_reachable(path: Path, user: str | None) -> None:
    """Fail early, with the fix, when ``user`` cannot traverse to ``path``."""
    if user is None:
        return
    for parent in [*reversed(path.parents)]:
        if parent.exists() and not os.stat(parent).st_mode & 0o001:
            raise ServiceError(
                f"the lab directory {path} is inside {parent}, which the unprivileged account "
                f"{user!r} cannot enter; use a lab_dir outside it, e.g. "
                f"LABKIT_LAB_DIR=/var/lib/labkit/lab (the default when running as root)"
            )


def _demote(user: str | None) -> dict:
    if user is None:
        return {}
    pw = pwd.getpwnam(user)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


# ------------------------------------------------------------------------------ processes

@dataclass(frozen=True)
class Proc:
    """A server process we started, by pid and start time (robust to pid reuse)."""

    name: str
    pid: int
    create_time: float

    def process(self) -> psutil.Process | None:
        try:
            p = psutil.Process(self.pid)
            if abs(p.create_time() - self.create_time) > 0.05 or p.status() == psutil.STATUS_ZOMBIE:
                return None
            return p
        except psutil.Error:
            return None

    def alive(self) -> bool:
        return self.process() is not None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> None:
        """Send ``sig``, wait, then SIGKILL whatever is left of the process and its children."""
        p = self.process()
        if p is None:
            return
        try:
            family = [p, *p.children(recursive=True)]
        except psutil.Error:
            family = [p]
        _signal_all([p], sig)
        # A paused (SIGSTOPped) server cannot act on the signal until it is continued.
        _signal_all([p], signal.SIGCONT)
        psutil.wait_procs(family[:1], timeout=timeout_s)
        _signal_all(family, signal.SIGKILL)
        psutil.wait_procs(family, timeout=5)

    def to_dict(self) -> dict:
        return {"name": self.name, "pid": self.pid, "create_time": self.create_time}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Proc":
        return cls(d["name"], int(d["pid"]), float(d["create_time"]))


def _signal_all(procs: Iterable[psutil.Process], sig: int) -> None:
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass


def spawn(name: str, cmd: list[str], *, cwd: Path, log_path: Path, user: str | None,
          env: Mapping[str, str] | None = None) -> Proc:
    """Start ``cmd`` as a detached server (own session, stdout/stderr to ``log_path``)."""
    exe = cmd[0]
    if not (Path(exe).exists() or shutil.which(exe)):
        raise ServiceError(f"{exe} not found; {install_hint(name)}")
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
                "LC_ALL": "C.UTF-8", SERVER_DIR_ENV: str(cwd.resolve()), **(env or {})}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        own(log_path, user)
        popen = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                 close_fds=True, **_demote(user))
    try:
        create_time = psutil.Process(popen.pid).create_time()
    except psutil.Error:
        create_time = 0.0
    # The child is detached on purpose: nothing here waits for it, so keep Python from warning.
    popen.returncode = 0
    return Proc(name, popen.pid, create_time)


def run(cmd: list[str], *, user: str | None, env: Mapping[str, str] | None = None,
        cwd: Path | None = None, what: str = "", timeout_s: float = 120) -> str:
    """Run a setup command (initdb, pg_basebackup) to completion; raise with its output."""
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
                "LC_ALL": "C.UTF-8", **(env or {})}
    try:
        out = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True,
                             timeout=timeout_s, **_demote(user))
    except FileNotFoundError:
        raise ServiceError(f"{cmd[0]} not found; {install_hint(what or cmd[0])}") from None
    if out.returncode != 0:
        raise ServiceError(f"{what or cmd[0]} failed (exit {out.returncode}):\n"
                           f"{(out.stdout + out.stderr).strip()[-2000:]}")
    return out.stdout


def wait_ready(what: str, check: Callable[[], bool], *, timeout_s: float,
               procs: Iterable[Proc] = (), log_path: Path | None = None) -> float:
    """Poll ``check`` (a real protocol round trip) until it passes; return the seconds waited.

    Fails fast, with the server's log tail, when one of ``procs`` dies while we wait.
    """
    t0 = time.monotonic()
    delay = 0.02
    while True:
        try:
            if check():
                return time.monotonic() - t0
        except Exception:  # not ready yet: connection refused, starting up, ...
            pass
        dead = [p for p in procs if not p.alive()]
        if dead or time.monotonic() - t0 > timeout_s:
            why = f"{dead[0].name} exited" if dead else f"not ready after {timeout_s:.0f} s"
            raise ServiceError(f"{what}: {why}.{log_tail(log_path)}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def log_tail(log_path: Path | None, lines: int = 15) -> str:
    if log_path is None or not log_path.exists():
        return ""
    tail = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"\nLast lines of {log_path}:\n  " + "\n  ".join(tail)


def sweep(lab_dir: Path) -> list[int]:
    """Kill every process left over from ``lab_dir``'s servers.

    The safety net behind ``down``: it finds servers whose state was lost (the starter was
    killed before writing it) and helpers that daemonized away from their parent (epmd,
    erl_child_setup). A process belongs to the lab when its working directory is inside
    ``lab_dir`` or it inherited the ``LABKIT_SERVER_DIR`` marker that ``spawn`` sets.
    """
    root = str(lab_dir.resolve())

    def inside(path: str) -> bool:
        return path == root or path.startswith(root + os.sep)

    found = []
    for p in psutil.process_iter(["pid", "cwd"]):
        if p.pid == os.getpid():
            continue
        try:
            mine = inside(p.info.get("cwd") or "") or inside(p.environ().get(SERVER_DIR_ENV, ""))
        except psutil.Error:  # gone, or another user's process we may not look into
            continue
        if mine:
            found.append(p)
    _signal_all(found, signal.SIGCONT)
    _signal_all(found, signal.SIGKILL)
    psutil.wait_procs(found, timeout=5)
    return [p.pid for p in found]


# -------------------------------------------------------------------------- install hints

_PACKAGES = {
    # what: (Debian/Ubuntu package, Homebrew formula)
    "postgres": ("postgresql-15 postgresql-contrib", "postgresql@15"),
    "memcached": ("memcached", "memcached"),
    "rabbitmq": ("rabbitmq-server", "rabbitmq"),
    "epmd": ("erlang-base", "erlang"),
    "java": ("openjdk-17-jre-headless", "openjdk@17"),
    "maven": ("maven", "maven"),
    "haproxy": ("haproxy", "haproxy"),
}


def package_for(what: str) -> tuple[str, str]:
    for key, pkgs in _PACKAGES.items():
        if key in what:
            return pkgs
    return (what, what)


def install_hint(what: str) -> str:
    deb, brew = package_for(what)
    return (f"install it with `sudo apt-get install -y {deb}` (Debian/Ubuntu) or "
            f"`brew install {brew}` (macOS), or run `labkit doctor`")
