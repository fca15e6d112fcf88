# cython: language_level=3, boundscheck=False, wraparound=False
"""The plain-C kernel (``feedscore.c``) called through Cython's C interop.

``cdef extern from "feedscore.h"`` declares the C function; this wrapper only unpacks the
typed memoryviews into pointers and lengths, so its timing is the C code's. Same signature
and results as ``feedscore.score_candidates``.

Introduced in notebooks/11_cython_and_memory.ipynb.
"""

from libc.stdint cimport int64_t, uint8_t

from labkit.speedups.feedscore import check_shapes


cdef extern from "feedscore.h":
    ptrdiff_t lk_score_candidates(
        const int64_t *media_ids, const int64_t *owner_rows, const int64_t *like_counts,
        ptrdiff_t n, int64_t viewer_row,
        const int64_t *followee_rows, ptrdiff_t n_followees,
        const int64_t *blocked_rows, ptrdiff_t n_blocked,
        const int64_t *seen_ids, ptrdiff_t n_seen,
        const double *embeddings, const double *quality, const uint8_t *private_flags,
        ptrdiff_t n_rows, ptrdiff_t dim, int64_t now_ms, const double *params,
        double *out) nogil


cdef const int64_t *ptr_i(const int64_t[::1] a) noexcept:
    return &a[0] if a.shape[0] else NULL


cdef const double *ptr_d(const double[::1] a) noexcept:
    return &a[0] if a.shape[0] else NULL


def score_candidates(const int64_t[::1] media_ids, const int64_t[::1] owner_rows,
                     const int64_t[::1] like_counts, int64_t viewer_row,
                     const int64_t[::1] followee_rows, const int64_t[::1] blocked_rows,
                     const int64_t[::1] seen_ids, const double[::1] embeddings,
                     const double[::1] quality, const uint8_t[::1] private, Py_ssize_t dim,
                     int64_t now_ms, const double[::1] params, double[::1] out):
    """Score each candidate into ``out`` with the C kernel; returns how many are visible."""
    cdef Py_ssize_t n = media_ids.shape[0], n_rows = quality.shape[0]
    check_shapes(n, owner_rows.shape[0], like_counts.shape[0], out.shape[0], n_rows,
                 private.shape[0], embeddings.shape[0], dim, viewer_row, params)
    cdef double *out_p = &out[0] if out.shape[0] else NULL
    cdef const uint8_t *private_p = &private[0] if private.shape[0] else NULL
    cdef const int64_t *ids_p = ptr_i(media_ids)
    cdef const int64_t *rows_p = ptr_i(owner_rows)
    cdef const int64_t *likes_p = ptr_i(like_counts)
    cdef const int64_t *followees_p = ptr_i(followee_rows)
    cdef const int64_t *blocked_p = ptr_i(blocked_rows)
    cdef const int64_t *seen_p = ptr_i(seen_ids)
    cdef const double *emb_p = ptr_d(embeddings)
    cdef const double *quality_p = ptr_d(quality)
    cdef const double *params_p = ptr_d(params)
    cdef ptrdiff_t visible
    with nogil:
        visible = lk_score_candidates(
            ids_p, rows_p, likes_p, n, viewer_row, followees_p, followee_rows.shape[0],
            blocked_p, blocked_rows.shape[0], seen_p, seen_ids.shape[0], emb_p, quality_p,
            private_p, n_rows, dim, now_ms, params_p, out_p)
    if visible < 0:
        bad = -1 - visible
        raise ValueError(f"owner_rows[{bad}]={owner_rows[bad]}: rows are -1 (unknown) or "
                         f"0..{n_rows - 1}")
    return visible
