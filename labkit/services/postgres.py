"""PostgreSQL 15: a leader and N streaming-replication followers, from the installed binaries.

Every TCP login needs the lab's generated password (scram-sha-256); there is no trust auth
and no Unix socket. ``wal_level=logical`` so later notebooks can read the write stream.
Each follower's replay delay can be changed while it runs, and its lag read in bytes and ms
(ms from the leader's heartbeat row, ``labkit.services.heartbeat``). ``wait_replayed`` is the
one way the lab waits for a follower to catch up.

>>> from pathlib import Path
>>> with Postgres(Path("/tmp/lab/postgres"), password="s3cret", followers=1) as pg:  # doctest: +SKIP
...     pg.follower.set_delay(500)
...     pg.follower.wait_replayed()          # about 500 ms: the delay is now in force
...     pg.leader.execute("CREATE TABLE t (x int)")
...     pg.follower.lag()
Lag(bytes=3312, ms=561.2)
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from labkit._proc import PortAllocator, ServiceError, own, run, spawn
from labkit.config import SYNCHRONOUS_COMMIT_MODES
from labkit.services import heartbeat
from labkit.services.base import NativeService, ServiceGroup
from labkit.services.templates import template_dir

SUPERUSER = "postgres"
SYSTEM_DATABASES = ("postgres", "template0", "template1")


@dataclass(frozen=True)
class Lag:
    """How far a follower is behind its leader: WAL not replayed yet, and its visible state's age.

    ``ms`` is the follower's clock minus the newest heartbeat it shows (0 when it has replayed
    everything the leader had written): a reader of the follower misses the writes of about
    the last ``ms`` milliseconds. It errs high by at most one heartbeat interval.
    """

    bytes: int
    ms: float


class ReplayTimeout(ServiceError, TimeoutError):
    """A follower did not replay up to a WAL position in time; the message says what to check."""


def current_lsn(leader_conn: psycopg.Connection) -> str:
    """The leader's WAL insert position: a follower that replayed it has every write made so far.

    Taken after a commit, it is at or past the end of the commit record, so it also covers
    commits whose WAL is not flushed yet (``synchronous_commit = off``).
    """
    return leader_conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]


def replayed(follower_conn: psycopg.Connection, lsn: str, timeout_s: float = 0.0,
             poll_s: float = 0.002) -> bool:
    """True once the follower behind ``follower_conn`` has replayed WAL up to ``lsn``.

    The one poll loop of the lab: waits at most ``timeout_s`` (0: just look), polling every
    ``poll_s``, and returns False when time runs out. It takes an open connection so that
    the read-your-writes hot path pays no login; ``PostgresServer.wait_replayed`` is the
    convenient form. Replay only moves forward: once True, every later query on that follower
    sees what was written up to ``lsn``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        (done,) = follower_conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                        (lsn,)).fetchone()
        if done:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


