"""Enter a submission's cgroup, set its resource limits, then exec the sandbox (bwrap).

Run by path (``python .../launch.py``), not as ``-m labkit...``: it imports the standard
library only, so it starts in milliseconds and needs nothing from the lab. The grader starts
it as root; it writes its own pid into each of the submission's ``cgroup.procs`` files (so
bwrap and everything below it are counted and capped there), sets the per-process limits a
cgroup does not give (CPU seconds per process, address space, file size, no core dumps),
and replaces itself with the command after ``--``.

    python launch.py --cgroup-procs /sys/fs/cgroup/pids/g1/cgroup.procs --cpu-s 120 \\
        --memory-mb 3072 --fsize-mb 256 -- bwrap ... -- setpriv ... -- python -m ipykernel_launcher
"""

from __future__ import annotations

import argparse
import os
import resource
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="launch.py")
    p.add_argument("--cgroup-procs", action="append", default=[])
    p.add_argument("--cpu-s", type=int, required=True)
    p.add_argument("--memory-mb", type=int, required=True)
    p.add_argument("--fsize-mb", type=int, required=True)
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    for path in args.cgroup_procs:
        with open(path, "w") as f:
            f.write(str(os.getpid()))
    resource.setrlimit(resource.RLIMIT_CPU, (args.cpu_s, args.cpu_s + 5))
    limit = args.memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    fsize = args.fsize_mb * 2**20
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.execvp(cmd[0], cmd)
    return 127  # pragma: no cover (exec does not return)


if __name__ == "__main__":
    sys.exit(main())
