"""A student release: the repository without what only instructors may see.

``labkit exercises release DIR`` copies the repository's tracked files (``git ls-files``, or
every file outside ``.git`` when there is no git) into ``DIR``, leaving out ``solutions/``
(solutions, hidden tests, wrong answers, the instructor guide), the grading tests that read
them (``tests/grading/``, the tamper corpus among them) and the grading benchmark.
``exercises/`` is rebuilt from the solutions on the way, so it is never stale.
Before returning it checks that no hidden test (its name, its feedback, a line of its code)
appears anywhere in the release. (Solution code is not searched for: labkit's own backend
implements what the exercises ask, by design, in the notebooks the students read.)
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from labkit.grading.format import assignments, build_exercises

LEFT_OUT = ("solutions/", "tests/grading/", "benchmarks/grade_class.py", "exercises/")


def tracked_files(repo: Path) -> list[str]:
    """The repository's files, relative: git's list when it is a checkout."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z"], capture_output=True,
                             check=True, timeout=60).stdout.decode()
        return [f for f in out.split("\0") if f]
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return [str(p.relative_to(repo)) for p in repo.rglob("*")
                if p.is_file() and ".git" not in p.parts and ".venv" not in p.parts]


def secrets_of(solutions_dir: Path) -> list[str]:
    """What must not leak: hidden tests' names, feedback and code lines (long ones)."""
    found: list[str] = []
    for a in assignments(solutions_dir).values():
        for q in a.questions.values():
            for cell in q.hidden:
                found += cell.names
                found += [ln.strip() for ln in cell.source.splitlines() if len(ln.strip()) > 50]
        found += [t.feedback[:60] for t in a.load_tests() if t.hidden]
    return [s for s in found if s]


def release(repo: Path, dest: Path, *, solutions_dir: Path | None = None) -> int:
    """Write the student release into ``dest`` (new or empty); return how many files."""
    repo, dest = Path(repo), Path(dest)
    solutions_dir = Path(solutions_dir or repo / "solutions")
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty; give a new directory for the release")
    if dest.resolve() == repo.resolve() or repo.resolve() in dest.resolve().parents:
        raise ValueError(f"{dest} is inside the repository; release somewhere outside it")
    n = 0
    for rel in tracked_files(repo):
        if rel.startswith(LEFT_OUT) or not (repo / rel).is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, dest / rel)
        n += 1
    n += len(build_exercises(solutions_dir, dest / "exercises"))
    readme = repo / "exercises" / "README.md"
    if readme.exists():
        shutil.copy2(readme, dest / "exercises" / "README.md")
        n += 1
    leaks = _leaks(dest, secrets_of(solutions_dir))
    if leaks:
        shutil.rmtree(dest)
        raise ValueError("the release would contain instructor-only text ("
                         + "; ".join(f"{f}: {s[:40]!r}" for f, s in leaks[:5])
                         + "); nothing was written")
    return n


def _leaks(dest: Path, secrets: list[str]) -> list[tuple[str, str]]:
    out = []
    for path in dest.rglob("*"):
        if not path.is_file():
            continue
        try:
            text = path.read_text(errors="ignore")
        except OSError:
            continue
        for s in secrets:
            if s in text:
                out.append((str(path.relative_to(dest)), s))
    return out
