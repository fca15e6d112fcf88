/* The feed's hot kernel in plain C (see feedscore.h and feedscore.py for what it computes). */
#include <math.h>

#include "feedscore.h"

#define MS_SHIFT 23
#define MS_PER_HOUR 3600000.0

static int contains(const int64_t *sorted_values, ptrdiff_t n, int64_t x)
{
    ptrdiff_t lo = 0, hi = n;
    while (lo < hi) {
        ptrdiff_t mid = (lo + hi) >> 1;
        if (sorted_values[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && sorted_values[lo] == x;
}

ptrdiff_t lk_score_candidates(
    const int64_t *media_ids, const int64_t *owner_rows, const int64_t *like_counts,
    ptrdiff_t n, int64_t viewer_row,
    const int64_t *followee_rows, ptrdiff_t n_followees,
    const int64_t *blocked_rows, ptrdiff_t n_blocked,
    const int64_t *seen_ids, ptrdiff_t n_seen,
    const double *embeddings, const double *quality, const uint8_t *private_flags,
    ptrdiff_t n_rows, ptrdiff_t dim, int64_t now_ms, const double *params, double *out)
{
    const double rate = log(2.0) / params[0];
    const double w_recency = params[1], w_likes = params[2], w_affinity = params[3];
    const double w_follow = params[4], w_quality = params[5];
    const double *viewer = viewer_row >= 0 ? embeddings + viewer_row * dim : NULL;
    ptrdiff_t visible = 0;

    for (ptrdiff_t i = 0; i < n; i++) {
        const int64_t media_id = media_ids[i], row = owner_rows[i];
        if (row < -1 || row >= n_rows)
            return -1 - i;
        if (contains(seen_ids, n_seen, media_id)
            || (row >= 0 && contains(blocked_rows, n_blocked, row))) {
            out[i] = -INFINITY;
            continue;
        }
        const int followed = contains(followee_rows, n_followees, row);
        if (row >= 0 && private_flags[row] && !followed && row != viewer_row) {
            out[i] = -INFINITY;
            continue;
        }
        const int64_t age_ms = now_ms - (media_id >> MS_SHIFT);
        const double age_h = age_ms > 0 ? age_ms / MS_PER_HOUR : 0.0;
        const double recency = exp(-rate * age_h);
        const int64_t likes = like_counts[i];
        const double popularity = likes > 0 ? log1p((double)likes) : 0.0;
        double affinity = 0.0, q = 0.0;
        if (row >= 0) {
            q = quality[row];
            if (viewer_row >= 0) {
                const double *author = embeddings + row * dim;
                for (ptrdiff_t k = 0; k < dim; k++)
                    affinity += viewer[k] * author[k];
            }
        }
        out[i] = w_recency * recency + w_likes * popularity + w_affinity * affinity
                 + w_follow * (followed ? 1.0 : 0.0) + w_quality * q;
        visible++;
    }
    return visible;
}
