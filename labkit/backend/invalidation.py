"""The invalidation service: PostgreSQL's write stream in, memcached deletes out.

Introduced in notebooks/04_invalidation.ipynb.

A separate process reads a logical replication slot (the ``test_decoding`` plugin) of one
database, maps each committed change to the cache keys it affects and deletes them, the way
Facebook's mcsqueal tails MySQL's commit log. The mapping follows the storage schema of
notebook 01 and the keys of ``labkit.backend.cache``: a ``shard_NNNN.media_likes`` row (so any
like or unlike through ``labkit.backend.likes``) -> ``<prefix>:likes:<media_id>``, a ``users``
row -> ``<prefix>:profile:<id>``, a ``media`` row -> ``<prefix>:media:<id>``. A TRUNCATE names
no rows, so it invalidates every key of the kinds its tables hold (a sweep of the cache by
key prefix, ``labkit.backend.cache.delete_prefix``).
It peeks at the slot and advances it only after the deletes went out, so a crash or a stop
loses nothing: after a restart it resumes from the slot (at-least-once; a delete is
idempotent). For every commit it appends the delay from commit (PostgreSQL's commit
timestamp) to delete to ``delays.jsonl`` in its directory.

>>> svc = InvalidationService.for_lab(lab, dbname="ig", prefix="nb04").start()  # doctest: +SKIP
>>> with lab.leader.connect("ig") as conn:                                     # doctest: +SKIP
...     likes.like(conn, user_id, media_id)
>>> svc.wait_for_commits(1); svc.delays_ms()                                   # doctest: +SKIP
[3.2]
>>> svc.stop(); svc.drop_slot()                                                # doctest: +SKIP

Run by hand: ``python -m labkit.backend.invalidation --dsn "host=... dbname=ig" --slot s
--memcached 127.0.0.1:11211 --prefix ig`` (the password comes from ``PGPASSWORD``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from labkit.backend.cache import cache_key, connect_cache, delete_prefix
from labkit.services.base import HelperService, StopSignal

# table of a shard schema -> (cache key kind, the column holding the id)
KEY_RULES: dict[str, tuple[str, str]] = {
    "media_likes": ("likes", "media_id"),
    "users": ("profile", "id"),
    "media": ("media", "id"),
}
SHARD_SCHEMA = re.compile(r"^shard_\d{4}$")  # labkit.backend.schema.shard_schema's names

_CHANGE = re.compile(r"^table (?:([^.\s]+)\.)?(\S+): (INSERT|UPDATE|DELETE):")
_TRUNCATE = re.compile(r"^table (.+): TRUNCATE:")
_COMMIT = re.compile(r"^COMMIT(?: \d+)? \(at (.+)\)$")


def _kind(schema: str | None, table: str,
          rules: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    if schema is None or not SHARD_SCHEMA.match(schema.strip('"')):
        return None  # only the storage schema's shards are cached
    return rules.get(table.strip('"'))


def keys_for_change(line: str, prefix: str,
                    rules: dict[str, tuple[str, str]] = KEY_RULES) -> list[str]:
    """The cache keys one ``test_decoding`` change line affects (old and new ids of an UPDATE).

    >>> keys_for_change("table shard_0002.media_likes: UPDATE: media_id[bigint]:42 count[bigint]:7", "ig")
    ['ig:likes:42']
    """
    m = _CHANGE.match(line)
    rule = m and _kind(m.group(1), m.group(2), rules)
    if not rule:
        return []
    kind, column = rule
    ids = re.findall(rf"(?:^|\s){re.escape(column)}\[[^\]]+\]:(-?\d+)", line)
    return sorted({cache_key(prefix, kind, int(i)) for i in ids})


def prefixes_for_truncate(line: str, prefix: str,
                          rules: dict[str, tuple[str, str]] = KEY_RULES) -> list[str]:
    """The key prefixes a ``TRUNCATE`` line wipes: every key of each truncated table's kind.

    >>> prefixes_for_truncate("table shard_0001.media_likes, shard_0001.media: TRUNCATE: cascade", "ig")
    ['ig:likes:', 'ig:media:']
    """
    m = _TRUNCATE.match(line)
    if not m:
        return []
    kinds = set()
    for name in m.group(1).split(", "):
        schema, _, table = name.rpartition(".")
        rule = _kind(schema or None, table, rules)
        if rule:
            kinds.add(rule[0])
    return sorted(f"{prefix}:{kind}:" for kind in kinds)


def parse_commit_time(line: str) -> float | None:
    """Seconds since the epoch of a ``COMMIT 123 (at 2026-11-21 14:50:00.1234+00)`` line."""
    m = _COMMIT.match(line)
    if not m:
        return None
    text = m.group(1)
    if re.search(r"[+-]\d\d$", text):  # Python 3.10's fromisoformat wants +00:00
        text += ":00"
    return dt.datetime.fromisoformat(text).timestamp()


# ------------------------------------------------------------------------- the process
def run(dsn: str, slot: str, servers: Sequence[tuple[str, int]], prefix: str, *,
        delays_path: Path, poll_ms: float = 10.0, batch: int = 1000,
        application_name: str = "labkit-invalidation") -> None:
    """The service's main loop (what ``python -m labkit.backend.invalidation`` runs)."""
    stopping = StopSignal()
    cache = connect_cache(servers)
    conn = psycopg.connect(dsn, autocommit=True, application_name=application_name,
                           connect_timeout=5)
    ensure_slot(conn, slot)
    print(f"invalidation: reading slot {slot}, deleting {prefix}:* keys", flush=True)
    with open(delays_path, "a", buffering=1) as delays:
        while not stopping:
            rows = conn.execute(
                "SELECT lsn::text, data FROM pg_logical_slot_peek_changes(%s, NULL, %s, "
                "'include-timestamp', 'on', 'skip-empty-xacts', 'on')", (slot, batch)).fetchall()
            if not rows:
                time.sleep(poll_ms / 1000)
                continue
            done_lsn = apply_changes(rows, cache, prefix, delays, servers=servers)
            if done_lsn:
                # Only now is the slot moved on: a crash before this line replays the batch.
                conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)",
                             (slot, done_lsn))
    conn.close()
    cache.close()


