"""Process plumbing shared by every native service: ports, accounts, spawn, stop, sweep.

Servers start in a session of their own so they outlive the process that started them (a
notebook kernel that restarts, a CLI call that ends). Each is remembered by pid *and* start
time, so a later ``down`` from any process never signals a pid the OS has reused. Each also
carries its lab's id in its environment (``LABKIT_LAB_ID``, inherited by whatever it starts),
which is how the sweep finds strays: by that marker only, never by a working directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import psutil


def new_password(nbytes: int = 18) -> str:
    """A fresh random password, safe as a command-line argument and in SQL and URL literals.

    URL-safe base64 (no quote, no slash); never starting with ``-``, which ``rabbitmqctl
    add_user``, ``cqlsh -p`` and ``nodetool -pw`` would read as an option (1 in 64 of plain
    ``token_urlsafe`` values did).
    """
    while True:
        password = secrets.token_urlsafe(nbytes)
        if not password.startswith("-"):
            return password


# Set in every spawned process's environment, and so inherited by whatever it starts: the id
# of the lab whose directory holds its working directory (what the sweep and `reset` match),
# the name it was spawned under (a server's, or a helper's), and its working directory.
LAB_ID_ENV = "LABKIT_LAB_ID"
PROCESS_ENV = "LABKIT_PROCESS"
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
    """Fail early, with the fix, when ``user`` cannot traverse to ``path`` (and into it).

    Never changes a mode itself: the directories on the way are not the lab's.
    """
    if user is None:
        return
    for d in [*reversed(path.parents), path]:
        if d.exists() and not os.stat(d).st_mode & 0o001:
            raise ServiceError(
                f"the unprivileged account {user!r} that runs the servers cannot enter {d} "
                f"(mode {os.stat(d).st_mode & 0o777:o}), on the way to the lab directory {path}; "
                f"labkit never changes the mode of a directory it did not create. Fix: "
                f"`chmod o+x {d}`, or use a lab_dir that labkit creates itself, e.g. "
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
            if abs(p.create_time() - self.create_time) > 0.05 or _ended(p):
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
        wait_gone(family[:1], timeout_s)
        _signal_all(family, signal.SIGKILL)
        wait_gone(family, 5)

    def to_dict(self) -> dict:
        return {"name": self.name, "pid": self.pid, "create_time": self.create_time}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Proc":
        return cls(d["name"], int(d["pid"]), float(d["create_time"]))


def _ended(p: psutil.Process) -> bool:
    """Gone, or a zombie all of whose threads have ended too.

    On Linux the first thread of a process shows as a zombie as soon as it exits, while the
    others may still run (a JVM's shutdown hooks, holding its ports): only when every thread
    of ``/proc/<pid>/task`` is a zombie or dead is the process over.
    """
    try:
        if not p.is_running():
            return True
        if p.status() != psutil.STATUS_ZOMBIE:
            return False
    except psutil.Error:
        return True
    tasks = Path(f"/proc/{p.pid}/task")
    try:
        states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in tasks.iterdir()]
    except (OSError, IndexError):  # gone meanwhile, or no /proc (macOS: a zombie is over)
        return True
    return all(state in ("Z", "X") for state in states)


def wait_gone(procs: Iterable[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until each of ``procs`` has ended (at most ``timeout_s``); those still running.

    Ended includes a zombie: a server another process started (a notebook's kernel, a test
    session) stays a zombie until that parent reaps it, which ``psutil.wait_procs`` would wait
    out to its timeout (``labkit down`` from a terminal took 20 s per process that way).
    """
    procs = list(procs)
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in procs if not _ended(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        for p in alive:  # reaps our own children at once; a no-op for anyone else's
            with contextlib.suppress(psutil.Error):
                p.wait(timeout=0)
        time.sleep(0.02)


def _signal_all(procs: Iterable[psutil.Process], sig: int) -> None:
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass


def process_env(name: str, cwd: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment of a server process of ours (nothing inherited but ``PATH``).

    Its name and directory, and when ``cwd`` is inside a lab directory that lab's marker
    (``LABKIT_LAB_ID``), so ``down`` finds it, and anything it starts, even after a crash.
    """
    from labkit._labdir import find_lab  # (_labdir imports this module)
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
                "LC_ALL": "C.UTF-8", SERVER_DIR_ENV: str(cwd.resolve()), PROCESS_ENV: name,
                **(env or {})}
    lab = find_lab(cwd)
    if lab is not None:
        full_env[LAB_ID_ENV] = lab[1].lab_id
    return full_env


def spawn(name: str, cmd: list[str], *, cwd: Path, log_path: Path, user: str | None,
          env: Mapping[str, str] | None = None) -> Proc:
    """Start ``cmd`` as a detached server (own session, stdout/stderr to ``log_path``), in
    the environment of ``process_env``."""
    exe = cmd[0]
    if not (Path(exe).exists() or shutil.which(exe)):
        raise ServiceError(f"{exe} not found; {install_hint(name)}")
    full_env = process_env(name, cwd, env)
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

    Fails fast, with the server's log tail, when one of ``procs`` dies while we wait, and at
    once when ``check`` raises ServiceError (it knows that waiting cannot help).
    """
    t0 = time.monotonic()
    delay = 0.02
    last = ""
    while True:
        try:
            if check():
                return time.monotonic() - t0
        except ServiceError:
            raise
        except Exception as e:  # not ready yet: connection refused, starting up, ...
            last = f" (last: {type(e).__name__}: {str(e).strip()[:300]})"
        dead = [p for p in procs if not p.alive()]
        if dead or time.monotonic() - t0 > timeout_s:
            why = f"{dead[0].name} exited" if dead else f"not ready after {timeout_s:.0f} s{last}"
            raise ServiceError(f"{what}: {why}.{log_tail(log_path)}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def log_tail(log_path: Path | None, lines: int = 15) -> str:
    if log_path is None or not log_path.exists():
        return ""
    tail = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"\nLast lines of {log_path}:\n  " + "\n  ".join(tail)


def marked_processes(lab_id: str) -> list[psutil.Process]:
    """Every process that carries ``LABKIT_LAB_ID=<lab_id>`` (but never this one or its parents).

    The marker is set by ``spawn`` and inherited, so servers, helpers and what they started
    (epmd daemonized by Erlang, erl_child_setup, gunicorn workers) all carry it.
    """
    me = psutil.Process()
    spared = {me.pid, *(p.pid for p in me.parents())}
    found = []
    for p in psutil.process_iter():
        if p.pid in spared:
            continue
        try:
            if p.environ().get(LAB_ID_ENV) == lab_id:
                found.append(p)
        except psutil.Error:  # gone, or another user's process we may not look into
            continue
    return found


def sweep(lab_dir: Path) -> list[int]:
    """Kill every process left over from ``lab_dir``'s lab; return their pids.

    The safety net behind ``down``: it finds servers whose state was lost (the starter was
    killed before writing it, the state file is damaged) and helpers that daemonized away
    from their parent (epmd, erl_child_setup). A process belongs to the lab only when it
    carries the lab's marker (``LABKIT_LAB_ID``, the id in ``lab_dir``'s marker file); a
    working directory inside ``lab_dir`` proves nothing (a user's shell may sit there).
    An unmarked ``lab_dir`` is refused.
    """
    from labkit._labdir import MARKER, read_marker  # (_labdir imports this module)
    marker = read_marker(lab_dir)
    if marker is None:
        raise ServiceError(f"refusing to sweep processes of {lab_dir}: it has no lab marker "
                           f"({MARKER}); only a lab directory's own processes are ever stopped")
    # Rounds until none is left: a process caught mid-start (a script about to exec its
    # server, a server forking a helper) can make a marked child after a round's snapshot.
    swept: list[int] = []
    for _ in range(5):
        found = marked_processes(marker.lab_id)
        if not found:
            break
        _signal_all(found, signal.SIGCONT)
        _signal_all(found, signal.SIGKILL)
        wait_gone(found, 5)
        swept += [p.pid for p in found if p.pid not in swept]
    return swept


def stop_all(procs: list[psutil.Process], timeout_s: float = 10.0) -> None:
    """SIGTERM ``procs`` (continuing paused ones), then SIGKILL what is left after ``timeout_s``."""
    _signal_all(procs, signal.SIGTERM)
    _signal_all(procs, signal.SIGCONT)
    alive = wait_gone(procs, timeout_s)
    _signal_all(alive, signal.SIGKILL)
    wait_gone(alive, 5)


# -------------------------------------------------------------------------- install hints

_PACKAGES = {
    # what: (Debian/Ubuntu package, Homebrew formula)
    "postgres": ("postgresql-15 postgresql-contrib", "postgresql@15"),
    "memcached": ("memcached", "memcached"),
    "rabbitmq": ("rabbitmq-server", "rabbitmq"),
    "epmd": ("erlang-base", "erlang"),
    "java": ("openjdk-17-jre-headless", "openjdk@17"),
    "maven": ("maven", "maven"),
    "bwrap": ("bubblewrap", "bubblewrap"),
    "socat": ("socat", "socat"),
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


class BackgroundLoop:
    """A context manager that runs ``self._loop()`` in a daemon thread until it exits.

    ``_loop`` watches ``self._stop`` (a ``threading.Event``) and returns once it is set; the
    exit sets it and joins the thread. Samplers and fault injectors (nemeses) are built on it.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()

    def _loop(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
