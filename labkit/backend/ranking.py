"""A feed page, assembled and ranked: candidates in, a serialisable page of posts out.

The CPU-bound half of Instagram's feed request. A *candidate source* says which posts could
be shown (here: the viewer's followees' recent posts plus a few popular suggested ones, read
from the sharded schemas of notebook 01); the ranker then does what costs CPU per request:

1. looks each author up in the ranking model (an account table and embeddings every worker
   holds in memory: ``FeedModel``);
2. decodes every media ID (its milliseconds say how old it is, its shard where it lives),
   filters visibility (seen, blocked either way, private and not followed) and scores the
   rest: recency, likes, viewer-author affinity (a dot product of embeddings), following,
   author quality. This is the hot kernel, ``labkit.speedups`` ``feedscore``, compiled with
   Cython when it was built, pure Python otherwise;
3. picks the page: best first, at most ``max_per_author`` posts of one author;
4. hydrates the page's posts (captions, from their shards: one query per shard the page
   touches) and returns a JSON-ready dict.

The source is pluggable (``CandidateSource``): notebook 09's Cassandra feeds can hand the same
ranker their candidates without touching it.

Introduced in notebooks/11_cython_and_memory.ipynb.

>>> conn = lab.follower.connect("instagram")                       # doctest: +SKIP
>>> model = FeedModel.load(conn)                                     # doctest: +SKIP
>>> page = feed_page(PostgresCandidates(conn), model, viewer_id)    # doctest: +SKIP
>>> [item["media_id"] for item in page["items"]][:3]                 # doctest: +SKIP
"""

from __future__ import annotations

import array
import random
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Iterable, Protocol, Sequence

import psycopg
from psycopg import sql

from labkit import speedups
from labkit.backend import ids, schema

DEFAULT_PAGE_SIZE = 20
MAX_SEEN = 1_000  # seen IDs a client may send with one request


@dataclass(frozen=True)
class Weights:
    """How much each signal counts in a post's score (and the recency half-life, hours)."""

    half_life_h: float = 24.0
    recency: float = 1.0
    likes: float = 0.25
    affinity: float = 1.0
    follow: float = 0.5
    quality: float = 0.3

    def params(self) -> array.array:
        """As the kernel takes them (``labkit.speedups.feedscore.PARAMS`` order)."""
        return array.array("d", [self.half_life_h, self.recency, self.likes, self.affinity,
                                 self.follow, self.quality])


@dataclass
class Candidates:
    """What a source hands the ranker: parallel arrays, one entry per candidate post."""

    media_ids: array.array  # int64
    owner_ids: list[int]
    like_counts: array.array  # int64
    followee_ids: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.media_ids)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, int, int]],
                  followee_ids: Sequence[int] = ()) -> "Candidates":
        """From (media_id, owner_id, like_count) rows; a post listed twice counts once."""
        media, owners, likes, seen = array.array("q"), [], array.array("q"), set()
        for media_id, owner_id, like_count in rows:
            if media_id not in seen:
                seen.add(media_id)
                media.append(media_id)
                owners.append(owner_id)
                likes.append(like_count)
        return cls(media, owners, likes, list(followee_ids))


