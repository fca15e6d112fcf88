"""The leader's heartbeat: a row updated every few ms, from which a follower's lag is read.

A follower's lag in ms is how far its visible state is behind the leader's clock. PostgreSQL
has no direct measure of that: ``pg_stat_replication.replay_lag`` is the delay of the last
WAL the follower replayed (stale after a quiet spell: it said 0.4 ms for a follower held
500 ms back), and ``pg_last_xact_replay_timestamp()`` only moves when there are commits to
replay. So the lab does what pt-heartbeat does for MySQL: a small process writes the leader's
clock into a heartbeat row every ``interval_ms``; a follower's lag is its own clock minus the
newest heartbeat it shows (and 0 when it has replayed everything the leader had written).
The figure is an upper bound, at most one interval above the truth.

Why 100 ms: the lag figure can be up to one interval too high, and the lab injects delays of
250 ms and more, so 100 ms keeps that error small. Each beat costs one small commit: about
140 bytes of WAL and one WAL flush on the leader, so 10 a second is ~1.4 KB/s of WAL (about
120 MB a day, recycled at checkpoints, but also what an inactive replication slot holds back)
and 0.25% of a core for the writer (measured). pt-heartbeat's default of 1 s would blur the
delays the lab teaches with; 10 ms would flush the WAL 100 times a second beside the
workload being measured.

The beat runs in the ``postgres`` database with ``synchronous_commit = local``: a leader
switched to ``remote_apply`` with a delayed follower must not hold it back (the beat would
then measure its own stall), and logical decoding slots of other databases (the invalidation
service's) skip its changes.

>>> hb = Heartbeat(Path("/tmp/lab/postgres/heartbeat"), dsn=leader.dsn())   # doctest: +SKIP
>>> hb.start().age_ms()                                                      # doctest: +SKIP
12.5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from labkit._proc import spawn
from labkit.services.base import NativeService, StopSignal

TABLE = "labkit_heartbeat"  # in the ``postgres`` database of the leader (replicated as usual)
INTERVAL_MS = 100
APPLICATION_NAME = "labkit-heartbeat"
# A beat older than this means the writer is not running (a loaded machine delays a beat by
# tens of ms, never seconds): a lag computed from it would be wrong, so lag() refuses.
STALE_MS = 5000

CREATE_SQL = f"""
CREATE TABLE IF NOT EXISTS public.{TABLE} (
    id int PRIMARY KEY CHECK (id = 1),
    ts timestamptz NOT NULL
);
INSERT INTO public.{TABLE} VALUES (1, clock_timestamp()) ON CONFLICT (id) DO NOTHING;
"""
BEAT_SQL = f"UPDATE public.{TABLE} SET ts = clock_timestamp() WHERE id = 1"
AGE_MS_SQL = f"SELECT extract(epoch FROM clock_timestamp() - ts) * 1000 FROM public.{TABLE}"


def run(dsn: str, interval_ms: float = INTERVAL_MS) -> None:
    """Beat every ``interval_ms`` until SIGTERM (what ``python -m labkit.services.heartbeat`` runs).

    Beats keep a fixed rate (a slow beat does not shift the next ones); a lost connection (a
    leader restart) is retried every second, so the writer outlives it.
    """
    stopping = StopSignal()
    conn: psycopg.Connection | None = None
    next_beat = time.monotonic()
    while not stopping:
        try:
            if conn is None or conn.closed or conn.broken:
                # local: never wait for a (possibly delayed or stopped) synchronous standby.
                conn = psycopg.connect(dsn, autocommit=True, connect_timeout=5,
                                       application_name=APPLICATION_NAME,
                                       options="-c synchronous_commit=local")
                print(f"heartbeat: writing {TABLE} every {interval_ms:g} ms", flush=True)
            conn.execute(BEAT_SQL)
        except psycopg.Error as e:
            print(f"heartbeat: {type(e).__name__}: {e}; retrying in 1 s", flush=True)
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(1)
            next_beat = time.monotonic()
            continue
        next_beat += interval_ms / 1000
        time.sleep(max(0.0, next_beat - time.monotonic()))
        if time.monotonic() - next_beat > 1:  # fell far behind (paused): do not burst
            next_beat = time.monotonic()
    if conn is not None:
        conn.close()


class Heartbeat(NativeService):
    """The heartbeat writer of one PostgreSQL leader, a member of the ``Postgres`` service.

    ``dsn`` is the leader's ``postgres`` database. Ready once a beat less than a few intervals
    old is in the row (a real query on the leader).
    """

    kind = "heartbeat"

    def __init__(self, workdir: Path, *, dsn: str, interval_ms: float = INTERVAL_MS,
                 python: str = sys.executable, timeout_s: float = 30.0) -> None:
        # Runs as the current user: the interpreter may live where the server account
        # cannot reach (the same reason as the invalidation service and Celery workers).
        super().__init__(workdir, user=None, timeout_s=timeout_s)
        if interval_ms <= 0:
            raise ValueError(f"interval_ms={interval_ms}: the heartbeat needs a positive interval")
        self.dsn, self.interval_ms, self.python = dsn, interval_ms, python
        self._prepared_at: Any = None  # the leader's clock before this process was launched

    @property
    def name(self) -> str:
        return "postgres-heartbeat"

    @property
    def address(self) -> str:
        return f"every {self.interval_ms:g} ms"

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=3)

    def _prepare(self) -> None:
        with self._connect() as conn:
            conn.execute(CREATE_SQL)
            self._prepared_at = conn.execute("SELECT clock_timestamp()").fetchone()[0]

    def _launch(self) -> None:
        params = conninfo_to_dict(self.dsn)
        password = params.pop("password", None)
        cmd = [self.python, "-m", "labkit.services.heartbeat", "--dsn", make_conninfo(**params),
               "--interval-ms", str(self.interval_ms)]
        # The password travels in the environment (libpq reads PGPASSWORD), not on `ps`.
        env = {"PGPASSWORD": password} if password else {}
        self.procs.append(spawn("heartbeat", cmd, cwd=self.workdir, log_path=self.log_path,
                                user=None, env=env))

    def age_ms(self) -> float:
        """How old the newest beat on the leader is, in ms (a few ms to one interval)."""
        with self._connect() as conn:
            return float(conn.execute(AGE_MS_SQL).fetchone()[0])

    def ready(self) -> bool:
        """A beat of this process is in the row (after a start), or a recent one (reattached)."""
        if self._prepared_at is None:
            return self.age_ms() < max(5 * self.interval_ms, 1000)
        with self._connect() as conn:
            return conn.execute(f"SELECT ts > %s FROM public.{TABLE}",
                                (self._prepared_at,)).fetchone()[0]

    def version(self) -> str:
        return f"last beat {self.age_ms():.0f} ms ago"

    def _state(self) -> dict[str, Any]:
        return {"interval_ms": self.interval_ms}

    def _restore(self, state: dict[str, Any]) -> None:
        self.interval_ms = state.get("interval_ms", self.interval_ms)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m labkit.services.heartbeat",
                                description="Write the leader's clock into a heartbeat row.")
    p.add_argument("--dsn", required=True, help="libpq connection string (password in PGPASSWORD)")
    p.add_argument("--interval-ms", type=float, default=INTERVAL_MS)
    args = p.parse_args(argv)
    run(args.dsn, args.interval_ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