def apply_changes(rows: Iterable[tuple[str, str]], cache: Any, prefix: str, delays: Any, *,
                  servers: Sequence[tuple[str, int]] = ()) -> str:
    """Delete the keys of every committed transaction in ``rows``; return the last commit LSN.

    A TRUNCATE in a transaction sweeps ``servers`` for every key of the truncated kinds.
    """
    keys: set[str] = set()
    sweeps: set[str] = set()
    done_lsn = ""
    for lsn, data in rows:
        if data.startswith("BEGIN"):
            keys, sweeps = set(), set()
        elif data.startswith("COMMIT"):
            if keys or sweeps:
                if keys:
                    cache.delete_many(sorted(keys), noreply=False)
                swept = sum(delete_prefix(servers, p) for p in sorted(sweeps))
                deleted_at = time.time()
                commit_ts = parse_commit_time(data)
                record = {"lsn": lsn, "keys": sorted(keys), "deleted_at": deleted_at,
                          "commit_ts": commit_ts,
                          "delay_ms": None if commit_ts is None
                          else round((deleted_at - commit_ts) * 1000, 3)}
                if sweeps:
                    record.update(swept_prefixes=sorted(sweeps), swept_keys=swept)
                delays.write(json.dumps(record) + "\n")
            done_lsn = lsn
            keys, sweeps = set(), set()
        else:
            keys.update(keys_for_change(data, prefix))
            sweeps.update(prefixes_for_truncate(data, prefix))
    return done_lsn


def ensure_slot(conn: psycopg.Connection, slot: str) -> None:
    """Create the logical slot ``slot`` (test_decoding) in conn's database unless it exists."""
    exists = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                          (slot,)).fetchone()
    if not exists:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (slot,))


# ------------------------------------------------------------------------- the service
def read_records(delays_path: Path) -> list[dict[str, Any]]:
    """The records a service appended to ``delays_path``, oldest first ([] before the first).

    A line still being written (no closing brace yet) is left for the next read.
    """
    if not delays_path.exists():
        return []
    lines = delays_path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


