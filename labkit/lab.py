"""Lab: brings a topology of real servers up and down, and reattaches to it from anywhere.

The state file (``<lab_dir>/state.json``) records every server's pid, start time, ports and
credentials, so a restarted notebook kernel, the ``labkit`` CLI and a test process all get the
same servers. ``down`` stops what the state file lists and then sweeps for anything left that
carries the lab's marker (servers of a starter killed with ``kill -9`` before it wrote the
state, or every server when the state file is damaged). The lab owns only what it made: see
``labkit._labdir`` for the marker, and what ``down`` and ``down --purge`` refuse.

>>> import labkit as lk
>>> lab = lk.up(services=("memcached",))      # doctest: +SKIP
>>> lab.memcached[0].host_port                # doctest: +SKIP
('127.0.0.1', 40411)
>>> lk.down()                                 # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import secrets
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import psutil

from labkit import _labdir
from labkit._proc import (LAB_ID_ENV, PROCESS_ENV, PortAllocator, ServiceError,
                          marked_processes, service_account, stop_all, sweep, wait_ready)
from labkit.config import ALL_SERVICES, LabConfig
from labkit.services.cassandra import Cassandra, CassandraCredentials
from labkit.services.memcached import Memcached
from labkit.services.postgres import Postgres, PostgresServer
from labkit.services.rabbitmq import RabbitMQ

STATE_VERSION = 1


class StateError(ServiceError):
    """The lab's state file cannot be used; the message gives the fix (``labkit down``)."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


@dataclass
class DownReport:
    """What ``Lab.down`` did, for the CLI to say."""

    lab_dir: Path
    purge: bool
    nothing: str = ""          # why there was nothing to do (no lab in the directory)
    damaged: str = ""          # why the state file could not be used
    stopped: list[str] = field(default_factory=list)
    swept: list[int] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        if self.nothing:
            return [f"no lab in {self.lab_dir} ({self.nothing}): nothing to stop"
                    + (" or delete" if self.purge else "")]
        out = []
        if self.damaged:
            out.append(f"the lab's files could not say what runs ({self.damaged}); stopped "
                       f"instead every process carrying this lab's marker ({LAB_ID_ENV}): "
                       f"{len(self.swept)} process(es){_pids(self.swept)}")
        out.append(f"lab {self.lab_dir} is down"
                   + (f" (stopped {', '.join(self.stopped)})" if self.stopped else ""))
        if self.swept and not self.damaged:
            out.append(f"(also stopped {len(self.swept)} stray process(es) carrying the lab's "
                       f"marker{_pids(self.swept)})")
        out += self.problems
        if self.purge:
            out.append("deleted the lab's data: " + (", ".join(self.deleted) or "there was none"))
            if self.kept:
                out.append(f"left in place (the lab did not make them): {', '.join(self.kept)}")
        return out


def _pids(pids: list[int]) -> str:
    return f": pid {', '.join(map(str, pids))}" if pids else ""


