"""Grade a class: N copies of one submission, graded as `labkit grade` does; print the rate.

    python benchmarks/grade_class.py [--copies 30] [--jobs 2] [--runs 1] [--submission PATH]

Target (issue 7): >= 10 submissions per minute on 2 cores. Uses the lab of LABKIT_LAB_DIR
(started if needed); each copy gets its own namespace and kernel, like a real class.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import labkit as lk
from labkit.grading.grader import grade

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--copies", type=int, default=30)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--runs", type=int, default=1, help="repeat the whole class; median reported")
    p.add_argument("--submission", type=Path, default=REPO / "solutions" / "03_cache_aside.ipynb")
    args = p.parse_args()
    lab = lk.up(services=("postgres", "memcached"))
    rates = []
    for run in range(args.runs):
        work = Path(tempfile.mkdtemp(prefix="grade-class-"))
        try:
            for i in range(args.copies):
                dest = work / "class" / f"student{i:02d}" / args.submission.name
                dest.parent.mkdir(parents=True)
                shutil.copy(args.submission, dest)
            t0 = time.perf_counter()
            results = grade([work / "class"], lab, work / "grades", jobs=args.jobs)
            elapsed_s = time.perf_counter() - t0
        finally:
            shutil.rmtree(work, ignore_errors=True)
        full = sum(r["score"] == r["max_score"] for r in results)
        rate = len(results) / elapsed_s * 60
        rates.append(rate)
        print(f"run {run + 1}: {len(results)} submissions in {elapsed_s:.1f} s = {rate:.1f} per "
              f"minute ({full} with full marks), jobs={args.jobs}, cores={os.cpu_count()}")
    print(f"median over {len(rates)} run(s): {statistics.median(rates):.1f} submissions per minute "
          f"(target >= 10)")


if __name__ == "__main__":
    main()