class PostgresServer(NativeService):
    """One postmaster: the leader, or follower ``index`` replicating from ``leader``.

    >>> leader = PostgresServer(Path("/tmp/lab/pg/leader"), password="pw").start()  # doctest: +SKIP
    >>> leader.execute("SELECT 1")                                                  # doctest: +SKIP
    [(1,)]
    """

    kind = "postgres"

    def __init__(self, workdir: Path, *, password: str, index: int = 0,
                 leader: "PostgresServer | None" = None, port: int = 0,
                 bin_dir: str = "/usr/lib/postgresql/15/bin", host: str = "127.0.0.1",
                 user: str | None = None, timeout_s: float = 60.0) -> None:
        super().__init__(workdir, host=host, user=user, timeout_s=timeout_s)
        self.password, self.index, self.leader, self.port = password, index, leader, port
        self.bin_dir = bin_dir

    # -- accessors ----------------------------------------------------------------------
    @property
    def is_follower(self) -> bool:
        return self.leader is not None

    @property
    def name(self) -> str:
        return f"follower{self.index}" if self.is_follower else "leader"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "postgres.log"

    #: What to do when the leader's heartbeat is not written (labkit starts it at `up`).
    heartbeat_fix = "run `labkit up` to restart it"

    @property
    def login(self) -> str:
        """The database role the lab logs in as (its superuser)."""
        return SUPERUSER

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string with the lab's superuser credentials."""
        return (f"host={self.host} port={self.port} user={SUPERUSER} "
                f"password={self.password} dbname={dbname}")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection:
        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("connect_timeout", 3)
        return psycopg.connect(self.dsn(dbname), **kwargs)

    def execute(self, sql: str, params: Any = None, dbname: str = "postgres") -> list[tuple]:
        """Run one statement in its own autocommit connection; return its rows (if any)."""
        with self.connect(dbname) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    # -- lifecycle ----------------------------------------------------------------------
    def _bin(self, name: str) -> str:
        path = Path(self.bin_dir) / name
        if not path.exists():
            from labkit._proc import install_hint
            raise ServiceError(f"{name} not found in {self.bin_dir}; {install_hint('postgres')}")
        return str(path)

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def _prepare(self) -> None:
        if not self.port:
            self.port = PortAllocator(self.host).take()
        if not self.initialized:
            if self.is_follower:
                self._base_backup()
            else:
                self._initdb()
        runtime = [f"listen_addresses = '{self.host}'", f"port = {self.port}"]
        if self.is_follower:
            assert self.leader is not None
            runtime += [
                f"primary_conninfo = 'host={self.leader.host} port={self.leader.port} "
                f"user={SUPERUSER} password={self.password} application_name={self.name}'",
                f"primary_slot_name = '{self.name}'",
            ]
        conf = self.data_dir / "labkit-runtime.conf"
        conf.write_text("# Written by labkit at every start: addresses and ports change.\n"
                        + "\n".join(runtime) + "\n")
        conf.chmod(0o600)

    def _initdb(self) -> None:
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)  # a half-made directory from an interrupted init
        pwfile = self.workdir / ".pwfile"
        pwfile.write_text(self.password + "\n")
        own(pwfile, self.user)
        try:
            run([self._bin("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                 f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--locale=C",
                 "--no-sync"], user=self.user, what="initdb (postgres)")
        finally:
            pwfile.unlink(missing_ok=True)
        templates = template_dir("postgres")
        shutil.copy(templates / "pg_hba.conf", self.data_dir / "pg_hba.conf")
        shutil.copy(templates / "postgresql.conf", self.data_dir / "labkit.conf")
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write("\ninclude 'labkit.conf'\ninclude_if_exists 'labkit-runtime.conf'\n")

    def _base_backup(self) -> None:
        assert self.leader is not None
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.leader.drop_idle_slot(self.name)
        run([self._bin("pg_basebackup"), "-h", self.leader.host, "-p", str(self.leader.port),
             "-U", SUPERUSER, "-D", str(self.data_dir), "-X", "stream", "-c", "fast",
             "-C", "-S", self.name, "--no-sync"],
            user=self.user, env={"PGPASSWORD": self.password}, what="pg_basebackup (postgres)")
        (self.data_dir / "standby.signal").touch()

    def discard(self) -> None:
        """Throw this server's data away (a follower of a cluster that is gone)."""
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def drop_idle_slot(self, name: str) -> None:
        """Drop replication slot ``name`` unless in use: a follower of that name is made anew.

        (A slot left by an earlier follower of this name would make ``pg_basebackup -C`` fail.)
        """
        self.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                     "WHERE slot_name = %s AND NOT active", (name,))

    def _launch(self) -> None:
        self.procs.append(spawn(f"postgres-{self.name}", [self._bin("postgres"), "-D",
                                str(self.data_dir)], cwd=self.workdir, log_path=self.log_path,
                                user=self.user))

    def stop_signal(self, proc: Any) -> int:
        import signal
        return signal.SIGINT  # "fast" shutdown; SIGTERM would wait for every client to leave

    def ready(self) -> bool:
        with self.connect(connect_timeout=1) as conn:
            in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        return in_recovery == self.is_follower

    def version(self) -> str:
        return self.execute("SHOW server_version")[0][0]

    def drop_database(self, name: str, timeout_s: float = 10.0) -> None:
        """Drop database ``name`` if it exists, with its open sessions and logical slots.

        A logical replication slot (an invalidation service's) pins its database: DROP
        DATABASE refuses while one exists, even WITH (FORCE). So the slots go first, and with
        them a reader still using one (a service left over from an interrupted notebook exits
        when cut off).
        """
        slots = "FROM pg_replication_slots WHERE database = %s"
        deadline = time.monotonic() + timeout_s
        while self.execute(f"SELECT 1 {slots}", (name,)):
            self.execute(f"SELECT pg_terminate_backend(active_pid) {slots} AND active", (name,))
            self.execute(f"SELECT pg_drop_replication_slot(slot_name) {slots} AND NOT active",
                         (name,))
            if time.monotonic() > deadline:
                raise ServiceError(f"the replication slots of {name} stay in use; stop their "
                                   "readers (pg_replication_slots.active_pid)")
            time.sleep(0.05)
        self.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))

    # -- follower controls --------------------------------------------------------------
    def set_delay(self, delay_ms: int, *, settle: bool = False) -> None:
        """Make this follower apply each commit ``delay_ms`` after the leader made it.

        The delay holds back commits made from now on; what was applied stays. So the
        follower's lag grows to ``delay_ms`` over the next ``delay_ms``; ``settle=True``
        returns only then (a commit made after the change has been held back and applied),
        so that ``lag()`` reads about ``delay_ms`` at once.
        """
        self._require_follower("set_delay")
        if delay_ms < 0:
            raise ValueError(f"delay_ms={delay_ms}: a replay delay cannot be negative")
        with self.connect() as conn:
            conn.execute(f"ALTER SYSTEM SET recovery_min_apply_delay = '{int(delay_ms)}ms'")
            conn.execute("SELECT pg_reload_conf()")
        # The reload is asynchronous; wait until the server reports the new value.
        deadline = time.monotonic() + 5
        while self.delay_ms() != int(delay_ms) and time.monotonic() < deadline:
            time.sleep(0.01)
        if settle:
            self._settle(delay_ms)

    def _settle(self, delay_ms: int) -> None:
        """Wait until a commit made now has been held ``delay_ms`` and applied here."""
        assert self.leader is not None
        for _ in range(3):  # the replaying process may pick up the new setting a moment late
            with self.leader.connect(options="-c synchronous_commit=local") as conn:
                conn.execute(heartbeat.BEAT_SQL)  # an extra beat: a commit to be held back
                lsn = current_lsn(conn)
            t0 = time.monotonic()
            self.wait_replayed(lsn, timeout_s=delay_ms / 1000 + 10)
            if (time.monotonic() - t0) * 1000 >= 0.8 * delay_ms:
                return

    def delay_ms(self) -> int:
        """The replay delay in force (``recovery_min_apply_delay``), in ms."""
        self._require_follower("delay_ms")
        rows = self.execute("SELECT setting::int FROM pg_settings "
                            "WHERE name = 'recovery_min_apply_delay'")
        return int(rows[0][0])

    def lag(self) -> Lag:
        """Bytes of WAL not yet replayed here, and how old this follower's visible state is (ms).

        ``ms`` follows pt-heartbeat: this server's clock minus the newest heartbeat row it
        shows (the leader writes one every ``heartbeat.INTERVAL_MS``), and 0 when it has
        replayed everything the leader had written when asked. A follower held 500 ms back
        reads about 500 ms at any moment, also right after a single write.
        """
        self._require_follower("lag")
        assert self.leader is not None
        with self.leader.connect() as conn:
            leader_lsn, beat_age_ms = conn.execute(
                f"SELECT pg_current_wal_lsn()::text, ({heartbeat.AGE_MS_SQL})").fetchone()
        # Asked of the follower itself (its WAL receiver), not of the leader by name: an
        # external follower's name in pg_stat_replication is whatever its own config says.
        with self.connect() as conn:
            streaming, lag_bytes, visible_age_ms = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming'), "
                "pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn())::bigint, "
                f"({heartbeat.AGE_MS_SQL})", (leader_lsn,)).fetchone()
        if not streaming:
            raise ServiceError(f"{self.name} is not streaming from the leader; see {self.log_path}")
        if beat_age_ms is None or beat_age_ms > heartbeat.STALE_MS:
            raise ServiceError(
                f"the leader's heartbeat is not being written (last beat "
                f"{(beat_age_ms or 0) / 1000:.0f} s ago), so the lag in ms cannot be read; "
                f"{self.heartbeat_fix}")
        if lag_bytes <= 0:  # replayed all the leader had when we asked: nothing is missing
            return Lag(0, 0.0)
        return Lag(int(lag_bytes), max(0.0, float(visible_age_ms)))

    def wait_replayed(self, lsn: str | None = None, *, timeout_s: float = 10.0,
                      conn: psycopg.Connection | None = None) -> None:
        """Return once this follower has replayed up to ``lsn`` (default: all the leader has now).

        After it, reads here see every write the leader had made when it was called (a
        CREATE DATABASE, a schema, a like). ``conn`` reuses an open connection to this
        follower (any database). Raises ``ReplayTimeout`` after ``timeout_s``.
        """
        self._require_follower("wait_replayed")
        assert self.leader is not None
        if lsn is None:
            with self.leader.connect() as lconn:
                lsn = current_lsn(lconn)
        if conn is not None:
            ok = replayed(conn, lsn, timeout_s)
        else:
            with self.connect() as own_conn:
                ok = replayed(own_conn, lsn, timeout_s)
        if not ok:
            raise ReplayTimeout(
                f"{self.name} did not replay up to {lsn} within {timeout_s:g} s (its replay "
                f"delay is {self.delay_ms()} ms); check `labkit status`, or set_delay(0)")

    def _require_follower(self, what: str) -> None:
        if not self.is_follower:
            raise ServiceError(f"{what}() is for followers; the leader is never behind itself")

    def _state(self) -> dict[str, Any]:
        return {"index": self.index, "port": self.port}

    def _restore(self, state: dict[str, Any]) -> None:
        self.index, self.port = state["index"], state["port"]


