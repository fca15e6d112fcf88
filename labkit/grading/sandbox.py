"""One submission's confinement: bubblewrap namespaces, a cgroup, and forwarders to its servers.

A graded kernel runs under bubblewrap (``bwrap``, Debian's ``bubblewrap``), started as root
and dropped to the unprivileged account ``labkit-student`` (``setpriv``, no capabilities,
``no_new_privs``) inside:

- **a filesystem of its own**: ``/usr``, ``/etc``, the Python installation and the ``labkit``
  package, read-only; a private ``/tmp`` (its home and scratch disk: a tmpfs of
  ``Limits.disk_mb``); nothing else. The lab directory (credentials), ``solutions/`` (hidden
  tests), ``.git``, the grader's output and other submissions' files are not there at all;
- **a network namespace with only loopback**: each server the submission may use is reached
  through a forwarder: ``socat`` inside listens on that server's own address (127.0.0.1:PORT
  is free in a fresh namespace) and connects to a unix socket bound in from outside, where a
  second ``socat`` run by the grader connects to the real server. No other port of the host
  (Cassandra, RabbitMQ, other submissions' servers, the lab's memcached) can be reached;
- **a PID, IPC and UTS namespace**, and ``--die-with-parent``;
- **a cgroup** (``labkit.grading.cgroups``): at most ``Limits.pids`` processes (fork bombs),
  ``Limits.memory_mb`` of memory (tmpfs included), ``Limits.cpus`` cores; the grader reads its
  CPU seconds and kills the whole group when the budget is spent or the wall clock runs out.

bubblewrap does the namespace and mount work better than the hand-written mount code this
module used to hold (``--die-with-parent``, a filesystem built from nothing rather than
pieces hidden behind mounts, a size-limited tmpfs, loopback set up in the new network
namespace). It does not do cgroups, hence ``cgroups.py``.

Where any of that is missing (not root, no ``bwrap``/``socat``, no usable cgroup), ``probe()``
says what, and ``labkit grade`` refuses unless ``--insecure`` is given: then the kernel runs
as a plain child process with the per-process limits only.

The kernel talks to the grader over unix sockets (ZeroMQ ``ipc``) in the sandbox's own
``/run/lk`` tmpfs, which the grader reaches from outside as ``/proc/<pid>/root/run/lk``.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import select
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit._proc import service_account
from labkit.grading.cgroups import Cgroup, CgroupError

STUDENT_ACCOUNT = "labkit-student"
LAUNCH = Path(__file__).with_name("launch.py")
INSIDE_RUN = "/run/lk"          # the kernel's tmpfs: ipc sockets
INSIDE_NET = "/run/net"         # forwarders' unix sockets, bound in one by one
INSIDE_CONN = "/run/kernel.json"


@dataclass(frozen=True)
class Limits:
    """Per-submission limits: wall clock per cell/call and overall, CPU, memory, processes, disk."""

    cell_timeout_s: float = 30.0
    submission_timeout_s: float = 300.0
    cpu_s: int = 120
    memory_mb: int = 2048
    startup_timeout_s: float = 60.0
    pids: int = 128
    cpus: float = 1.0
    disk_mb: int = 256
    output_kb: int = 256      # what the grader keeps of one cell's output


# ------------------------------------------------------------------------------- probing

_probe: dict[str, Any] | None = None


def probe() -> dict[str, Any]:
    """What isolation works here: {"ok": bool, "missing": [why...], "found": {what: detail}}.

    Tried for real, once per process: a bwrap sandbox with a new network namespace as the
    student account, socat, and a cgroup with the pids/memory/cpu limits.
    """
    global _probe
    if _probe is not None:
        return _probe
    missing: list[str] = []
    found: dict[str, str] = {}
    if os.geteuid() != 0:
        missing.append("not root: the kernel cannot be run as another account or confined")
    for tool, pkg in (("bwrap", "bubblewrap"), ("socat", "socat"), ("setpriv", "util-linux")):
        path = shutil.which(tool)
        if path:
            found[tool] = path
        else:
            missing.append(f"{tool} not found (apt-get install {pkg}, or bash "
                           "containers/bootstrap.sh)")
    if not missing:
        try:
            uid, gid = student_ids()
            out = subprocess.run(
                ["bwrap", "--unshare-net", "--unshare-pid", "--die-with-parent",
                 *_system_binds(), "--proc", "/proc", "--dev", "/dev", "--",
                 "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                 "--no-new-privs", "--", "cat", "/proc/net/dev"],
                capture_output=True, text=True, timeout=20)
            interfaces = [line.split(":")[0].strip() for line in out.stdout.splitlines()[2:]]
            if out.returncode != 0:
                missing.append(f"bwrap cannot make a sandbox here: {out.stderr.strip()[-300:]}")
            elif interfaces != ["lo"]:
                missing.append(f"bwrap's network namespace has {interfaces}, not only lo")
            else:
                found["bwrap"] += " (mount, pid, net namespaces; only lo)"
        except (OSError, subprocess.TimeoutExpired, KeyError) as e:
            missing.append(f"bwrap could not be run: {e}")
        try:
            cg = Cgroup.create(f"labkit-probe-{secrets.token_hex(3)}", pids_max=8,
                               memory_mb=64, cpus=0.5)
            found["cgroup"] = f"v{cg.version} ({', '.join(str(d) for d in cg.dirs.values())})"
            cg.remove()
        except (CgroupError, OSError) as e:
            missing.append(str(e))
    _probe = {"ok": not missing, "missing": missing, "found": found}
    return _probe


def student_ids() -> tuple[int, int]:
    """(uid, gid) of the unprivileged account graded kernels run as (created when missing)."""
    pw = pwd.getpwnam(service_account(STUDENT_ACCOUNT) or STUDENT_ACCOUNT)
    return pw.pw_uid, pw.pw_gid


def _system_binds() -> list[str]:
    """bwrap arguments for the read-only system: /usr, /etc and the /bin, /lib links or dirs."""
    args = ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    return args


def python_paths() -> list[Path]:
    """What a kernel needs of Python: the installation, the venv, and labkit's own source."""
    import labkit
    paths = [Path(sys.base_prefix), Path(sys.prefix), Path(labkit.__file__).resolve().parent]
    # Keep the outermost of nested paths (a venv inside the repository, labkit beside it).
    paths = sorted({p.resolve() for p in paths}, key=lambda p: len(p.parts))
    out: list[Path] = []
    for p in paths:
        if not any(q == p or q in p.parents for q in out):
            out.append(p)
    return out


