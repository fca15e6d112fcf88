"""The checks of exercise 11 fail on wrong kernels and pass on a right one.

Observations and verdicts are separate functions (``labkit.grading.kernels``); here both run
in this process, on kernels written to be wrong in one way each.
"""

from __future__ import annotations

import math

import pytest

from labkit import speedups
from labkit.grading import kernels
from labkit.speedups import feedscore


def compiled_recency():
    impls = speedups.implementations("feedscore")
    if "cython" not in impls:
        pytest.fail(f"the Cython kernel is not built here: {speedups.why_not_compiled()}")
    return impls["cython"].recency_scores


def test_the_right_kernel_agrees():
    kernels.judge_agreement(7, kernels.observe_outputs(compiled_recency(), 7))
    kernels.judge_agreement(7, kernels.observe_outputs(feedscore.recency_scores, 7))


def wrong_half_life(media_ids, now_ms, half_life_h, out):
    feedscore.recency_scores(media_ids, now_ms, half_life_h * 1.01, out)


def no_clamp_for_future_posts(media_ids, now_ms, half_life_h, out):
    for i, m in enumerate(media_ids):
        out[i] = math.exp(-math.log(2) / half_life_h * (now_ms - (m >> 23)) / 3_600_000)


def raises(media_ids, now_ms, half_life_h, out):
    raise IndexError("oops")


@pytest.mark.parametrize("wrong, message", [
    (wrong_half_life, "the pure version gives"), (no_clamp_for_future_posts, "out["),
    (raises, "your function raised IndexError: oops")])
def test_a_wrong_kernel_is_caught_with_a_message(wrong, message):
    with pytest.raises(AssertionError, match=message.replace("[", r"\[")):
        kernels.judge_agreement(7, kernels.observe_outputs(wrong, 7))


def test_only_a_cython_function_of_ones_own_counts():
    with pytest.raises(AssertionError, match="not a compiled Cython function"):
        kernels.judge_compiled(kernels.observe_compiled(feedscore.recency_scores))
    with pytest.raises(AssertionError, match="write your own"):
        kernels.judge_compiled(kernels.observe_compiled(compiled_recency()))
    kernels.judge_compiled({"type": "cython_function_or_method", "module": "_cython_magic_x"})


def test_the_speed_verdict_compares_medians_of_the_same_run():
    # Judged on recorded timings (as the grader's process will): no clock here.
    fast = {"size": 10, "student_s": [1.0, 1.0, 9.0], "pure_s": [6.0, 6.0, 6.0]}
    assert kernels.judge_speed(fast, min_ratio=5) == 6.0
    slow = {"size": 10, "student_s": [2.0, 2.0, 2.0], "pure_s": [6.0, 6.0, 6.0]}
    with pytest.raises(AssertionError, match="3.0x the pure one"):
        kernels.judge_speed(slow, min_ratio=5)
    observed = kernels.observe_speed(feedscore.recency_scores, 1, size=100, repeat=3)
    assert len(observed["student_s"]) == len(observed["pure_s"]) == 3
