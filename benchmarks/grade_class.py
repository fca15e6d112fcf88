"""Grade a class with full isolation: N copies of each solution, graded as `labkit grade` does.

    python benchmarks/grade_class.py [--copies 30] [--jobs 2] [--runs 1]
                                     [--assignments 01_data_model,03_cache_aside]
                                     [--broken 0.33]

Target (issue 16): >= 10 submissions per minute on 2 cores, every submission in its own
sandbox (bwrap, cgroup, memcached, database). ``--broken 0.33`` turns a third of the copies
into submissions whose every function hangs (an endless loop, SIGINT ignored) or crashes the
kernel (os._exit, a fork bomb): the class must still finish, each of those graded 0 (11's
%%cython function is not redefined: use it without --broken) and named in the gradebook. Uses the lab
of LABKIT_LAB_DIR (started if needed). Prints per-run rates and the median.
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import nbformat

import labkit as lk
from labkit.grading.format import assignments
from labkit.grading.grader import grade
from labkit.grading.sandbox import Limits

REPO = Path(__file__).resolve().parents[1]
# What a broken submission's functions do instead of their work (every call, every question).
BREAKERS = {
    "hang": "    import signal\n    signal.signal(signal.SIGINT, signal.SIG_IGN)\n    while True:\n"
            "        pass",
    "crash": "    import os\n    os._exit(1)",
    "forkbomb": "    import os\n    while True:\n        try:\n            os.fork()\n"
                "        except OSError:\n            pass",
}


def broken_cell(nb: nbformat.NotebookNode, kind: str) -> str:
    """A last cell that redefines every function the solution asks for as ``kind``."""
    names = sorted({m for c in nb.cells if c.cell_type == "code" and "BEGIN SOLUTION" in c.source
                    for m in re.findall(r"^def +(\w+) *\(", c.source, re.MULTILINE)})
    return "\n".join(f"def {name}(*args, **kwargs):\n{BREAKERS[kind]}\n" for name in names)


def make_class(dest: Path, names: list[str], copies: int, broken: float) -> dict[str, str]:
    """Write the class's notebooks; return {student folder: what it is}."""
    kinds: dict[str, str] = {}
    step = round(1 / broken) if broken > 0 else 0   # every step-th submission is broken
    i = 0
    for name in names:
        nb = nbformat.read(REPO / "solutions" / f"{name}.ipynb", as_version=4)
        for c in range(copies):
            student = f"s{i:04d}"
            kind = "solution"
            sub = nb
            if step and i % step == step - 1:
                kind = list(BREAKERS)[(i // step) % len(BREAKERS)]
                sub = copy.deepcopy(nb)
                sub.cells.append(nbformat.v4.new_code_cell(broken_cell(nb, kind)))
            (dest / student).mkdir(parents=True)
            nbformat.write(sub, dest / student / f"{name}.ipynb")
            kinds[student] = f"{name} {kind}"
            i += 1
    return kinds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--copies", type=int, default=30)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--runs", type=int, default=1, help="repeat the whole class; median reported")
    p.add_argument("--assignments", default="", help="comma-separated (default: all)")
    p.add_argument("--broken", type=float, default=0.0, help="fraction that hangs or crashes")
    args = p.parse_args()
    names = [a for a in args.assignments.split(",") if a] or sorted(assignments(REPO / "solutions"))
    lab = lk.up(services=("postgres", "memcached", "rabbitmq"))
    limits = Limits(cell_timeout_s=20, submission_timeout_s=120)
    rates = []
    for run in range(args.runs):
        work = Path(tempfile.mkdtemp(prefix="grade-class-"))
        kinds = make_class(work / "class", names, args.copies, args.broken)
        t0 = time.perf_counter()
        results = grade([work / "class"], lab, work / "grades", limits=limits, jobs=args.jobs)
        elapsed_s = time.perf_counter() - t0
        rows = list(csv.DictReader(open(work / "grades" / "gradebook.csv")))
        bad = []
        for r in results:
            kind = kinds[r["student"]]
            full = r["score"] == r["max_score"]
            if kind.endswith("solution") != full:
                bad.append(f"{r['student']} ({kind}): {r['score']}/{r['max_score']} {r['errors']}")
        named = all(row["student"] in kinds for row in rows) and len(rows) == len(kinds)
        rate = len(results) / elapsed_s * 60
        rates.append(rate)
        print(f"run {run + 1}: {len(results)} submissions ({', '.join(names)}; "
              f"{sum(not k.endswith('solution') for k in kinds.values())} hang or crash) in "
              f"{elapsed_s:.0f} s = {rate:.1f} per minute, jobs={args.jobs}, "
              f"cores={os.cpu_count()}, load={os.getloadavg()[0]:.1f}; every row in the "
              f"gradebook: {named}; graded against expectation: {len(results) - len(bad)}/"
              f"{len(results)}")
        for line in bad[:10]:
            print("  unexpected:", line)
    print(f"median over {len(rates)} run(s): {statistics.median(rates):.1f} submissions per minute "
          "(target >= 10)")


if __name__ == "__main__":
    main()
