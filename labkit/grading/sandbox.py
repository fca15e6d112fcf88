"""Start a graded kernel with limits, as an unprivileged account, blind to the lab's files.

The grader runs this as root inside ``unshare --mount --pid --fork --kill-child
--mount-proc`` (a mount and a process namespace of its own), then this process:

1. hides the lab directory, the solutions (hidden tests) and the grader's output behind
   empty tmpfs mounts, so neither ``state.json``/``secrets.json`` nor hidden tests can be read;
2. makes the Python installation reachable when it lives in a directory the unprivileged
   account cannot enter (pyenv under ``/root``): the installation is bind-mounted back onto
   an otherwise empty tmpfs that replaces that directory;
3. sets CPU-time and address-space limits, drops to the student account, and execs the kernel.

Without root it only sets the limits (there is no other account to become); ``labkit grade``
warns about that.

    python -m labkit.grading.sandbox --uid 998 --gid 998 --hide /var/lib/labkit/lab \\
        --cpu-s 60 --memory-mb 3072 --cwd /tmp/scratch -- python -m ipykernel_launcher -f k.json
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

PR_SET_NO_NEW_PRIVS = 38


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def _blocked_ancestor(path: Path) -> Path | None:
    """The outermost directory on the way to ``path`` that others may not traverse."""
    for parent in [*reversed(path.parents), path]:
        if parent.exists() and not os.stat(parent).st_mode & 0o001:
            return parent
    return None


def reveal(paths: list[Path]) -> None:
    """Keep ``paths`` reachable for any account even when an ancestor is closed (0700)."""
    plan: dict[Path, list[Path]] = {}
    for path in paths:
        blocked = _blocked_ancestor(path)
        if blocked is not None and blocked != path:
            plan.setdefault(blocked, []).append(path)
    staged = []
    for blocked, inner in plan.items():
        for path in inner:
            stage = Path(tempfile.mkdtemp(prefix="labkit-stage-"))
            _mount("--bind", str(path), str(stage))
            staged.append((stage, path))
        _mount("-t", "tmpfs", "-o", "mode=0755,size=1m", "tmpfs", str(blocked))
    for stage, path in staged:
        path.mkdir(parents=True, exist_ok=True)
        _mount("--move", str(stage), str(path))
        stage.rmdir()


def hide(paths: list[Path], keep: list[Path]) -> None:
    """Cover each of ``paths`` with an empty tmpfs, unless it holds one of ``keep``."""
    for path in paths:
        if path.is_dir() and not any(k == path or path in k.parents for k in keep):
            _mount("-t", "tmpfs", "-o", "mode=0755,size=1m", "tmpfs", str(path))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m labkit.grading.sandbox")
    p.add_argument("--uid", type=int)
    p.add_argument("--gid", type=int)
    p.add_argument("--hide", type=Path, action="append", default=[])
    p.add_argument("--reveal", type=Path, action="append", default=[])
    p.add_argument("--chown", type=Path, action="append", default=[])
    p.add_argument("--cpu-s", type=int, default=120)
    p.add_argument("--memory-mb", type=int, default=3072)
    p.add_argument("--cwd", type=Path)
    p.add_argument("--no-mounts", action="store_true",
                   help="no mount namespace here: only drop to --uid (hides less)")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if args.uid is not None and not args.no_mounts:
        _mount("--make-rprivate", "/")
        keep = [Path(sys.base_prefix), Path(sys.prefix), *args.reveal]
        reveal(keep)
        hide(args.hide, keep + ([args.cwd] if args.cwd else []))
    if args.uid is not None:
        for path in args.chown:
            os.chown(path, args.uid, args.gid)
    if args.cwd:
        os.chdir(args.cwd)
    resource.setrlimit(resource.RLIMIT_CPU, (args.cpu_s, args.cpu_s + 5))
    limit = args.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if args.uid is not None:
        os.setgroups([])
        os.setgid(args.gid)
        os.setuid(args.uid)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    os.execvp(cmd[0], cmd)
    return 127  # pragma: no cover (exec does not return)


if __name__ == "__main__":
    sys.exit(main())