class InvalidationService(HelperService):
    """The invalidation process for one database, started and stopped like a lab server.

    ``dsn`` names the database (the leader's: slots live there); ``cache_servers`` are
    ``lab.cache_servers``. The slot is created in ``start()`` before the process runs, so
    nothing committed after ``start()`` returns is missed; ``drop_slot()`` removes it (a
    forgotten slot keeps WAL on the leader forever, and blocks DROP DATABASE).
    """

    kind = "invalidation"

    def __init__(self, workdir: Path, *, dsn: str, slot: str,
                 cache_servers: Sequence[tuple[str, int]], prefix: str = "ig",
                 poll_ms: float = 10.0, python: str = sys.executable,
                 timeout_s: float = 30.0) -> None:
        super().__init__(workdir, user=None, timeout_s=timeout_s)
        if not re.fullmatch(r"[a-z0-9_]{1,63}", slot):
            raise ValueError(f"slot={slot!r}: use lower-case letters, digits and _ (a slot name)")
        self.dsn, self.slot, self.prefix, self.poll_ms = dsn, slot, prefix, poll_ms
        self.cache_servers = [tuple(s) for s in cache_servers]
        self.python = python

    @classmethod
    def for_lab(cls, lab: Any, *, dbname: str, prefix: str = "ig", slot: str | None = None,
                **kw: Any) -> "InvalidationService":
        """The service for ``dbname`` on ``lab``'s leader, in ``<lab_dir>/invalidation/<slot>``."""
        slot = slot or f"inval_{dbname}".lower()
        return cls(lab.config.lab_dir / "invalidation" / slot, dsn=lab.leader.dsn(dbname),
                   slot=slot, cache_servers=lab.cache_servers, prefix=prefix, **kw)

    @property
    def application_name(self) -> str:
        return f"labkit-invalidation-{self.slot}"

    @property
    def address(self) -> str:
        return f"slot {self.slot}"

    @property
    def delays_path(self) -> Path:
        return self.workdir / "delays.jsonl"

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=3)

    def _prepare(self) -> None:
        with self._connect() as conn:
            ensure_slot(conn, self.slot)

    def _launch(self) -> None:
        params = conninfo_to_dict(self.dsn)
        password = params.pop("password", None)
        cmd = [self.python, "-m", "labkit.backend.invalidation", "--dsn", make_conninfo(**params),
               "--slot", self.slot, "--prefix", self.prefix, "--poll-ms", str(self.poll_ms),
               "--delays", str(self.delays_path), "--application-name", self.application_name]
        for host, port in self.cache_servers:
            cmd += ["--memcached", f"{host}:{port}"]
        # The password travels in the environment (libpq reads PGPASSWORD), not on `ps`.
        env = {"PGPASSWORD": password} if password else {}
        self.procs.append(self.spawn_process(f"invalidation-{self.slot}", cmd, env=env))

    def ready(self) -> bool:
        """The process is connected to the database and about to read its slot."""
        with self._connect() as conn:
            return conn.execute("SELECT 1 FROM pg_stat_activity WHERE application_name = %s",
                                (self.application_name,)).fetchone() is not None

    def probe(self) -> dict[str, Any]:
        return {"postgres_application": self.application_name}

    def version(self) -> str:
        return "test_decoding"

    def drop_slot(self) -> None:
        """Remove the slot (stop the service first); a no-op when it does not exist."""
        with self._connect() as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE slot_name = %s", (self.slot,))

    def records(self) -> list[dict[str, Any]]:
        """One record per committed transaction that touched cached data, oldest first."""
        return read_records(self.delays_path)

    def delays_ms(self) -> list[float]:
        """Commit -> delete delay of every recorded transaction, in ms."""
        return [r["delay_ms"] for r in self.records() if r["delay_ms"] is not None]

    def wait_for_commits(self, n: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Wait until ``n`` transactions in all have been invalidated; return their records."""
        deadline = time.monotonic() + timeout_s
        while True:
            records = self.records()
            if len(records) >= n:
                return records
            if time.monotonic() > deadline:
                raise TimeoutError(f"invalidation service: {len(records)} of {n} commits "
                                   f"invalidated after {timeout_s} s; see {self.log_path}"
                                   f"{self.log_tail()}")
            time.sleep(0.005)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m labkit.backend.invalidation",
                                description="Delete memcached keys for each committed change.")
    p.add_argument("--dsn", required=True, help="libpq connection string of the database")
    p.add_argument("--slot", required=True, help="logical replication slot (created if missing)")
    p.add_argument("--memcached", action="append", required=True, metavar="HOST:PORT")
    p.add_argument("--prefix", default="ig", help="cache key prefix")
    p.add_argument("--delays", type=Path, default=Path("delays.jsonl"))
    p.add_argument("--poll-ms", type=float, default=10.0)
    p.add_argument("--application-name", default="labkit-invalidation")
    args = p.parse_args(argv)
    servers = [(hp.rsplit(":", 1)[0], int(hp.rsplit(":", 1)[1])) for hp in args.memcached]
    run(args.dsn, args.slot, servers, args.prefix, delays_path=args.delays,
        poll_ms=args.poll_ms, application_name=args.application_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
