"""Checks for exercises that compile a kernel: observations made where the code runs, verdicts apart.

Each check comes in two halves, so that grading can move the verdict out of the student's
kernel (issue 16) without rewriting the tests:

- ``observe_*`` runs the student's function and returns plain JSON-able values (outputs,
  timings, what kind of function it is);
- ``judge_*`` takes those values (and the inputs, rebuilt from a seed) and raises
  ``AssertionError`` with a message for the student, computing any reference result itself.

A test cell today calls both in the kernel: ``judge_agreement(seed, observe_outputs(fn, seed))``.

Introduced in exercises/11_cython_and_memory.ipynb.
"""

from __future__ import annotations

import array
import math
import random
import statistics
import time
from typing import Any, Callable

from labkit.speedups import feedscore

NOW_MS = 400_000_000_000  # ~12.7 years after Instagram's epoch


def recency_cases(seed: int, n_cases: int = 6, size: int = 300) -> list[dict[str, Any]]:
    """Inputs for ``recency_scores``: random IDs of posts from seconds to years old, some
    from the future, and an empty case; the same ``seed`` always gives the same cases."""
    rng = random.Random(seed)
    cases = [{"media_ids": [], "now_ms": NOW_MS, "half_life_h": 24.0}]
    for _ in range(n_cases - 1):
        # Ages from minutes to three years, and one post in twenty from the future.
        ages = [rng.randrange(-10**6, 0) if rng.random() < 0.05 else rng.randrange(10**11)
                for _ in range(rng.randrange(1, size))]
        ids = [((NOW_MS - age) << 23) | (rng.randrange(8192) << 10) | rng.randrange(1024)
               for age in ages]
        cases.append({"media_ids": ids, "now_ms": NOW_MS,
                      "half_life_h": rng.choice([0.5, 6.0, 24.0, 168.0, 10_000.0])})
    return cases


def _call(fn: Callable, case: dict[str, Any]) -> list[float]:
    out = array.array("d", [math.nan]) * len(case["media_ids"])
    fn(array.array("q", case["media_ids"]), case["now_ms"], case["half_life_h"], out)
    return list(out)


def observe_outputs(fn: Callable, seed: int) -> dict[str, Any]:
    """Run ``fn`` on the cases of ``seed``: its outputs, or the error it raised, per case."""
    results = []
    for case in recency_cases(seed):
        try:
            results.append({"out": _call(fn, case)})
        except Exception as e:  # the student's error is an observation, not a crash
            results.append({"error": f"{type(e).__name__}: {e}"})
    return {"seed": seed, "results": results}


def judge_agreement(seed: int, observed: dict[str, Any], rel_tol: float = 1e-9) -> None:
    """Each output equals the pure twin's (``feedscore.recency_scores``) on the same case."""
    for i, (case, got) in enumerate(zip(recency_cases(seed), observed["results"])):
        what = (f"case {i}: {len(case['media_ids'])} IDs, half_life_h={case['half_life_h']}")
        assert "error" not in got, f"{what}: your function raised {got['error']}"
        want = _call(feedscore.recency_scores, case)
        assert len(got["out"]) == len(want), f"{what}: wrote {len(got['out'])} values"
        for j, (g, w) in enumerate(zip(got["out"], want)):
            assert math.isclose(g, w, rel_tol=rel_tol, abs_tol=1e-300), (
                f"{what}: out[{j}] is {g!r}, the pure version gives {w!r} (media ID "
                f"{case['media_ids'][j]}, now_ms={case['now_ms']})")


def observe_compiled(fn: Callable) -> dict[str, str]:
    """What kind of function ``fn`` is and where it comes from."""
    return {"type": type(fn).__name__, "module": getattr(fn, "__module__", "") or ""}


def judge_compiled(observed: dict[str, str]) -> None:
    """``fn`` is a function Cython compiled, not labkit's own kernel or plain Python."""
    assert observed["type"] in ("cython_function_or_method", "fused_cython_function"), (
        f"recency_scores is a {observed['type']}, not a compiled Cython function: define it "
        "in a %%cython cell")
    assert not observed["module"].startswith("labkit."), (
        f"recency_scores comes from {observed['module']}: write your own in a %%cython cell")


def observe_speed(fn: Callable, seed: int, *, size: int = 20_000,
                  repeat: int = 7) -> dict[str, Any]:
    """Seconds per call of ``fn`` and of the pure twin on one large case, interleaved."""
    rng = random.Random(seed)
    case = {"media_ids": [((NOW_MS - rng.randrange(10**10)) << 23) | rng.randrange(2**23)
                          for _ in range(size)], "now_ms": NOW_MS, "half_life_h": 24.0}
    ids = array.array("q", case["media_ids"])
    out = array.array("d", bytes(8 * size))
    times: dict[str, list[float]] = {"student_s": [], "pure_s": []}
    for _ in range(repeat):
        for key, f in (("student_s", fn), ("pure_s", feedscore.recency_scores)):
            t0 = time.perf_counter()
            f(ids, case["now_ms"], case["half_life_h"], out)
            times[key].append(time.perf_counter() - t0)
    return {"size": size, **times}


def judge_speed(observed: dict[str, Any], min_ratio: float = 5.0) -> float:
    """The median pure time over the median student time is at least ``min_ratio``."""
    ratio = statistics.median(observed["pure_s"]) / statistics.median(observed["student_s"])
    assert ratio >= min_ratio, (
        f"your version is {ratio:.1f}x the pure one on {observed['size']} IDs; it needs "
        f"{min_ratio:g}x: type the arguments (typed memoryviews), the loop variables "
        "(cdef) and use libc.math's exp; `%%cython -a` shows the lines still calling Python")
    return ratio
