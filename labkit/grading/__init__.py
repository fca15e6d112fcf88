"""Exercise generator and autograder.

Instructors write ``solutions/NN_topic.ipynb`` (format: ``labkit.grading.format`` and
``solutions/README.md``); ``build_exercises`` makes the student copies in ``exercises/``;
students call ``check("q1")`` (``check("q1", hint=True)`` for hints); ``grade`` runs each
submission in a sandbox against the real lab servers and judges it in its own process.

>>> from labkit.grading import build_exercises, grade              # doctest: +SKIP
>>> build_exercises("solutions", "exercises")                      # doctest: +SKIP
>>> grade(["exercises/"], lab, "grades")                           # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from labkit.grading.student import CassandraWorkspace, Workspace, check, hints, tests, workspace

__all__ = ["CassandraWorkspace", "FormatError", "Workspace", "build_exercises", "check", "grade",
           "hints", "parse", "tests", "workspace"]


def __getattr__(name: str) -> Any:
    # The format needs nbformat: loaded on first use, so `lk.check` keeps `import labkit` light.
    if name in ("FormatError", "build_exercises", "parse"):
        from labkit.grading import format as _format
        return getattr(_format, name)
    raise AttributeError(f"module 'labkit.grading' has no attribute {name!r}")


def grade(*args: Any, **kwargs: Any) -> Any:
    """``labkit.grading.grader.grade``, imported on first use (jupyter_client is heavy)."""
    from labkit.grading.grader import grade as _grade
    return _grade(*args, **kwargs)