class Postgres(ServiceGroup):
    """A PostgreSQL leader with ``followers`` streaming replicas: one service of the lab.

    >>> pg = Postgres(Path("/tmp/lab/postgres"), password="pw", followers=1).start()  # doctest: +SKIP
    >>> pg.leader.dsn()                                                              # doctest: +SKIP
    'host=127.0.0.1 port=40001 user=postgres password=pw dbname=postgres'
    """

    kind = "postgres"
    #: The class of its servers (the docker provider's runs each in a container).
    server_class: type[PostgresServer] = PostgresServer

    def __init__(self, workdir: Path, *, password: str, followers: int = 1,
                 synchronous_commit: str = "local", ports: PortAllocator | None = None,
                 bin_dir: str = "/usr/lib/postgresql/15/bin", host: str = "127.0.0.1",
                 user: str | None = None, timeout_s: float = 60.0,
                 heartbeat_ms: float = heartbeat.INTERVAL_MS) -> None:
        self.workdir, self.password = Path(workdir), password
        self.initial_synchronous_commit = synchronous_commit
        ports = ports or PortAllocator(host)
        common = dict(password=password, bin_dir=bin_dir, host=host, user=user,
                      timeout_s=timeout_s)
        self.leader = self.server_class(self.workdir / "leader", port=ports.take(), **common)
        self.followers = [
            self.server_class(self.workdir / f"follower{i}", index=i, leader=self.leader,
                           port=ports.take(), **common)
            for i in range(1, followers + 1)
        ]
        # Only followers need it: their lag in ms is read from its row.
        self.heartbeat = heartbeat.Heartbeat(self.workdir / "heartbeat", dsn=self.leader.dsn(),
                                             interval_ms=heartbeat_ms, timeout_s=timeout_s)

    @property
    def servers(self) -> list[PostgresServer]:
        return [self.leader, *self.followers]

    @property
    def follower(self) -> PostgresServer:
        """The first follower (most notebooks need just one)."""
        if not self.followers:
            raise ServiceError("this lab has no follower; bring it up with `followers=1` or more")
        return self.followers[0]

    def dsn(self, dbname: str = "postgres") -> str:
        """The leader's connection string (writes go to the leader)."""
        return self.leader.dsn(dbname)

    def start(self) -> "Postgres":
        fresh_leader = not self.leader.initialized
        leader_was_running = self.leader.running()
        self.leader.start()
        if fresh_leader:  # old followers belong to a cluster that no longer exists
            for f in self.followers:
                f.discard()
        if self.followers:
            self.heartbeat.dsn = self.leader.dsn()  # the leader's port may have changed
            # The heartbeat needs only the leader: it starts beside the followers.
            rest = [*self.followers, self.heartbeat]
            with ThreadPoolExecutor(len(rest)) as pool:
                list(pool.map(lambda m: m.start(), rest))
        if not leader_was_running:  # a reattach keeps whatever a notebook switched to
            self.set_synchronous_commit(self.initial_synchronous_commit)
        return self

    def stop(self) -> None:
        self.heartbeat.stop()
        for s in reversed(self.servers):
            s.stop()

    def members(self) -> list[NativeService]:
        return [*self.servers, self.heartbeat] if self.followers else list(self.servers)

    def health(self) -> list[dict[str, Any]]:
        """One row per server (and the heartbeat); a follower's row also says how far behind it is."""
        out = []
        for s in self.members():
            h = s.health()
            if not isinstance(s, PostgresServer):
                out.append(h)
                continue
            h["name"] = f"postgres-{s.name}"
            if s.is_follower and h["ok"]:
                try:
                    lag, delay_ms = s.lag(), s.delay_ms()
                    h["lag"] = f"{lag.bytes} B / {lag.ms:.0f} ms, delay {delay_ms} ms"
                    # the same figures as numbers, for the dashboard (`labkit.monitor`)
                    h.update(lag_bytes=lag.bytes, lag_ms=lag.ms, delay_ms=delay_ms)
                except Exception as e:
                    h["lag"] = f"error: {e}"
            out.append(h)
        return out

    def create_database(self, name: str, *, owner: str | None = None, replace: bool = False,
                        timeout_s: float = 10.0) -> str:
        """Create database ``name`` on the leader; return once every follower has it too.

        The janitor's step: each test, exercise and graded submission gets a database of its
        own. An existing database is kept, unless ``replace=True`` drops it first.
        """
        exists = "SELECT 1 FROM pg_database WHERE datname = %s"
        with self.leader.connect() as conn:
            if replace:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)))
            if not conn.execute(exists, (name,)).fetchone():
                create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
                if owner:
                    create += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
                conn.execute(create)
            lsn = current_lsn(conn)
        for f in self.followers:
            f.wait_replayed(lsn, timeout_s=timeout_s)
        return name

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` (its sessions and logical slots too) if it exists."""
        self.leader.drop_database(name)

    def set_synchronous_commit(self, mode: str) -> None:
        """Switch how commits on the leader wait: ``off``, ``local`` or ``remote_apply``.

        ``remote_apply`` waits until every follower has *applied* the commit, so a read on any of
        them right after sees the write (read-your-writes), at the price of the slowest
        follower's replay delay (and commits stall while a follower is down).
        """
        if mode not in SYNCHRONOUS_COMMIT_MODES:
            raise ValueError(f"synchronous_commit={mode!r}: choose one of "
                             f"{', '.join(SYNCHRONOUS_COMMIT_MODES)}")
        if mode == "remote_apply" and not self.followers:
            raise ServiceError("remote_apply needs a follower; bring the lab up with followers=1")
        names = ", ".join(f.name for f in self.followers)
        standby = f"ANY {len(self.followers)} ({names})" if mode == "remote_apply" else ""
        with self.leader.connect() as conn:
            conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{standby}'")
            conn.execute(f"ALTER SYSTEM SET synchronous_commit = '{mode}'")
            conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 5
        while self.synchronous_commit() != mode and time.monotonic() < deadline:
            time.sleep(0.01)

    def synchronous_commit(self) -> str:
        return self.leader.execute("SHOW synchronous_commit")[0][0]

    # -- what `labkit reset` puts back, and `labkit status` warns about --------------------
    def scratch_databases(self) -> list[str]:
        """Every database on the leader but the system ones (``postgres``, ``template0/1``)."""
        return [r[0] for r in self.leader.execute(
            "SELECT datname FROM pg_database WHERE datname <> ALL(%s) ORDER BY datname",
            (list(SYSTEM_DATABASES),))]

    def replication_slots(self) -> list[dict[str, Any]]:
        """The leader's replication slots: name, type, database, active, WAL held (bytes)."""
        rows = self.leader.execute(
            "SELECT slot_name, slot_type, database, active, "
            "coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint "
            "FROM pg_replication_slots ORDER BY slot_name")
        return [{"name": n, "type": t, "database": d, "active": a, "held_bytes": int(b)}
                for n, t, d, a, b in rows]

    def drop_logical_slots(self, database: str | None = None, timeout_s: float = 10.0) -> None:
        """Drop every logical replication slot (of ``database``, or all), cutting off readers.

        The followers' physical slots stay. A slot in use cannot be dropped, so its reader's
        session is terminated first (an invalidation service exits when cut off); a database
        with a logical slot cannot be dropped, so this comes first.
        """
        where = "slot_type = 'logical' AND (%(db)s::name IS NULL OR database = %(db)s)"
        params = {"db": database}
        deadline = time.monotonic() + timeout_s
        while self.leader.execute(f"SELECT 1 FROM pg_replication_slots WHERE {where}", params):
            self.leader.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                                f"WHERE {where} AND active", params)
            self.leader.execute("SELECT pg_drop_replication_slot(slot_name) "
                                f"FROM pg_replication_slots WHERE {where} AND NOT active", params)
            if time.monotonic() > deadline:
                raise ServiceError("logical replication slots stay in use; stop their readers "
                                   "(see pg_replication_slots.active_pid) and try again")
            time.sleep(0.05)

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "workdir": str(self.workdir), "password": self.password,
                "servers": [s.to_state() for s in self.servers],
                "heartbeat": self.heartbeat.to_state()}

    def restore(self, state: dict[str, Any]) -> "Postgres":
        for s, st in zip(self.servers, state["servers"]):
            s.restore(st)
        if "heartbeat" in state:  # a lab started before the heartbeat existed gets one at `up`
            self.heartbeat.restore(state["heartbeat"])
        self.heartbeat.dsn = self.leader.dsn()
        return self

    def __repr__(self) -> str:
        return f"<Postgres leader={self.leader.address} followers={len(self.followers)}>"
