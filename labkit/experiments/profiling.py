"""Profile a running gunicorn worker: py-spy (sampling) and cProfile (deterministic).

``py_spy_record`` attaches py-spy to a worker's pid (ptrace: as root, or with
CAP_SYS_PTRACE, or where ``kernel.yama.ptrace_scope`` allows it) and samples its stacks
without stopping it; the ``flamegraph`` format is an SVG a notebook can show, ``raw`` the
collapsed stacks that ``hot_functions`` reads. cProfile runs inside each worker
(``WebServer(profile_dir=...)``) and ``cprofile_top`` merges the workers' files.

Introduced in notebooks/11_cython_and_memory.ipynb.

>>> svg = py_spy_record(web.worker_pids()[0], out / "feed.svg", duration_s=5)   # doctest: +SKIP
>>> hot_functions(py_spy_record(pid, out / "feed.txt", fmt="raw"))[:3]          # doctest: +SKIP
"""

from __future__ import annotations

import pstats
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable

FORMATS = ("flamegraph", "speedscope", "raw")


def py_spy_bin() -> str:
    """The py-spy executable (installed with labkit, next to this Python)."""
    here = Path(sys.executable).parent / "py-spy"
    found = str(here) if here.exists() else shutil.which("py-spy")
    if not found:
        raise FileNotFoundError("py-spy not found; it is a labkit dependency: reinstall with "
                                "`.venv/bin/pip install -e .` (or `pip install py-spy`)")
    return found


def py_spy_record(pid: int, out: Path, *, duration_s: float = 5.0, rate_hz: int = 200,
                  fmt: str = "flamegraph", idle: bool = False) -> Path:
    """Sample ``pid``'s Python stacks for ``duration_s`` into ``out``; return ``out``.

    ``idle=False`` leaves out samples where the worker waits (in ``select``, on a socket),
    so the graph shows where its CPU goes.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r}: choose one of {', '.join(FORMATS)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [py_spy_bin(), "record", "--pid", str(pid), "--duration", str(max(1, round(duration_s))),
           "--rate", str(rate_hz), "--format", fmt, "--output", str(out), "--nonblocking"]
    if idle:
        cmd.append("--idle")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
    if done.returncode != 0 or not out.exists():
        hint = ""
        if "ermission" in done.stderr or "ptrace" in done.stderr.lower():
            hint = (" (py-spy needs ptrace on the worker: run as root, give py-spy "
                    "CAP_SYS_PTRACE, or set kernel.yama.ptrace_scope=0)")
        raise RuntimeError(f"py-spy failed on pid {pid}{hint}: {done.stderr.strip()[-400:]}")
    return out


_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^():]+)(?::\d+)?\)$")


def hot_functions(raw: Path, top: int = 10) -> list[dict]:
    """Functions by their share of samples in py-spy's raw (collapsed) output.

    ``self_share``: samples where the function itself was running (the leaf);
    ``total_share``: samples where it was anywhere on the stack.
    """
    self_n: dict[str, int] = {}
    total_n: dict[str, int] = {}
    samples = 0
    for line in Path(raw).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [_name(f) for f in stack.split(";")]
        self_n[frames[-1]] = self_n.get(frames[-1], 0) + n
        for name in set(frames):
            total_n[name] = total_n.get(name, 0) + n
    rows = [{"function": f, "self_share": self_n.get(f, 0) / samples,
             "total_share": total_n[f] / samples} for f in total_n] if samples else []
    rows.sort(key=lambda r: (-r["self_share"], -r["total_share"]))
    return rows[:top]


def _name(frame: str) -> str:
    # "score_candidates (labkit/speedups/feedscore.py:73)" -> "feedscore.py:score_candidates"
    m = _FRAME.match(frame.strip())
    return f"{Path(m['file']).name}:{m['func']}" if m else frame.strip()


def cprofile_top(paths: Iterable[Path], top: int = 10, sort: str = "tottime",
                 only: str | None = None) -> list[dict]:
    """The ``top`` functions of several cProfile dumps merged (e.g. every worker's).

    ``only`` keeps functions whose file path contains it (e.g. ``"labkit"``).
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise FileNotFoundError("no profiles to read; did the server stop (workers write "
                                "theirs when they exit)?")
    stats = pstats.Stats(*paths)
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        if only and only not in file:
            continue
        rows.append({"function": f"{Path(file).name}:{func}", "calls": nc,
                     "tottime_s": tt, "cumtime_s": ct})
    rows.sort(key=lambda r: -r[f"{sort}_s" if not sort.endswith("_s") else sort])
    return rows[:top]