# ------------------------------------------------------------------------------ forwarders

@dataclass
class Forward:
    """One server the submission may reach: its address inside, and the unix socket outside."""

    name: str
    host: str
    port: int
    socket: Path               # outside: where the grader's socat (or the server) listens
    outside: tuple[str, int] | None = None   # the real server (None: the socket is the server)


@dataclass
class Sandbox:
    """One submission's confinement; ``start`` launches a command in it.

    ``secure=False`` (``labkit grade --insecure``) runs the command as a plain child process,
    with the per-process limits only.
    """

    run_dir: Path
    limits: Limits
    secure: bool = True
    forwards: list[Forward] = field(default_factory=list)
    cgroup: Cgroup | None = None
    proc: subprocess.Popen | None = None
    root_pid: int | None = None
    infrastructure: set[int] = field(default_factory=set)
    _relays: list[subprocess.Popen] = field(default_factory=list)

    def forward(self, name: str, host: str, port: int) -> Forward:
        """Let the submission reach the server at host:port (the same address inside)."""
        f = Forward(name, host, port, self.run_dir / "net" / f"{name}.sock", (host, port))
        self.forwards.append(f)
        return f

    def serve_socket(self, name: str, socket_path: Path, host: str, port: int) -> Forward:
        """Let the submission reach a server listening on ``socket_path`` as host:port inside."""
        f = Forward(name, host, port, socket_path)
        self.forwards.append(f)
        return f

    # ----------------------------------------------------------------------------- start
    def start(self, argv: list[str], env: dict[str, str], files: dict[str, Path]) -> None:
        """Start ``argv`` confined. ``files``: inside path -> outside file, bound read-only."""
        (self.run_dir / "net").mkdir(parents=True, exist_ok=True)
        (self.run_dir / "net").chmod(0o755)
        if not self.secure:
            self._start_insecure(argv, env)
            return
        self.cgroup = Cgroup.create(f"labkit-{self.run_dir.name}", pids_max=self.limits.pids,
                                    memory_mb=self.limits.memory_mb, cpus=self.limits.cpus)
        for f in self.forwards:
            if f.outside is not None:
                self._relays.append(subprocess.Popen(
                    ["socat", f"UNIX-LISTEN:{f.socket},fork,mode=666,unlink-early",
                     f"TCP:{f.outside[0]}:{f.outside[1]},nodelay"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, start_new_session=True))
        deadline = time.monotonic() + 10
        while not all(f.socket.exists() for f in self.forwards):
            if time.monotonic() > deadline:
                raise RuntimeError("the forwarders to the submission's servers did not start")
            time.sleep(0.005)
        uid, gid = student_ids()
        script = "".join(
            f"socat TCP-LISTEN:{f.port},bind={f.host},fork,reuseaddr "
            f"UNIX-CONNECT:{INSIDE_NET}/{f.name}.sock 2>/dev/null &\n" for f in self.forwards)
        script += 'exec "$@"\n'
        bwrap = ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                 "--unshare-cgroup-try", "--hostname", "grading", "--die-with-parent",
                 "--new-session", *_system_binds(), "--proc", "/proc", "--dev", "/dev",
                 "--perms", "1777", "--size", str(self.limits.disk_mb * 2**20), "--tmpfs", "/tmp",
                 "--perms", "0755", "--dir", "/run",
                 "--perms", "1777", "--size", str(2**20), "--tmpfs", INSIDE_RUN,
                 "--perms", "0755", "--dir", INSIDE_NET]
        for f in self.forwards:
            bwrap += ["--bind", str(f.socket), f"{INSIDE_NET}/{f.name}.sock"]
        made = {Path("/"), Path("/usr"), Path("/etc"), Path("/run"), Path("/tmp")}
        for p in python_paths():
            for parent in reversed(p.parents):
                if parent not in made:
                    bwrap += ["--perms", "0755", "--dir", str(parent)]
                    made.add(parent)
            bwrap += ["--ro-bind", str(p), str(p)]
            made.add(p)
        for inside, outside in files.items():
            bwrap += ["--ro-bind", str(outside), inside]
        info_r, info_w = os.pipe()
        bwrap += ["--chdir", "/tmp", "--info-fd", str(info_w), "--",
                  "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                  "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all", "--",
                  "/bin/sh", "-c", script, "sh", *argv]
        launch = [sys.executable, str(LAUNCH), *(a for f in self.cgroup.procs_files
                                                  for a in ("--cgroup-procs", str(f))),
                  "--cpu-s", str(self.limits.cpu_s), "--memory-mb", str(self.limits.memory_mb * 4),
                  "--fsize-mb", str(self.limits.disk_mb), "--", *bwrap]
        try:
            self.proc = subprocess.Popen(launch, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         pass_fds=(info_w,), start_new_session=True)
        finally:
            os.close(info_w)
        try:
            self.root_pid = _read_child_pid(info_r, self.limits.startup_timeout_s)
        finally:
            os.close(info_r)
        if self.root_pid is None:
            raise RuntimeError("bwrap did not start the sandbox")

    def _start_insecure(self, argv: list[str], env: dict[str, str]) -> None:
        launch = [sys.executable, str(LAUNCH), "--cpu-s", str(self.limits.cpu_s),
                  "--memory-mb", str(self.limits.memory_mb * 4),
                  "--fsize-mb", str(self.limits.disk_mb), "--", *argv]
        home = self.run_dir / "home"
        home.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(launch, env={**env, "HOME": str(home)}, cwd=home,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self.root_pid = self.proc.pid

    # ------------------------------------------------------------------------------ using
    def outside(self, inside: str) -> str:
        """The path by which the grader reaches ``inside`` (a path in the sandbox)."""
        if not self.secure:
            return str(self.run_dir / "home" / Path(inside).name)
        return f"/proc/{self.root_pid}/root{inside}"

    def mark_infrastructure(self) -> None:
        """Remember the processes running now (bwrap, forwarders, the kernel): the rest are
        what the submission started itself (workers, say), which ``kill_started`` ends."""
        self.infrastructure = self.cgroup.pids() if self.cgroup else set()

    def kill_started(self) -> list[int]:
        """SIGKILL every process the submission started after ``mark_infrastructure``.

        The forwarders' per-connection children (socat) are spared, so that the kernel's own
        connections survive. A process that calls itself socat is spared too: a test checks
        that the kill took effect where it matters (RabbitMQ saw the worker go).
        """
        import signal

        import psutil
        if not self.cgroup:
            return []
        victims = []
        for pid in sorted(self.cgroup.pids() - self.infrastructure):
            try:
                if psutil.Process(pid).name() != "socat":
                    victims.append(pid)
            except psutil.Error:
                continue
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return victims

    def cpu_s(self) -> float:
        return self.cgroup.cpu_s() if self.cgroup else 0.0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def why_dead(self) -> str:
        """What limit, if any, the submission ran into (for the report)."""
        if self.cgroup is None:
            return ""
        why = []
        if self.cgroup.memory_exceeded():
            why.append(f"it reached the memory limit ({self.limits.memory_mb} MB)")
        if self.cgroup.pids_exceeded():
            why.append(f"it reached the process limit ({self.limits.pids})")
        return "; ".join(why)

    def kill(self) -> None:
        """End everything in the sandbox (the kernel and whatever it started)."""
        if self.cgroup is not None:
            self.cgroup.kill()
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, 9)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def close(self) -> None:
        """Kill the sandbox, its forwarders, and remove its cgroup."""
        self.kill()
        for r in self._relays:
            r.kill()
            r.wait()
        self._relays = []
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None

    def describe(self) -> str:
        return (f"bwrap sandbox, cgroup v{self.cgroup.version}" if self.cgroup
                else "no sandbox (--insecure)") + (
            f"; forwards {', '.join(f'{f.name} {f.host}:{f.port}' for f in self.forwards)}")

    def shell_command(self) -> str:  # pragma: no cover (debugging aid)
        return shlex.join(self.proc.args) if self.proc else ""


def _read_child_pid(fd: int, timeout_s: float) -> int | None:
    """bwrap's --info-fd JSON: the host pid of the sandbox's first process."""
    data = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
        try:
            return int(json.loads(data)["child-pid"])
        except ValueError:
            continue
    try:
        return int(json.loads(data)["child-pid"])
    except (ValueError, KeyError):
        return None