class Lab:
    """The servers of one lab directory, started or reattached.

    >>> lab = Lab.up(LabConfig.load(services=("postgres",), followers=1))   # doctest: +SKIP
    >>> lab.leader.execute("SELECT 1")                                      # doctest: +SKIP
    [(1,)]
    """

    def __init__(self, config: LabConfig) -> None:
        self.config = config
        self.postgres: Postgres | None = None
        self.memcached: list[Memcached] = []
        self.rabbitmq: RabbitMQ | None = None
        self.cassandra: Cassandra | None = None
        self.timings_s: dict[str, float] = {}
        self._state_lock = threading.Lock()

    # ------------------------------------------------------------------- bring up / down
    @classmethod
    def up(cls, config: LabConfig | None = None, *, progress: bool = True) -> "Lab":
        """Start the configured servers, reusing any that already run; idempotent."""
        config = config or LabConfig.load()
        lab = cls(config)
        with lab._locked(claim=True):
            state = lab._read_state()
            wanted = [s for s in ALL_SERVICES
                      if s in config.services or s in state.get("services", {})]
            lab._build_from(wanted, state)
            lab._start_missing(progress=progress)
        return lab

    @classmethod
    def attach(cls, config: LabConfig | None = None) -> "Lab":
        """Reattach to a running lab without starting anything; fail if none is up."""
        config = config or LabConfig.load()
        lab = cls(config)
        state = lab._read_state()
        if not state.get("services"):
            raise ServiceError(f"no lab is running in {config.lab_dir}; start one with "
                               "`labkit up` or `lk.up()`")
        lab._build_from(list(state["services"]), state)
        return lab

    def down(self, purge: bool = False, *, progress: bool = True) -> DownReport:
        """Stop every server and helper of this lab; say what was done.

        ``purge=True`` also deletes the data (databases, queues, credentials): the files and
        directories the lab made, by name, and nothing else. A directory that is not a lab's
        (no marker, yet files in it), ``/``, a home, or one holding the working directory is
        refused. A damaged state file is no obstacle: every process carrying the lab's marker
        is stopped instead.
        """
        report = DownReport(self.config.lab_dir, purge)
        if _labdir.for_down(self.config.lab_dir, purge) is None:
            report.nothing = ("it does not exist" if not self.config.lab_dir.exists()
                              else "it is empty")
            return report
        with self._locked():
            try:
                state = self._read_state()
                if state.get("services"):
                    self._build_from(list(state["services"]), state, create_secrets=False)
            except StateError as e:
                report.damaged = e.why
                self.postgres, self.memcached, self.rabbitmq, self.cassandra = None, [], None, None
            report.stopped = [getattr(svc, "name", svc.kind) for svc in self._services()]
            try:
                self._in_parallel("stopping", self._services(), lambda svc: svc.stop(), progress)
            except ServiceError as e:  # the sweep below still stops whatever is left
                report.problems.append(str(e))
            report.swept = sweep(self.config.lab_dir)
            self.config.state_file.unlink(missing_ok=True)
            self.postgres, self.memcached, self.rabbitmq, self.cassandra = None, [], None, None
            if purge:
                report.deleted, report.kept = _labdir.purge(self.config.lab_dir)
        return report

    # ---------------------------------------------------------------------------- reset
    def reset(self, *, dry_run: bool = False) -> list[str]:
        """Put the running lab back to its starting state; return what was done, one line each.

        Helper processes (invalidation services, Celery workers, web servers: whatever carries
        the lab's marker and is no lab server) are stopped; followers replay without delay;
        ``synchronous_commit`` goes back to the config's; logical replication slots and every
        database but ``postgres``/``template0``/``template1`` are dropped; every queue in the
        lab's RabbitMQ vhost is deleted; memcached is flushed. ``dry_run=True`` only lists it.
        """
        if dry_run:
            return self._reset(dry_run=True)
        with self._locked():  # not while an `up` or `down` of this lab runs
            return self._reset(dry_run=False)

    def _reset(self, dry_run: bool) -> list[str]:
        down = [r["name"] for r in self.health() if not r["ok"]]
        if down:
            raise ServiceError(f"lab {self.config.lab_dir}: not answering: {', '.join(down)}; "
                               "start what is down with `labkit up`, then reset")
        done: list[str] = []
        helpers = self.helper_processes()
        if helpers:
            done.append(f"stop helper processes: {_describe(helpers)}")
            if not dry_run:
                stop_all(helpers)
        if self.postgres:
            pg = self.postgres
            for f in pg.followers:
                if f.delay_ms():
                    done.append(f"set {f.name}'s replay delay from {f.delay_ms()} ms to 0")
                    if not dry_run:
                        f.set_delay(0)
            mode, default = pg.synchronous_commit(), self.config.synchronous_commit
            if mode != default:
                done.append(f"set synchronous_commit from {mode} back to {default}")
                if not dry_run:
                    pg.set_synchronous_commit(default)
            slots = [s["name"] for s in pg.replication_slots() if s["type"] == "logical"]
            if slots:
                done.append(f"drop logical replication slots: {', '.join(slots)}")
                if not dry_run:
                    pg.drop_logical_slots()
            dbs = pg.scratch_databases()
            if dbs:
                done.append(f"drop databases: {', '.join(dbs)}")
                if not dry_run:
                    for name in dbs:
                        pg.drop_database(name)
        if self.rabbitmq:
            queues = self.rabbitmq.queues()
            if queues:
                done.append(f"delete RabbitMQ queues in vhost {self.rabbitmq.vhost}: "
                            f"{', '.join(queues)}")
                if not dry_run:
                    self.rabbitmq.delete_queues(queues)
        for m in self.memcached:
            done.append(f"flush {m.name}")
            if not dry_run:
                m.flush()
        return done

    def helper_processes(self) -> list[psutil.Process]:
        """Processes that carry the lab's marker but are none of its servers (or their children).

        Invalidation services, Celery workers, gunicorn: what notebooks start with ``spawn``.
        """
        marker = _labdir.read_marker(self.config.lab_dir)
        if marker is None:
            return []
        procs = [p for svc in self._services() for p in svc.procs]
        names, pids = {p.name for p in procs}, {p.pid for p in procs}
        out = []
        for p in marked_processes(marker.lab_id):
            try:
                if p.pid not in pids and p.environ().get(PROCESS_ENV) not in names:
                    out.append(p)
            except psutil.Error:
                continue
        return out

    def warnings(self) -> list[str]:
        """What is not as `up` left it (for `labkit status`): each with what puts it back."""
        out: list[str] = []
        if self.postgres:
            pg = self.postgres
            with contextlib.suppress(Exception):  # a server that is down shows in health()
                for f in pg.followers:
                    if f.delay_ms():
                        out.append(f"{f.name} applies every commit {f.delay_ms()} ms late "
                                   "(recovery_min_apply_delay); `labkit reset`, or "
                                   "set_delay(0), puts it back to 0")
            with contextlib.suppress(Exception):
                mode = pg.synchronous_commit()
                if mode != self.config.synchronous_commit:
                    out.append(f"synchronous_commit is {mode}, not the lab's "
                               f"{self.config.synchronous_commit}; `labkit reset` puts it back")
            with contextlib.suppress(Exception):
                for s in pg.replication_slots():
                    if not s["active"] and s["held_bytes"]:
                        out.append(f"replication slot {s['name']} ({s['type']}"
                                   + (f", database {s['database']}" if s["database"] else "")
                                   + f") is inactive and holds {_size(s['held_bytes'])} of WAL "
                                   "on the leader; "
                                   + ("`labkit reset` drops it" if s["type"] == "logical" else
                                      "start its follower with `labkit up`"))
        helpers = self.helper_processes()
        if helpers:
            out.append(f"helper processes still running: {_describe(helpers)}; "
                       "`labkit reset` stops them")
        return out

    # ------------------------------------------------------------------------ accessors
    @property
    def leader(self) -> PostgresServer:
        return self._need("postgres").leader

    @property
    def followers(self) -> list[PostgresServer]:
        return self._need("postgres").followers

    @property
    def follower(self) -> PostgresServer:
        return self._need("postgres").follower

    @property
    def cache_servers(self) -> list[tuple[str, int]]:
        """(host, port) of every memcached instance."""
        if not self.memcached:
            self._need("memcached")
        return [m.host_port for m in self.memcached]

    @property
    def broker_url(self) -> str:
        return self._need("rabbitmq").broker_url

    def _need(self, name: str) -> Any:
        svc = getattr(self, name)
        if not svc:
            raise ServiceError(f"this lab has no {name}; bring it up with "
                               f"`labkit up --services {name}` or `lk.up(services=(..., '{name}'))`")
        return svc

    def health(self) -> list[dict[str, Any]]:
        """One row per server: name, ok, address, version (and lag for followers)."""
        rows: list[dict[str, Any]] = []
        if self.postgres:
            rows += self.postgres.health()
        rows += [m.health() for m in self.memcached]
        if self.rabbitmq:
            rows.append(self.rabbitmq.health())
        if self.cassandra:
            rows += self.cassandra.health()
        return rows

    def status_table(self, rows: list[dict[str, Any]] | None = None) -> str:
        """`health()` (or the ``rows`` it gave) as an aligned text table, as `labkit status`."""
        lines = [f"{'server':<20} {'health':<7} {'address':<17} {'version':<32} lag"]
        for r in self.health() if rows is None else rows:
            lines.append(f"{r['name']:<20} {'ok' if r['ok'] else 'DOWN':<7} {r['address']:<17} "
                         f"{r['version'][:32]:<32} {r.get('lag', '')}".rstrip())
        return "\n".join(lines)

    def env(self) -> dict[str, str]:
        """Connection settings as environment variables (what `labkit env` prints)."""
        out = {"LABKIT_LAB_DIR": str(self.config.lab_dir)}
        if self.postgres:
            lead = self.postgres.leader
            out.update(PGHOST=lead.host, PGPORT=str(lead.port), PGUSER="postgres",
                       PGPASSWORD=lead.password, PGDATABASE="postgres",
                       LABKIT_LEADER_DSN=lead.dsn())
            for f in self.postgres.followers:
                out[f"LABKIT_FOLLOWER{f.index}_DSN"] = f.dsn()
        if self.memcached:
            out["LABKIT_MEMCACHED_SERVERS"] = ",".join(m.address for m in self.memcached)
        if self.rabbitmq:
            out["LABKIT_BROKER_URL"] = out["CELERY_BROKER_URL"] = self.rabbitmq.broker_url
        if self.cassandra:
            for region, cluster in self.cassandra.clusters.items():
                out[f"LABKIT_CASSANDRA_{region.upper()}"] = ",".join(
                    f"{h}:{p}" for h, p in cluster.contact_points)
            # cqlsh reads CQLSH_HOST/CQLSH_PORT (the first region's first node) and takes the
            # login from a credentials file: `cqlsh --credentials "$LABKIT_CQLSH_CREDENTIALS"`.
            host, port = self.cassandra.contact_points[0]
            creds = self.cassandra.credentials
            out.update(CQLSH_HOST=host, CQLSH_PORT=str(port),
                       LABKIT_CQLSH_CREDENTIALS=str(self.cassandra.cqlsh_credentials),
                       LABKIT_CASSANDRA_USER=creds.user, LABKIT_CASSANDRA_PASSWORD=creds.password)
        return out

    def topology(self) -> str:
        """A few lines that draw what runs where."""
        lines = [f"lab {self.config.lab_dir}"]
        if self.postgres:
            lines.append(f"  postgres leader    {self.postgres.leader.address}")
            for f in self.postgres.followers:
                lines.append(f"    └─ {f.name:<14}  {f.address}  (streaming replica)")
        for m in self.memcached:
            lines.append(f"  {m.name:<18} {m.address}")
        if self.rabbitmq:
            lines.append(f"  rabbitmq           {self.rabbitmq.address}  vhost {self.rabbitmq.vhost}")
        if self.cassandra:
            for region, cluster in self.cassandra.clusters.items():
                lines.append(f"  cassandra {region:<8} {cluster.cluster_name}, "
                             f"{len(cluster.nodes)} node(s), dc {cluster.dc}")
                for n in cluster.nodes:
                    lines.append(f"    └─ {n.workdir.name:<14}  {n.address}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.topology()

    # ------------------------------------------------------------------------- internals
    def _services(self) -> list[Any]:
        out: list[Any] = []
        if self.postgres:
            out.append(self.postgres)
        out += self.memcached
        if self.rabbitmq:
            out.append(self.rabbitmq)
        if self.cassandra:
            out.append(self.cassandra)
        return out

    def _secrets(self, create: bool = True) -> dict[str, str]:
        """Credentials generated once per lab directory (the data outlives a `down`).

        A secrets file from an older labkit gets the credentials it lacks added; with
        ``create=False`` nothing is written (a lab that is only being looked at).
        """
        path = self.config.lab_dir / "secrets.json"
        values: dict[str, str] = {}
        if path.exists():
            try:
                values = json.loads(path.read_text())
            except ValueError as e:
                raise StateError(f"the lab's credentials file {path} is damaged ({e}). Fix: "
                                 "`labkit down --purge`, then `labkit up` (a new lab: its "
                                 "data was only reachable with those credentials)",
                                 f"{path} is damaged: {e}") from None
        fresh = {"pg_password": secrets.token_urlsafe(18),
                 "mq_user": "lab-" + secrets.token_hex(4),
                 "mq_password": secrets.token_urlsafe(18), "mq_vhost": "lab",
                 "cassandra_user": "lab", "cassandra_password": secrets.token_urlsafe(18),
                 "cassandra_jmx_password": secrets.token_urlsafe(18)}
        if not fresh.keys() <= values.keys():
            values = {**fresh, **values}
            if create:
                _write_private(path, values)
        return values

    def _build_from(self, wanted: list[str], state: dict[str, Any],
                    create_secrets: bool = True) -> None:
        """``_build``, with a state file whose contents do not fit reported as damaged."""
        try:
            self._build(wanted, state, create_secrets)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise self._damaged(f"{type(e).__name__}: {e}") from None

    def _build(self, wanted: list[str], state: dict[str, Any],
               create_secrets: bool = True) -> None:
        cfg, st = self.config, state.get("services", {})
        user = service_account(cfg.service_user)
        creds = self._secrets(create_secrets)
        ports = PortAllocator(cfg.host, cfg.port_base)
        common = dict(host=cfg.host, user=user)
        if "postgres" in wanted:
            known = len(st.get("postgres", {}).get("servers", [None])) - 1
            self.postgres = Postgres(cfg.lab_dir / "postgres", password=creds["pg_password"],
                                     followers=max(cfg.followers if "postgres" in cfg.services
                                                   else 0, known),
                                     synchronous_commit=cfg.synchronous_commit,
                                     ports=ports, bin_dir=cfg.pg_bin_dir,
                                     timeout_s=cfg.startup_timeout_s, **common)
            if "postgres" in st:
                self.postgres.restore(st["postgres"])
        if "memcached" in wanted:
            known = len(st.get("memcached", []))
            n = max(cfg.memcached_instances if "memcached" in cfg.services else 0, known)
            self.memcached = [
                Memcached(cfg.lab_dir / f"memcached-{i}", index=i, port=ports.take(),
                          memory_mb=cfg.memcached_memory_mb, binary=cfg.memcached_bin, **common)
                for i in range(n)]
            for m, s in zip(self.memcached, st.get("memcached", [])):
                m.restore(s)
        if "rabbitmq" in wanted:
            self.rabbitmq = RabbitMQ(cfg.lab_dir / "rabbitmq", username=creds["mq_user"],
                                     password=creds["mq_password"], vhost=creds["mq_vhost"],
                                     port=ports.take(), dist_port=ports.take(),
                                     epmd_port=ports.take(), server_bin=cfg.rabbitmq_server_bin,
                                     epmd_bin=cfg.epmd_bin, timeout_s=cfg.startup_timeout_s,
                                     **common)
            if "rabbitmq" in st:
                self.rabbitmq.restore(st["rabbitmq"])
        if "cassandra" in wanted:
            cas_creds = CassandraCredentials(creds["cassandra_user"], creds["cassandra_password"],
                                             creds["cassandra_jmx_password"])
            if "cassandra" in st:  # reattach to the topology that runs, whatever was asked
                self.cassandra = Cassandra.from_state(st["cassandra"], credentials=cas_creds)
            else:
                self.cassandra = Cassandra(cfg.lab_dir, cfg.cassandra or "single",
                                           cache_dir=cfg.cache_dir, heap_mb=cfg.cassandra_heap_mb,
                                           java=cfg.java_bin, mvn=cfg.mvn_bin, user=user,
                                           start_timeout_s=cfg.startup_timeout_s,
                                           credentials=cas_creds)

    def _start_missing(self, progress: bool) -> None:
        """Start, in parallel, every server that is not already running and answering."""
        todo = []
        for svc in self._services():
            if svc.running():
                # Reattach: the processes are there; one protocol round trip proves they serve.
                wait_ready(repr(svc), svc.ready, timeout_s=self.config.startup_timeout_s)
            else:
                todo.append(svc)

        def start(svc: Any) -> None:
            try:
                svc.start()
            finally:
                self._write_state()  # after each server: a killed starter leaves what it made

        self.timings_s = self._in_parallel("starting", todo, start, progress)

    def _in_parallel(self, verb: str, services: list[Any], action: Any,
                     progress: bool) -> dict[str, float]:
        """Apply ``action`` to every service at once; return seconds per service name.

        Progress is shown once the wait passes 2 s; every failure is reported, not just one.
        """
        timings: dict[str, float] = {}
        errors: list[str] = []
        if not services:
            return timings

        def one(svc: Any) -> None:
            name = getattr(svc, "name", svc.kind)
            bar.add(name)
            t0 = time.monotonic()
            try:
                action(svc)
            except Exception as e:
                errors.append(f"{name}: {e}")
            else:
                timings[name] = time.monotonic() - t0
            finally:
                bar.done(name)

        with _Progress(verb, enabled=progress) as bar, ThreadPoolExecutor(len(services)) as pool:
            list(pool.map(one, services))
        if errors:
            raise ServiceError(f"{verb} the lab failed:\n" + "\n".join(errors)
                               + "\nRun `labkit doctor` to check the installation.")
        return timings

    def _write_state(self) -> None:
        with self._state_lock:
            services: dict[str, Any] = {}
            if self.postgres:
                services["postgres"] = self.postgres.to_state()
            if self.memcached:
                services["memcached"] = [m.to_state() for m in self.memcached]
            if self.rabbitmq:
                services["rabbitmq"] = self.rabbitmq.to_state()
            if self.cassandra:
                services["cassandra"] = self.cassandra.to_state()
            _write_private(self.config.state_file, {
                "version": STATE_VERSION, "written_at": time.time(),
                "config": self.config.to_dict(), "services": services})

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.config.state_file.read_text())
        except FileNotFoundError:
            return {}
        except (ValueError, OSError) as e:  # truncated, garbled, not UTF-8, unreadable
            raise self._damaged(str(e)) from None
        if not isinstance(state, dict) or not isinstance(state.get("services", {}), dict):
            raise self._damaged("it is not a JSON object with a services table")
        if state.get("version") != STATE_VERSION:
            raise self._damaged(f"state version {state.get('version')!r}; this labkit reads "
                                f"version {STATE_VERSION}")
        return state

    def _damaged(self, why: str) -> StateError:
        return StateError(
            f"the lab's state file {self.config.state_file} is damaged ({why}). Fix: run "
            "`labkit down` (it stops every process carrying this lab's marker, whatever the "
            "state file says, and removes the file; the data is kept), then `labkit up`",
            f"{self.config.state_file} is damaged: {why}")

    @contextlib.contextmanager
    def _locked(self, *, claim: bool = False) -> Iterator[None]:
        """One `up`, `down` or `reset` at a time per lab directory, across processes.

        With ``claim`` (at `up`), a new or empty directory becomes the lab's: it is created
        (mode 0755 as root) and marked. An existing directory's mode is never changed.
        """
        lab_dir = self.config.lab_dir
        made = False
        if claim:
            made = _labdir.claim(lab_dir, service_account(self.config.service_user))
        with open(lab_dir / "lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                if claim:
                    _labdir.mark(lab_dir, made)
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically and durably, readable by its owner only (it holds passwords)."""
    _labdir.write_atomic(path, json.dumps(data, indent=2), mode=0o600)


def _describe(procs: list[psutil.Process]) -> str:
    """``name (pid 1, 2)`` per spawned name, for messages."""
    by_name: dict[str, list[int]] = {}
    for p in procs:
        try:
            name = p.environ().get(PROCESS_ENV) or p.name()
        except psutil.Error:
            name = "?"
        by_name.setdefault(name, []).append(p.pid)
    return ", ".join(f"{n} (pid {', '.join(map(str, pids))})" for n, pids in by_name.items())


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


class _Progress:
    """Says what is still starting once a wait passes 2 s (silent for quick starts)."""

    def __init__(self, verb: str, enabled: bool = True, after_s: float = 2.0,
                 stream: Any = None) -> None:
        self.verb, self.enabled, self.after_s = verb, enabled, after_s
        self.stream = stream or sys.stderr
        self.pending: list[str] = []
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._shown = False

    def add(self, name: str) -> None:
        self.pending.append(name)

    def done(self, name: str) -> None:
        if name in self.pending:
            self.pending.remove(name)

    def _loop(self) -> None:
        tty = getattr(self.stream, "isatty", lambda: False)()
        last_line = 0.0
        while not self._stop.wait(0.5):
            elapsed = time.monotonic() - self.t0
            if elapsed < self.after_s or not self.pending:
                continue
            msg = f"{self.verb} the lab: {elapsed:4.0f} s, waiting for {', '.join(self.pending)}"
            if tty:
                self.stream.write("\r" + msg.ljust(78))
            elif elapsed - last_line >= 3:
                self.stream.write(msg + "\n")
                last_line = elapsed
            self.stream.flush()
            self._shown = True

    def __enter__(self) -> "_Progress":
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()
            if self._shown:
                done = f"{self.verb} the lab: done in {time.monotonic() - self.t0:.1f} s"
                self.stream.write("\r" + done.ljust(78) + "\n")
                self.stream.flush()
