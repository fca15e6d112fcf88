# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The feed's hot kernel in Cython: the twin of ``labkit/speedups/feedscore.py``.

Same arguments, same numbers; what changes is that every loop runs on C types. The arrays
arrive as typed memoryviews (no Python object per element), IDs are decoded with C shifts,
the sorted follow/block/seen lists are binary-searched in C instead of being turned into
Python sets, and ``exp``/``log1p`` come from libm directly (the very functions Python's
``math`` module calls, so the results agree bit for bit). Bounds checks are off, so
``check_shapes`` (pure Python, once per call) and the per-row range check guard the
indexing instead.

Introduced in notebooks/11_cython_and_memory.ipynb.
"""

from libc.math cimport exp, log1p, INFINITY
from libc.stdint cimport int64_t, uint8_t

from labkit.speedups import feedscore as _py
from labkit.speedups.feedscore import check_shapes

# The pure twin's constants, as C values (one source of truth).
cdef int MS_SHIFT = _py.MS_SHIFT
cdef double MS_PER_HOUR = _py.MS_PER_HOUR
cdef double LN2 = _py.LN2


cdef inline bint contains(const int64_t[::1] sorted_values, int64_t x) noexcept nogil:
    """Binary search: is ``x`` in the ascending array ``sorted_values``?"""
    cdef Py_ssize_t lo = 0, hi = sorted_values.shape[0], mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if sorted_values[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo < sorted_values.shape[0] and sorted_values[lo] == x


def recency_scores(const int64_t[::1] media_ids, int64_t now_ms, double half_life_h,
                   double[::1] out):
    """Write exp(-ln2 * age_h / half_life_h) of each media ID's age into ``out``."""
    cdef Py_ssize_t i, n = media_ids.shape[0]
    cdef int64_t age_ms
    cdef double rate, age_h
    if out.shape[0] < n:
        raise ValueError(f"out has {out.shape[0]} slots for {n} media IDs; give one per ID")
    if not half_life_h > 0:
        raise ValueError(f"half_life_h={half_life_h}: give a positive number of hours")
    rate = LN2 / half_life_h
    with nogil:
        for i in range(n):
            age_ms = now_ms - (media_ids[i] >> MS_SHIFT)
            age_h = age_ms / MS_PER_HOUR if age_ms > 0 else 0.0
            out[i] = exp(-rate * age_h)


def score_candidates(const int64_t[::1] media_ids, const int64_t[::1] owner_rows,
                     const int64_t[::1] like_counts, int64_t viewer_row,
                     const int64_t[::1] followee_rows, const int64_t[::1] blocked_rows,
                     const int64_t[::1] seen_ids, const double[::1] embeddings,
                     const double[::1] quality, const uint8_t[::1] private, Py_ssize_t dim,
                     int64_t now_ms, const double[::1] params, double[::1] out):
    """Score each candidate into ``out`` (``-inf`` when the viewer may not see it).

    Returns how many candidates are visible.
    """
    cdef Py_ssize_t n = media_ids.shape[0], n_rows = quality.shape[0]
    check_shapes(n, owner_rows.shape[0], like_counts.shape[0], out.shape[0], n_rows,
                 private.shape[0], embeddings.shape[0], dim, viewer_row, params)
    cdef double half_life_h = params[0], w_recency = params[1], w_likes = params[2]
    cdef double w_affinity = params[3], w_follow = params[4], w_quality = params[5]
    cdef double rate = LN2 / half_life_h
    cdef Py_ssize_t i, k, visible = 0, v0 = viewer_row * dim, o0
    cdef int64_t media_id, row, age_ms, likes
    cdef double age_h, recency, popularity, affinity, q
    cdef bint followed
    cdef Py_ssize_t bad = -1
    with nogil:
        for i in range(n):
            media_id = media_ids[i]
            row = owner_rows[i]
            if row < -1 or row >= n_rows:
                bad = i
                break
            if contains(seen_ids, media_id) or (row >= 0 and contains(blocked_rows, row)):
                out[i] = -INFINITY
                continue
            followed = contains(followee_rows, row)
            if row >= 0 and private[row] and not followed and row != viewer_row:
                out[i] = -INFINITY
                continue
            age_ms = now_ms - (media_id >> MS_SHIFT)
            age_h = age_ms / MS_PER_HOUR if age_ms > 0 else 0.0
            recency = exp(-rate * age_h)
            likes = like_counts[i]
            popularity = log1p(<double>likes) if likes > 0 else 0.0
            affinity = 0.0
            q = 0.0
            if row >= 0:
                q = quality[row]
                if viewer_row >= 0:
                    o0 = row * dim
                    for k in range(dim):
                        affinity += embeddings[v0 + k] * embeddings[o0 + k]
            out[i] = (w_recency * recency + w_likes * popularity + w_affinity * affinity
                      + w_follow * (1.0 if followed else 0.0) + w_quality * q)
            visible += 1
    if bad >= 0:
        raise ValueError(f"owner_rows[{bad}]={owner_rows[bad]}: rows are -1 (unknown) or "
                         f"0..{n_rows - 1}")
    return visible
