"""The feed's hot kernel in pure Python: decode, filter and score a page's candidates.

This is the reference ("twin") of ``_feedscore.pyx`` (Cython) and ``feedscore.c`` (plain C):
all three take the same arguments and return the same numbers, which
``tests/speedups/`` checks on random inputs. ``labkit.speedups.load("feedscore")`` gives the
compiled one when it was built, else this one.

For every candidate media item (``media_ids[i]``, posted by the account in row
``owner_rows[i]`` of the ranking model, with ``like_counts[i]`` likes) the kernel

1. decodes the 64-bit ID: its top 41 bits are milliseconds since Instagram's epoch, so the
   ID alone says how old the post is (``labkit.backend.ids``);
2. filters visibility: a post the viewer has seen, from an account blocked either way, or
   from a private account the viewer does not follow, gets ``-inf``;
3. scores the rest: a weighted sum of recency (exponential decay with a half-life),
   popularity (``log1p`` of the like count), affinity (the dot product of the viewer's and
   the author's embeddings, a two-tower model), following, and the author's quality.

Arrays are anything with the buffer protocol (``array.array``): int64 (``'q'``) IDs, rows
and counts; float64 (``'d'``) embeddings (``n_rows * dim``, row-major), quality and output;
uint8 (``'B'``) private flags. ``followee_rows``, ``blocked_rows`` and ``seen_ids`` are
sorted ascending (the compiled twins binary-search them). Row -1 is an account the model
does not know (no embedding, quality 0, public).

Introduced in notebooks/11_cython_and_memory.ipynb.
"""

from __future__ import annotations

import math

# Bits of an ID below its milliseconds (13 of shard + 10 of sequence), as in labkit.backend.ids.
MS_SHIFT = 23
MS_PER_HOUR = 3_600_000.0
LN2 = math.log(2.0)
# The order of the weights in ``params`` (float64 array).
PARAMS = ("half_life_h", "w_recency", "w_likes", "w_affinity", "w_follow", "w_quality")
FILTERED = float("-inf")


def recency_scores(media_ids, now_ms, half_life_h, out):
    """Write exp(-ln2 * age_h / half_life_h) of each media ID's age into ``out``.

    The age comes from the ID itself (its milliseconds since the epoch); a post from the
    future counts as age 0. The exercise of notebook 11 asks for this in Cython.
    """
    n = len(media_ids)
    if len(out) < n:
        raise ValueError(f"out has {len(out)} slots for {n} media IDs; give one per ID")
    if not half_life_h > 0:
        raise ValueError(f"half_life_h={half_life_h}: give a positive number of hours")
    rate = LN2 / half_life_h
    for i in range(n):
        age_ms = now_ms - (media_ids[i] >> MS_SHIFT)
        age_h = age_ms / MS_PER_HOUR if age_ms > 0 else 0.0
        out[i] = math.exp(-rate * age_h)


def score_candidates(media_ids, owner_rows, like_counts, viewer_row, followee_rows,
                     blocked_rows, seen_ids, embeddings, quality, private, dim, now_ms,
                     params, out):
    """Score each candidate into ``out`` (``-inf`` when the viewer may not see it).

    Returns how many candidates are visible.
    """
    n = len(media_ids)
    n_rows = len(quality)
    check_shapes(n, len(owner_rows), len(like_counts), len(out), n_rows, len(private),
                 len(embeddings), dim, viewer_row, params)
    half_life_h, w_recency, w_likes, w_affinity, w_follow, w_quality = (
        params[0], params[1], params[2], params[3], params[4], params[5])
    rate = LN2 / half_life_h
    followees = set(followee_rows)
    blocked = set(blocked_rows)
    seen = set(seen_ids)
    v0 = viewer_row * dim
    visible = 0
    for i in range(n):
        media_id = media_ids[i]
        row = owner_rows[i]
        if row < -1 or row >= n_rows:
            raise ValueError(f"owner_rows[{i}]={row}: rows are -1 (unknown) or 0..{n_rows - 1}")
        if media_id in seen or (row >= 0 and row in blocked):
            out[i] = FILTERED
            continue
        followed = row in followees
        if row >= 0 and private[row] and not followed and row != viewer_row:
            out[i] = FILTERED
            continue
        age_ms = now_ms - (media_id >> MS_SHIFT)
        age_h = age_ms / MS_PER_HOUR if age_ms > 0 else 0.0
        recency = math.exp(-rate * age_h)
        likes = like_counts[i]
        popularity = math.log1p(likes) if likes > 0 else 0.0
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
    return visible


def check_shapes(n, n_owner_rows, n_like_counts, n_out, n_rows, n_private, n_embeddings, dim,
                 viewer_row, params):
    """Raise ValueError, naming the fix, when the arrays do not fit together.

    Shared by all three twins (the compiled ones call it once per call, not per element).
    """
    if n_owner_rows != n or n_like_counts != n:
        raise ValueError(f"media_ids, owner_rows and like_counts must have one entry per "
                         f"candidate; got {n}, {n_owner_rows}, {n_like_counts}")
    if n_out < n:
        raise ValueError(f"out has {n_out} slots for {n} candidates; give one per candidate")
    if dim < 0 or n_embeddings != n_rows * dim or n_private != n_rows:
        raise ValueError(f"the model's arrays disagree: {n_rows} quality rows, {n_private} "
                         f"private flags, {n_embeddings} embedding values for dim={dim} "
                         f"(expected {n_rows * max(dim, 0)})")
    if not -1 <= viewer_row < max(n_rows, 0) and viewer_row != -1:
        raise ValueError(f"viewer_row={viewer_row}: rows are -1 (unknown) or 0..{n_rows - 1}")
    if len(params) != len(PARAMS):
        raise ValueError(f"params has {len(params)} values; give {len(PARAMS)}: "
                         f"{', '.join(PARAMS)}")
    if not params[0] > 0:
        raise ValueError(f"half_life_h={params[0]}: give a positive number of hours")
