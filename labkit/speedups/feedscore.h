/* The feed's hot kernel in plain C: the twin of feedscore.py and _feedscore.pyx.
 *
 * Called from Python through Cython's C interop (_feedscore_c.pyx: `cdef extern from`),
 * so notebook 11 can time Python, Cython and hand-written C in the same run.
 * Arguments mean what they mean in feedscore.py; the caller has checked the shapes.
 * Returns the number of visible candidates, or -1 - i when owner_rows[i] is out of range.
 */
#ifndef LABKIT_FEEDSCORE_H
#define LABKIT_FEEDSCORE_H

#include <stddef.h>
#include <stdint.h>

ptrdiff_t lk_score_candidates(
    const int64_t *media_ids, const int64_t *owner_rows, const int64_t *like_counts,
    ptrdiff_t n, int64_t viewer_row,
    const int64_t *followee_rows, ptrdiff_t n_followees,
    const int64_t *blocked_rows, ptrdiff_t n_blocked,
    const int64_t *seen_ids, ptrdiff_t n_seen,
    const double *embeddings, const double *quality, const uint8_t *private_flags,
    ptrdiff_t n_rows, ptrdiff_t dim, int64_t now_ms, const double *params, double *out);

#endif
