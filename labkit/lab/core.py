"""Lab: brings the servers of a lab directory up and down, and reattaches to them from anywhere.

The Lab knows no server by name: every kind of service joins through the registry
(``labkit.lab.kinds``), and one provider per lab (``labkit.providers``) says who runs them.
Up: for each kind the config asks for (or that already runs), build it under the provider,
then start in parallel whatever is not already running and answering, writing the state
file after each. The state file (``labkit._state``) lets a restarted kernel, the CLI and a
test process reattach to the same servers. ``down`` stops what the state file lists and then
sweeps for anything left that carries the lab's marker (servers of a starter killed with
``kill -9`` before it wrote the state, helpers, or everything when the state file is
damaged). The lab owns only what it made: see ``labkit._labdir``.

>>> import labkit as lk
>>> lab = lk.up(services=("memcached",))      # doctest: +SKIP
>>> lab.memcached[0].host_port                # doctest: +SKIP
('127.0.0.1', 40411)
>>> lk.down()                                 # doctest: +SKIP
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import psutil

from labkit import _labdir, _state, providers
from labkit._proc import ServiceError, stop_all, sweep, wait_ready
from labkit._state import StateError
from labkit.config import LabConfig
from labkit.lab import helpers, locking, secrets
from labkit.lab.kinds import ATTRIBUTES, KINDS, BuildContext
from labkit.lab.status import DownReport, Progress, describe, helper_table, status_table
from labkit.providers import Provider
from labkit.services.postgres import PostgresServer


class Lab:
    """The servers of one lab directory, started or reattached.

    ``lab.<kind>`` is that kind's service (``lab.postgres``, ``lab.memcached``,
    ``lab.rabbitmq``, ``lab.cassandra``), or None (``[]`` for memcached) when the lab has none;
    a kind may add more (``lab.cassandra_topologies``).

    >>> lab = Lab.up(LabConfig.load(services=("postgres",), followers=1))   # doctest: +SKIP
    >>> lab.leader.execute("SELECT 1")                                      # doctest: +SKIP
    [(1,)]
    """

    def __init__(self, config: LabConfig) -> None:
        self.config = config
        self.provider: Provider = providers.get(config.provider)
        self.handles: dict[str, Any] = {}   # kind name -> what the kind built
        self.timings_s: dict[str, float] = {}

    def __getattr__(self, name: str) -> Any:
        if name not in ATTRIBUTES:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        kind, method = ATTRIBUTES[name]
        handle = self.__dict__.get("handles", {}).get(kind.name, kind.empty)
        return getattr(kind, method)(handle, self)

    # ------------------------------------------------------------------- bring up / down
    @classmethod
    def up(cls, config: LabConfig | None = None, *, progress: bool = True) -> "Lab":
        """Start the configured servers, reusing any that already run; idempotent."""
        config = config or LabConfig.load()
        lab = cls(config)
        with locking.locked(config.lab_dir, user=lab.provider.service_user(config), claim=True):
            state = _state.read(config.lab_dir)
            lab._build_from(state, attaching=False)
            lab._start_missing(progress=progress)
            for kind, handle in lab._kinds():
                kind.after_up(handle, lab)
        return lab

    @classmethod
    def attach(cls, config: LabConfig | None = None) -> "Lab":
        """Reattach to a running lab without starting anything; fail if none is up."""
        config = config or LabConfig.load()
        lab = cls(config)
        state = _state.read(config.lab_dir)
        if not state.get("services"):
            raise ServiceError(f"no lab is running in {config.lab_dir}; start one with "
                               "`labkit up` or `lk.up()`")
        lab._build_from(state, attaching=True)
        return lab

    def down(self, purge: bool = False, *, progress: bool = True) -> DownReport:
        """Stop every server and helper of this lab; say what was done.

        ``purge=True`` also deletes the data (databases, queues, credentials): the files and
        directories the lab made, by name, and nothing else. A directory that is not a lab's
        (no marker, yet files in it), ``/``, a home, or one holding the working directory is
        refused. A damaged state file is no obstacle: every process carrying the lab's marker
        is stopped instead. Servers labkit did not start (the external provider) are left
        running.
        """
        report = DownReport(self.config.lab_dir, purge)
        if _labdir.for_down(self.config.lab_dir, purge) is None:
            report.nothing = ("it does not exist" if not self.config.lab_dir.exists()
                              else "it is empty")
            return report
        with locking.locked(self.config.lab_dir, user=None):
            try:
                state = _state.read(self.config.lab_dir)
                report.helpers = [h.get("name", k) for k, h in state.get("helpers", {}).items()]
                if state.get("services"):
                    self._build_from(state, attaching=True, create_secrets=False)
            except ServiceError as e:  # a damaged state file, or one this labkit cannot use
                report.damaged = e.why if isinstance(e, StateError) else str(e)
                self.handles = {}
            names = [getattr(svc, "name", svc.kind) for svc in self._services()]
            if self.provider.manages:
                report.stopped = names
                try:
                    self._in_parallel("stopping", self._services(), lambda svc: svc.stop(),
                                      progress)
                except ServiceError as e:  # the sweep below still stops whatever is left
                    report.problems.append(str(e))
            else:
                report.left_running = names
            report.swept = sweep(self.config.lab_dir)
            for p in providers.PROVIDERS.values():  # containers are no processes: their provider sweeps them
                report.removed += p.sweep(self.config)
            _state.remove(self.config.lab_dir)
            self.handles = {}
            if purge:
                report.deleted, report.kept = _labdir.purge(self.config.lab_dir)
        return report

    # ---------------------------------------------------------------------------- reset
    def reset(self, *, dry_run: bool = False) -> list[str]:
        """Put the running lab back to its starting state; return what was done, one line each.

        Helper processes (invalidation services, Celery workers, web servers: whatever carries
        the lab's marker and is no lab server) are stopped; then each kind of service puts
        itself back: followers replay without delay, ``synchronous_commit`` goes back to the
        config's, logical replication slots and every database but
        ``postgres``/``template0``/``template1`` are dropped, every queue in the lab's
        RabbitMQ vhost is deleted, memcached is flushed. ``dry_run=True`` only lists it.
        On an external lab only the helpers are stopped: the data on servers labkit did not
        start is not the lab's to drop (the lab owns only what it made).
        """
        if dry_run:
            return self._reset(dry_run=True)
        with locking.locked(self.config.lab_dir, user=None):  # not while an up or down runs
            return self._reset(dry_run=False)

    def _reset(self, dry_run: bool) -> list[str]:
        down = [r["name"] + (f" ({r['group']})" if r.get("group") else "")
                for r in self.health() if not r["ok"]]
        if down:
            raise ServiceError(f"lab {self.config.lab_dir}: not answering: {', '.join(down)}; "
                               "start what is down with `labkit up`, then reset")
        done: list[str] = []
        procs = self.helper_processes()
        gone = helpers.forget_gone(self.config.lab_dir, dry_run=True)
        if procs:
            done.append(f"stop helper processes: {describe(procs)}")
            if not dry_run:
                stop_all(procs)
        if gone:
            done.append(f"forget the helpers recorded as running that have stopped: "
                        f"{', '.join(gone)}")
        if not dry_run:
            helpers.forget_gone(self.config.lab_dir)  # and those just stopped
        if self.provider.manages:  # an external lab's data is not the lab's to drop
            for kind, handle in self._kinds():
                done += kind.reset(handle, self, dry_run)
        return done

    def helper_processes(self) -> list[psutil.Process]:
        """Processes that carry the lab's marker but are none of its servers (or their children).

        Invalidation services, Celery workers, gunicorn: what notebooks start with ``spawn``.
        """
        return helpers.marked_helpers(self.config.lab_dir,
                                      [p for svc in self._services() for p in svc.procs])

    def helper_health(self) -> list[dict[str, Any]]:
        """One row per helper process the state file records: kind, name, pids, address, ok."""
        return helpers.recorded(self)

    def helper_table(self, rows: list[dict[str, Any]] | None = None) -> str:
        """`helper_health()` (or the ``rows`` it gave) as a text table, as `labkit status`."""
        return helper_table(self.helper_health() if rows is None else rows)

    def warnings(self) -> list[str]:
        """What is not as `up` left it (for `labkit status`): each with what puts it back."""
        out = [w for kind, handle in self._kinds() for w in kind.warnings(handle, self)
               if self.provider.manages]  # their fixes (`labkit reset`) are for the lab's own
        procs = self.helper_processes()
        if procs:
            out.append(f"helper processes still running: {describe(procs)}; "
                       "`labkit reset` stops them")
        gone = helpers.forget_gone(self.config.lab_dir, dry_run=True)
        if gone:
            out.append(f"helpers recorded as running have stopped: {', '.join(gone)}; "
                       "`labkit reset` forgets them")
        return out

    def save_state(self) -> None:
        """Record the servers' processes as they are now, after a node was restarted by hand
        (``node.stop()``, ``node.start()``): other processes then reattach to the new one."""
        with locking.locked(self.config.lab_dir, user=None):
            self._write_state()

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
        return [m.host_port for m in self._need("memcached")]

    @property
    def broker_url(self) -> str:
        return self._need("rabbitmq").broker_url

    @property
    def backend(self) -> Any:
        """The whole backend on this lab's servers: ``lab.backend.start()`` (notebook 12).

        A new ``labkit.backend.stack.Backend`` each time (imported here, on use: the lab
        sits below the backend building blocks).
        """
        from labkit.backend.stack import Backend
        return Backend(self)

    def _need(self, name: str) -> Any:
        svc = getattr(self, name)
        if not svc:
            raise ServiceError(f"this lab has no {name}; bring it up with "
                               f"`labkit up --services {name}` or `lk.up(services=(..., '{name}'))`")
        return svc

    def health(self) -> list[dict[str, Any]]:
        """One row per server: name, ok, address, version (and lag for followers)."""
        return [r for kind, handle in self._kinds() for r in kind.status_rows(handle, self)]

    def status_table(self, rows: list[dict[str, Any]] | None = None) -> str:
        """`health()` (or the ``rows`` it gave) as an aligned text table, as `labkit status`."""
        return status_table(self.health() if rows is None else rows)

    def env(self) -> dict[str, str]:
        """Connection settings as environment variables (what `labkit env` prints)."""
        out = {"LABKIT_LAB_DIR": str(self.config.lab_dir)}
        for kind, handle in self._kinds():
            out.update(kind.env(handle, self))
        return out

    def topology(self) -> str:
        """A few lines that draw what runs where."""
        lines = [f"lab {self.config.lab_dir}"]
        for kind, handle in self._kinds():
            lines += kind.topology(handle, self)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.topology()

    # ------------------------------------------------------------------------- internals
    def _kinds(self) -> list[tuple[Any, Any]]:
        """(kind, handle) for every kind this lab has, in registry order."""
        return [(k, self.handles[k.name]) for k in KINDS if self.handles.get(k.name)]

    def _services(self) -> list[Any]:
        """Everything that starts and stops, in start order."""
        return [m for kind, handle in self._kinds() for m in kind.members(handle)]

    def _secrets(self, create: bool = True) -> dict[str, str]:
        wanted = {name: make for k in KINDS for name, make in k.secrets.items()}
        return secrets.load(self.config.lab_dir, wanted, create=create)

    def _build_from(self, state: dict[str, Any], *, attaching: bool,
                    create_secrets: bool = True) -> None:
        """Build every kind the lab has (attaching) or wants (up), from the state and config.

        A state file whose contents do not fit is reported as damaged.
        """
        self.provider = providers.choose(self.config, state, attaching=attaching)
        ctx = BuildContext(self.config, self.provider, lambda: self._secrets(create_secrets),
                           state, attaching=attaching)
        saved = state.get("services", {})
        if self.provider.manages:
            ctx.secrets  # made at the first up, for every kind: the data will outlive a down
        try:
            for kind in KINDS:
                here = saved.get(kind.name)
                wanted = here is not None if attaching else kind.wanted(self.config, here)
                if wanted:
                    self.handles[kind.name] = kind.build(ctx, here)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise _state.damaged(self.config.lab_dir, f"{type(e).__name__}: {e}") from None

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

    def _in_parallel(self, verb: str, services: list[Any], action: Callable[[Any], Any],
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

        with Progress(verb, enabled=progress) as bar, ThreadPoolExecutor(len(services)) as pool:
            list(pool.map(one, services))
        if errors:
            raise ServiceError(f"{verb} the lab failed:\n" + "\n".join(errors)
                               + "\nRun `labkit doctor` to check the installation.")
        return timings

    def _write_state(self) -> None:
        services = {k.name: k.state(h) for k, h in self._kinds()}

        def change(state: dict[str, Any]) -> None:
            state.update(written_at=time.time(), provider=self.provider.name,
                         config=self.config.to_dict(), services=services)

        _state.update(self.config.lab_dir, change)
