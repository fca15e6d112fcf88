"""The traffic a deploy is judged under: users reading posts, popular posts read most.

A workload is a database with the storage schema of notebook 01, a generated graph
(``labkit.backend.datagen``), and ``users`` accounts with tokens that play the clients. Each
request is one user (uniformly at random) reading one post, picked with the same power law
that gave the posts their likes: popular posts are also the most viewed, as on the real
service. ``share_likes`` of the requests like or unlike instead (writes on the leader).

Introduced in notebooks/13_continuous_deployment.ipynb.

>>> work = Workload.create(lab, "nb13", users=200)          # doctest: +SKIP
>>> OpenLoad(router.host, router.port, work.requests(), rate_per_s=60)  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from labkit.backend import datagen, schema
from labkit.web.loadgen import RequestFn


@dataclass
class Workload:
    """Media to read (most popular first), and the users who read them."""

    dbname: str
    media_ids: list[int]
    users: list[schema.User]
    alpha: float = 1.1

    @classmethod
    def create(cls, lab, dbname: str, *, users: int = 200, graph_users: int = 500,
               likes: int = 5_000, seed: int = 13) -> "Workload":
        """A fresh database ``dbname`` with a generated graph and ``users`` client accounts."""
        schema.create_database(lab.leader, dbname, followers=lab.followers, shards=4)
        with lab.leader.connect(dbname) as conn:
            graph = datagen.generate(conn, users=graph_users, likes=likes, seed=seed,
                                     progress=False)
            clients = [schema.create_user(conn, f"client{i}") for i in range(users)]
        for follower in lab.followers:  # reads go to the followers: they must have it all
            follower.wait_replayed(timeout_s=30)
        # datagen hands out likes by a power law over media_ids in this order.
        return cls(dbname, list(graph.media_ids), clients)

    def requests(self, share_likes: float = 0.0) -> RequestFn:
        """A ``RequestFn``: GET /api/media/<id> by popularity, or a like/unlike."""
        cum = list(itertools.accumulate(datagen.power_law_weights(len(self.media_ids),
                                                                  self.alpha)))
        headers = [({"Authorization": f"Token {u.token}"}, u.user_id) for u in self.users]

        def make(rng: random.Random) -> tuple:
            media_id = rng.choices(self.media_ids, cum_weights=cum)[0]
            auth, user_id = rng.choice(headers)
            if rng.random() < share_likes:
                method = "POST" if rng.random() < 0.5 else "DELETE"
                return method, f"/api/media/{media_id}/like", auth, f"user{user_id}"
            return "GET", f"/api/media/{media_id}", auth, f"user{user_id}"

        return make
