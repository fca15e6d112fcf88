"""Every compiled twin of the feed kernel agrees with the pure-Python one, on random inputs.

Hypothesis draws models (rows, embeddings, private flags), candidates (IDs, owner rows,
like counts), follow/block/seen lists and weights; the Cython and plain-C modules must give
the same scores (to the bit: they call the same libm) and the same visible count. When the
compiled modules were not built these tests fail, naming the fix, rather than skip: CI
builds them from a fresh clone.
"""

from __future__ import annotations

import array
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit import speedups
from labkit.speedups import feedscore

IMPLS = speedups.implementations("feedscore")
COMPILED = ["cython", "c"]
NOW_MS = 400_000_000_000  # ~12.7 years after Instagram's epoch


def built(name: str):
    if name not in IMPLS:
        pytest.fail(f"the {name} kernel is not built here: {speedups.why_not_compiled()}")
    return IMPLS[name]


@st.composite
def problems(draw):
    n_rows = draw(st.integers(0, 40))
    dim = draw(st.integers(0, 8))
    unit = st.floats(-2, 2, allow_nan=False, allow_subnormal=False)
    embeddings = draw(st.lists(unit, min_size=n_rows * dim, max_size=n_rows * dim))
    quality = draw(st.lists(st.floats(0, 1), min_size=n_rows, max_size=n_rows))
    private = draw(st.lists(st.booleans(), min_size=n_rows, max_size=n_rows))
    rows = st.integers(-1, n_rows - 1)
    n = draw(st.integers(0, 60))
    # IDs made from (ms, shard, seq), some from the future; repeats allowed.
    ms = st.integers(NOW_MS - 10**10, NOW_MS + 10**6)
    media_ids = draw(st.lists(st.builds(lambda m, s, q: (m << 23) | (s << 10) | q, ms,
                                        st.integers(0, 8191), st.integers(0, 1023)),
                              min_size=n, max_size=n))
    owner_rows = draw(st.lists(rows, min_size=n, max_size=n))
    like_counts = draw(st.lists(st.integers(-5, 10**9), min_size=n, max_size=n))
    followees = draw(st.sets(rows)) if n_rows else set()
    blocked = draw(st.sets(rows)) if n_rows else set()
    seen = draw(st.sets(st.sampled_from(media_ids))) if media_ids else set()
    viewer_row = draw(rows) if n_rows else -1
    params = [draw(st.floats(0.01, 1000))] + draw(st.lists(st.floats(-10, 10), min_size=5,
                                                          max_size=5))
    return dict(
        media_ids=array.array("q", media_ids), owner_rows=array.array("q", owner_rows),
        like_counts=array.array("q", like_counts), viewer_row=viewer_row,
        followee_rows=array.array("q", sorted(followees)),
        blocked_rows=array.array("q", sorted(blocked)), seen_ids=array.array("q", sorted(seen)),
        embeddings=array.array("d", embeddings), quality=array.array("d", quality),
        private=array.array("B", private), dim=dim, now_ms=NOW_MS,
        params=array.array("d", params))


def run(module, problem):
    out = array.array("d", [math.nan]) * len(problem["media_ids"])
    visible = module.score_candidates(**problem, out=out)
    return visible, list(out)


@pytest.mark.parametrize("name", COMPILED)
@settings(max_examples=300, deadline=None)
@given(problem=problems())
def test_score_candidates_agrees_with_the_pure_twin(name, problem):
    assert run(built(name), problem) == run(IMPLS["python"], problem)


@settings(max_examples=200, deadline=None)
@given(media_ids=st.lists(st.integers(1, 2**63 - 1), max_size=80),
       now_ms=st.integers(0, 2**41 - 1), half_life_h=st.floats(0.001, 10_000))
def test_recency_scores_agree_with_the_pure_twin(media_ids, now_ms, half_life_h):
    cython = built("cython")
    ids = array.array("q", media_ids)
    got, want = array.array("d", bytes(8 * len(ids))), array.array("d", bytes(8 * len(ids)))
    cython.recency_scores(ids, now_ms, half_life_h, got)
    feedscore.recency_scores(ids, now_ms, half_life_h, want)
    assert list(got) == list(want)


def test_the_filters_and_the_score_mean_what_the_docstring_says():
    # One viewer (row 0) and three authors: followed public, private unfollowed, blocked.
    problem = dict(
        media_ids=array.array("q", [(NOW_MS << 23) | 1, (NOW_MS << 23) | 2, (NOW_MS << 23) | 3,
                                    ((NOW_MS - 7_200_000) << 23) | 4, (NOW_MS << 23) | 5]),
        owner_rows=array.array("q", [1, 2, 3, 1, -1]),
        like_counts=array.array("q", [0, 0, 0, 0, 10]),
        viewer_row=0, followee_rows=array.array("q", [1]), blocked_rows=array.array("q", [3]),
        seen_ids=array.array("q", []), embeddings=array.array("d", [1, 0, 2, 0, 0, 0, 0, 0]),
        quality=array.array("d", [0, 0.5, 0, 0]), private=array.array("B", [0, 0, 1, 0]),
        dim=2, now_ms=NOW_MS, params=array.array("d", [2.0, 1.0, 1.0, 1.0, 1.0, 1.0]))
    for name, module in IMPLS.items():
        visible, out = run(module, problem)
        assert visible == 3, name
        # followed: recency 1 + affinity 1*2 + follow 1 + quality 0.5
        assert out[0] == pytest.approx(4.5), name
        assert out[1] == out[2] == -math.inf, name  # private unfollowed; blocked
        assert out[3] == pytest.approx(0.5 + 2 + 1 + 0.5), name  # 2 h old, half-life 2 h
        assert out[4] == pytest.approx(1 + math.log1p(10)), name  # unknown author
        seen = dict(problem, seen_ids=array.array("q", [problem["media_ids"][0]]))
        assert run(module, seen)[1][0] == -math.inf, name


@pytest.mark.parametrize("name", ["python", *COMPILED])
@pytest.mark.parametrize("change, message", [
    (dict(owner_rows=array.array("q", [5])), "owner_rows[0]=5"),
    (dict(like_counts=array.array("q", [])), "one entry per candidate"),
    (dict(quality=array.array("d", [0.0, 0.0])), "the model's arrays disagree"),
    (dict(params=array.array("d", [0.0] * 6)), "half_life_h=0.0"),
    (dict(params=array.array("d", [1.0])), "give 6"),
])
def test_bad_input_is_a_clear_error(name, change, message):
    module = built(name)
    problem = dict(media_ids=array.array("q", [NOW_MS << 23]), owner_rows=array.array("q", [0]),
                   like_counts=array.array("q", [3]), viewer_row=0,
                   followee_rows=array.array("q"), blocked_rows=array.array("q"),
                   seen_ids=array.array("q"), embeddings=array.array("d", [1.0]),
                   quality=array.array("d", [0.5]), private=array.array("B", [0]), dim=1,
                   now_ms=NOW_MS, params=array.array("d", [24.0, 1, 1, 1, 1, 1]))
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        run(module, {**problem, **change})
