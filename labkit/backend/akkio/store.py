"""Users' AccessState lists in the regional Cassandra clusters, fenced by placement version.

Introduced in notebooks/10_akkio_placement.ipynb. Each region's cluster has a keyspace with
one table: a partition per user, a row per item the user has seen, and two *static* columns
(one value per partition), ``version`` and ``state``, that say whether this region holds the
user's data and at which placement version:

- ``active``: the region holds the data; reads and writes are served;
- ``moving``: a migration is copying it away; reads are served, writes are refused;
- ``copying``: a migration is copying it in; nothing is served until it turns ``active``;
- no partition: not here (never was, or moved away and deleted).

Every write is a lightweight transaction whose condition is ``version = v AND state =
'active'`` on the same partition (Paxos in the one node of the region's cluster: still one
round trip for the client). So a write sent with an old version, or after the fence went up,
is refused rather than lost: the client re-resolves and writes again. That is our fence
(Akkio's paper leaves the mechanism to the storage system; Cassandra's conditional update
is the one that checks version and write on the same replica, atomically).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

__all__ = ["Fenced", "RegionStore", "migrate"]

TABLE = """
CREATE TABLE IF NOT EXISTS {ks}.access_state (
    user_id  bigint,
    seen_at  timeuuid,
    media_id bigint,
    version  int static,
    state    text static,
    PRIMARY KEY (user_id, seen_at)
) WITH CLUSTERING ORDER BY (seen_at DESC)"""


class Fenced(Exception):
    """The region does not (or no longer) serve this user at this version: re-resolve."""

    def __init__(self, user_id: int, region: str, version: int, found: tuple[Any, Any]) -> None:
        self.user_id, self.region, self.version, self.found = user_id, region, version, found
        super().__init__(f"user {user_id}: region {region} refused version {version} "
                         f"(it has version={found[0]}, state={found[1]}); ask the placement "
                         "service again")


@dataclass
class RegionStore:
    """The AccessState table of one region, through one driver session."""

    region: str
    session: Any
    keyspace: str

    def create(self, create_keyspace: bool = True) -> "RegionStore":
        """The keyspace and table (kept if there), then the prepared statements.

        ``create_keyspace=False`` when the keyspace exists and the login may not create one
        (a graded submission's role is granted its own keyspace only).
        """
        from labkit.services.cassandra.driver import DDL_TIMEOUT_S  # slow on loaded cores
        from labkit.services.cassandra.driver import create_keyspace as make_keyspace

        if create_keyspace:
            make_keyspace(self.session, self.keyspace, {self.region: 1})
        self.session.execute(TABLE.format(ks=self.keyspace), timeout=DDL_TIMEOUT_S)
        self._prepare()
        return self

    def _prepare(self) -> None:
        from cassandra import ConsistencyLevel

        ks, s = self.keyspace, self.session
        self._write = s.prepare(f"UPDATE {ks}.access_state SET media_id = ? WHERE user_id = ? "
                                f"AND seen_at = ? IF version = ? AND state = 'active'")
        self._read = s.prepare(f"SELECT version, state, media_id FROM {ks}.access_state "
                               f"WHERE user_id = ? LIMIT ?")
        self._set_state = s.prepare(f"UPDATE {ks}.access_state SET state = ? WHERE user_id = ? "
                                    f"IF version = ? AND state = ?")
        self._signup = s.prepare(f"INSERT INTO {ks}.access_state (user_id, version, state) "
                                 f"VALUES (?, 1, 'active') IF NOT EXISTS")
        self._all = s.prepare(f"SELECT seen_at, media_id, version, state FROM "
                              f"{ks}.access_state WHERE user_id = ?")
        self._all.consistency_level = ConsistencyLevel.SERIAL  # every accepted write, committed
        self._copy = s.prepare(f"INSERT INTO {ks}.access_state (user_id, seen_at, media_id) "
                               f"VALUES (?, ?, ?)")
        self._copy_static = s.prepare(f"INSERT INTO {ks}.access_state (user_id, version, state)"
                                      f" VALUES (?, ?, 'copying')")
        self._drop = s.prepare(f"DELETE FROM {ks}.access_state WHERE user_id = ?")

    def signup(self, user_id: int) -> None:
        """A new user's empty list, active at version 1 (where the user signed up)."""
        self.session.execute(self._signup, (user_id,))

    def append(self, user_id: int, version: int, media_id: int) -> None:
        """Add ``media_id`` to the user's list, if this region serves ``version``; else Fenced."""
        rs = self.session.execute(self._write, (media_id, user_id, uuid.uuid1(), version))
        row = rs.one()
        if not row[0]:  # [applied] is false: the row holds the current version and state
            raise Fenced(user_id, self.region, version, (row.version, row.state)
                         if hasattr(row, "version") else (None, None))

    def read(self, user_id: int, version: int, limit: int = 20) -> list[int]:
        """The user's latest ``limit`` items, if this region serves ``version`` (else Fenced).

        A region that is copying the user in, or has no partition, refuses; so does one at
        another version.
        """
        rows = list(self.session.execute(self._read, (user_id, limit + 1)))
        found = (rows[0].version, rows[0].state) if rows else (None, None)
        if found[0] != version or found[1] not in ("active", "moving"):
            raise Fenced(user_id, self.region, version, found)
        return [r.media_id for r in rows if r.media_id is not None][:limit]

    def fence(self, user_id: int, version: int) -> bool:
        """Stop writes at ``version`` (active -> moving); False when it was not active there."""
        return self.session.execute(self._set_state, ("moving", user_id, version, "active")
                                    ).one()[0]

    def unfence(self, user_id: int, version: int) -> None:
        self.session.execute(self._set_state, ("active", user_id, version, "moving"))

    def export(self, user_id: int) -> list[tuple[Any, int]]:
        """Every (seen_at, media_id) of the user, read at SERIAL (no accepted write missed)."""
        return [(r.seen_at, r.media_id) for r in self.session.execute(self._all, (user_id,))
                if r.seen_at is not None]

    def load(self, user_id: int, version: int, rows: list[tuple[Any, int]]) -> None:
        """Write the copied rows, marked ``copying`` at ``version`` (not served yet)."""
        self.session.execute(self._copy_static, (user_id, version))
        futures = [self.session.execute_async(self._copy, (user_id, t, m)) for t, m in rows]
        for f in futures:
            f.result()

    def preload(self, user_id: int, media_ids: list[int]) -> None:
        """Give an already signed-up user ``media_ids`` as history (plain writes, set-up only)."""
        futures = [self.session.execute_async(self._copy, (user_id, uuid.uuid1(), m))
                   for m in media_ids]
        for f in futures:
            f.result()

    def activate(self, user_id: int, version: int) -> None:
        if not self.session.execute(self._set_state, ("active", user_id, version, "copying")
                                    ).one()[0]:
            raise RuntimeError(f"user {user_id}: region {self.region} was not copying "
                               f"version {version}")

    def drop(self, user_id: int) -> None:
        self.session.execute(self._drop, (user_id,))

    def rows(self) -> int:
        """Rows stored in this region (items; a user's empty list counts as none)."""
        return self.session.execute(f"SELECT COUNT(*) FROM {self.keyspace}.access_state "
                                    "WHERE seen_at > minTimeuuid(0) ALLOW FILTERING").one()[0]


def migrate(user_id: int, version: int, src: RegionStore, dst: RegionStore,
            switch: Any) -> dict[str, float]:
    """Move one user's data from ``src`` to ``dst``; ``switch()`` commits the new location.

    1. fence: ``src`` refuses writes at ``version`` (reads still served);
    2. copy: every row accepted before the fence, read at SERIAL, into ``dst`` as ``copying``;
    3. activate ``dst`` at ``version + 1``; ``switch()`` points the location there;
    4. delete the old copy. Writes refused during 1-3 are retried by their clients against
       the new location, so no acknowledged write is lost, and no read sees a half copy.
    Returns seconds per step.
    """
    t = {"start": time.perf_counter()}
    if not src.fence(user_id, version):
        raise RuntimeError(f"user {user_id} is not active at version {version} in {src.region}")
    t["fence"] = time.perf_counter()
    try:
        rows = src.export(user_id)
        dst.load(user_id, version + 1, rows)
        dst.activate(user_id, version + 1)
        t["copy"] = time.perf_counter()
        switch()
    except BaseException:
        dst.drop(user_id)
        src.unfence(user_id, version)
        raise
    t["switch"] = time.perf_counter()
    src.drop(user_id)
    t["drop"] = time.perf_counter()
    steps = list(t)
    return {f"{b}_s": t[b] - t[a] for a, b in zip(steps, steps[1:])} | {"rows": len(rows)}