class CandidateSource(Protocol):
    """Where candidates come from (PostgreSQL here; Cassandra feeds in notebook 09)."""

    def candidates(self, viewer_id: int) -> Candidates:
        """The posts the viewer's feed may show, and whom the viewer follows."""

    def details(self, media_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Per media ID, what the page shows beyond the ID (at least ``caption``)."""


class PostgresCandidates:
    """Candidates from the sharded schemas: followees' recent posts and popular suggestions.

    One query reads whom the viewer follows (in the viewer's shard); the followees' IDs say
    which shards hold their posts, and each shard answers one query: the latest
    ``per_author`` posts of each of its followees (at most ``per_shard`` in all) plus its
    newest ``suggested_per_shard`` posts from anyone (suggestions: the viewer may not follow
    their authors, so the private filter matters). Give it a follower connection.
    """

    def __init__(self, conn: psycopg.Connection, *, per_author: int = 10,
                 per_shard: int = 400, suggested_per_shard: int = 25) -> None:
        self.conn, self.per_author, self.per_shard = conn, per_author, per_shard
        self.suggested_per_shard = suggested_per_shard
        self._shards: list[int] | None = None

    def shards(self) -> list[int]:
        if self._shards is None:
            self._shards = schema.shards(self.conn)
        return self._shards

    def candidates(self, viewer_id: int) -> Candidates:
        q = sql.SQL("SELECT followee_id FROM {}.follows WHERE follower_id = %s").format(
            schema.schema_of(viewer_id))
        try:
            followees = [r[0] for r in self.conn.execute(q, (viewer_id,))]
        except (psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedTable):
            raise schema.NotFound(f"no user {viewer_id}") from None
        by_shard: dict[int, list[int]] = {s: [] for s in self.shards()}
        for followee in followees:
            by_shard.setdefault(ids.shard_of(followee), []).append(followee)
        rows: list[tuple[int, int, int]] = []
        for shard, owners in sorted(by_shard.items()):
            if shard not in self.shards():
                continue  # followees in a shard this database does not have
            rows += self.conn.execute(_CANDIDATES_SQL.format(s=sql.Identifier(
                schema.shard_schema(shard))), {"owners": owners, "per_author": self.per_author,
                                               "per_shard": self.per_shard,
                                               "suggested": self.suggested_per_shard}).fetchall()
        return Candidates.from_rows(rows, followees)

    def details(self, media_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        by_shard: dict[int, list[int]] = {}
        for media_id in media_ids:
            by_shard.setdefault(ids.shard_of(media_id), []).append(media_id)
        out: dict[int, dict[str, Any]] = {}
        for shard, wanted in by_shard.items():
            q = sql.SQL("SELECT id, caption FROM {}.media WHERE id = ANY(%s)").format(
                sql.Identifier(schema.shard_schema(shard)))
            for media_id, caption in self.conn.execute(q, (wanted,)):
                out[media_id] = {"caption": caption}
        return out


# Each followee's latest posts (index media_by_user, at most per_author each), newest first,
# and the shard's newest posts from anyone (suggestions; primary-key index, newest first).
_CANDIDATES_SQL = sql.SQL("""
(SELECT m.id, m.user_id, coalesce(c.count, 0)
   FROM unnest(%(owners)s::bigint[]) AS o (user_id)
   CROSS JOIN LATERAL (SELECT id, user_id FROM {s}.media WHERE user_id = o.user_id
                        ORDER BY id DESC LIMIT %(per_author)s) m
   LEFT JOIN {s}.media_likes c ON c.media_id = m.id
  ORDER BY m.id DESC LIMIT %(per_shard)s)
UNION ALL
(SELECT m.id, m.user_id, coalesce(c.count, 0) FROM {s}.media m
   LEFT JOIN {s}.media_likes c ON c.media_id = m.id
  ORDER BY m.id DESC LIMIT %(suggested)s)
""")


# ------------------------------------------------------------------------------- the model

class Account:
    """One row of the account table every worker keeps: who it is and whom it blocks.

    A slotted object per account, as a Python service keeps them: each is a garbage-collected
    container, which is what makes the table's pages private again after ``fork`` when the
    collector walks them (notebook 11, shared memory).
    """

    __slots__ = ("user_id", "username", "row", "is_private", "blocked")

    def __init__(self, user_id: int, username: str, row: int, is_private: bool,
                 blocked: tuple[int, ...]) -> None:
        self.user_id, self.username, self.row = user_id, username, row
        self.is_private, self.blocked = is_private, blocked


class FeedModel:
    """The ranking model: an account table, author embeddings and quality, in memory.

    A stand-in for a model trained offline: embeddings and quality are seeded random numbers
    (what matters here is the work per candidate, not the ranking's quality), and since the
    storage schema has no privacy or block tables yet, ``private_share`` of the accounts are
    private and ``block_share`` of them block one random account. Built once per process;
    under gunicorn's ``preload_app`` once in the master, then shared by the workers.
    """

    def __init__(self, accounts: Sequence[tuple[int, str]], *, dim: int = 16,
                 private_share: float = 0.1, block_share: float = 0.02, seed: int = 11,
                 private_ids: Iterable[int] | None = None,
                 blocks: Iterable[tuple[int, int]] | None = None) -> None:
        """``private_ids`` and ``blocks`` ((blocker, blocked) pairs), when given, replace
        the random privacy and blocks (for tests and demonstrations)."""
        rng = random.Random(seed)
        accounts = sorted(accounts)
        self.dim = dim
        self.rows: dict[int, int] = {}
        self.accounts: dict[int, Account] = {}
        self.blocked_by: dict[int, list[int]] = {}
        user_ids = [user_id for user_id, _ in accounts]
        private = set(private_ids) if private_ids is not None else None
        chosen: dict[int, list[int]] = {}
        for blocker, blocked in blocks or ():
            chosen.setdefault(blocker, []).append(blocked)
        for row, (user_id, username) in enumerate(accounts):
            blocked = (rng.choice(user_ids),) if rng.random() < block_share else ()
            is_private = rng.random() < private_share
            if blocks is not None:
                blocked = tuple(chosen.get(user_id, ()))
            if private is not None:
                is_private = user_id in private
            self.rows[user_id] = row
            self.accounts[user_id] = Account(user_id, username, row, is_private, blocked)
            for other in blocked:
                self.blocked_by.setdefault(other, []).append(user_id)
        self.private = array.array("B", [a.is_private for a in self.accounts.values()])
        self.quality = array.array("d", [rng.random() for _ in accounts])
        scale = dim ** -0.5 if dim else 0.0
        self.embeddings = array.array("d", [rng.gauss(0.0, scale)
                                            for _ in range(len(accounts) * dim)])

    @classmethod
    def load(cls, conn: psycopg.Connection, **kwargs: Any) -> "FeedModel":
        """Build the model for every account in ``conn``'s database (all shards)."""
        accounts: list[tuple[int, str]] = []
        for shard in schema.shards(conn):
            q = sql.SQL("SELECT id, username FROM {}.users").format(
                sql.Identifier(schema.shard_schema(shard)))
            accounts += conn.execute(q).fetchall()
        return cls(accounts, **kwargs)

    def __len__(self) -> int:
        return len(self.rows)

    def rows_of(self, user_ids: Iterable[int]) -> array.array:
        """The model rows of these accounts (-1 for an account the model does not know)."""
        get = self.rows.get
        return array.array("q", [get(u, -1) for u in user_ids])

    def blocked_rows(self, viewer_id: int) -> array.array:
        """Sorted rows of the accounts the viewer blocks or is blocked by."""
        account = self.accounts.get(viewer_id)
        others = list(account.blocked) if account else []
        others += self.blocked_by.get(viewer_id, [])
        return array.array("q", sorted({self.rows[u] for u in others if u in self.rows}))


# ------------------------------------------------------------------------------- the page

def kernel(name: str = "compiled") -> ModuleType:
    """The feedscore kernel: ``compiled`` (Cython when built, else pure) or ``pure``."""
    if name == "pure":
        return speedups.implementations("feedscore")["python"]
    if name == "compiled":
        return speedups.load("feedscore")
    raise ValueError(f"kernel={name!r}: choose 'compiled' or 'pure'")


def kernel_args(candidates: Candidates, model: FeedModel, viewer_id: int, *,
                seen: Iterable[int] = (), weights: Weights = Weights(),
                now_ms: int | None = None) -> dict[str, Any]:
    """The feedscore kernel's arguments for these candidates (``out`` included)."""
    return dict(
        media_ids=candidates.media_ids, owner_rows=model.rows_of(candidates.owner_ids),
        like_counts=candidates.like_counts, viewer_row=model.rows.get(viewer_id, -1),
        followee_rows=array.array("q", sorted(model.rows_of(candidates.followee_ids))),
        blocked_rows=model.blocked_rows(viewer_id), seen_ids=array.array("q", sorted(set(seen))),
        embeddings=model.embeddings, quality=model.quality, private=model.private,
        dim=model.dim, now_ms=ids.now_ms() if now_ms is None else now_ms,
        params=weights.params(), out=array.array("d", bytes(8 * len(candidates))))


def rank(candidates: Candidates, model: FeedModel, viewer_id: int, *,
         seen: Iterable[int] = (), weights: Weights = Weights(), now_ms: int | None = None,
         scorer: ModuleType | None = None) -> tuple[array.array, int]:
    """Score every candidate for ``viewer_id``; ``(scores, visible)``, -inf for hidden ones."""
    args = kernel_args(candidates, model, viewer_id, seen=seen, weights=weights, now_ms=now_ms)
    visible = (scorer or kernel()).score_candidates(**args)
    return args["out"], visible


def select_page(candidates: Candidates, scores: Sequence[float], *,
                count: int = DEFAULT_PAGE_SIZE, max_per_author: int = 2) -> list[int]:
    """Indices of the page's posts: best score first (newest first on a tie), at most
    ``max_per_author`` posts of one author, hidden (-inf) posts never."""
    order = sorted(((s, m, i) for i, (s, m) in enumerate(zip(scores, candidates.media_ids))
                    if s != float("-inf")), reverse=True)
    page: list[int] = []
    per_author: dict[int, int] = {}
    for _, _, i in order:
        owner = candidates.owner_ids[i]
        if per_author.get(owner, 0) < max_per_author:
            per_author[owner] = per_author.get(owner, 0) + 1
            page.append(i)
            if len(page) == count:
                break
    return page


def feed_page(source: CandidateSource, model: FeedModel, viewer_id: int, *,
              seen: Iterable[int] = (), count: int = DEFAULT_PAGE_SIZE,
              max_per_author: int = 2, weights: Weights = Weights(),
              now_ms: int | None = None, scorer: ModuleType | None = None) -> dict[str, Any]:
    """One feed page for ``viewer_id``: candidates, ranked, picked, hydrated, JSON-ready."""
    if not 1 <= count <= 100:
        raise ValueError(f"count={count}: ask for 1 to 100 posts per page")
    candidates = source.candidates(viewer_id)
    scores, visible = rank(candidates, model, viewer_id, seen=seen, weights=weights,
                           now_ms=now_ms, scorer=scorer)
    page = select_page(candidates, scores, count=count, max_per_author=max_per_author)
    details = source.details([candidates.media_ids[i] for i in page])
    followees = set(candidates.followee_ids)
    items = []
    for i in page:
        media_id, owner = candidates.media_ids[i], candidates.owner_ids[i]
        account = model.accounts.get(owner)
        decoded = ids.decode(media_id)
        items.append({"media_id": media_id, "user_id": owner,
                      "username": account.username if account else None,
                      **details.get(media_id, {"caption": None}),
                      "like_count": candidates.like_counts[i],
                      "taken_at": decoded.created_at.isoformat(), "shard": decoded.shard,
                      "followed": owner in followees, "score": round(scores[i], 6)})
    return {"viewer_id": viewer_id, "items": items, "candidates": len(candidates),
            "visible": visible}


def parse_seen(text: str | None) -> list[int]:
    """Media IDs from ``seen=1,2,3`` (what a client already showed), at most ``MAX_SEEN``."""
    if not text:
        return []
    parts = [p for p in text.split(",") if p.strip()]
    if len(parts) > MAX_SEEN:
        raise ValueError(f"seen lists {len(parts)} IDs; send at most {MAX_SEEN} (the most "
                         "recent ones)")
    return [schema.parse_id(p.strip()) for p in parts]
