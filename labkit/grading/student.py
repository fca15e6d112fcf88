"""What a student's notebook calls (``workspace``, ``tests``, ``check``), and the kernel's side
of grading (``_serve``: run the calls the grader asks for, send back what happened).

Inside a student's own lab, ``workspace("03")`` makes a fresh database and cache prefix on
the lab's servers (``cassandra=True``: also a fresh keyspace on the lab's ring). Under ``labkit grade`` the grader has made a namespace for the submission
and passes only its credentials (``LABKIT_GRADE_*`` variables); the notebook code is the
same in both places. This module is the one bridge that reads those variables.

Nothing here decides a grade. ``check("q1")`` runs the visible tests in the student's own
kernel for their own information; under grading it does nothing, and the grader runs every
test in its own process, asking this module only to call the student's functions
(``_serve``) and judging the answers itself.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
import tempfile
import threading
import time
import traceback
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

GRADE_ENV = "LABKIT_GRADE"
TAG = "LABKIT-OBS-"
NO_ANSWER = "no answer from your notebook"


@dataclass
class TestSpec:
    """A registered test: the function (of ``sub``), its weight, its hidden-failure message."""

    fn: Callable[[Any], Any]
    weight: float = 1.0
    feedback: str = ""


# question id -> {test name: TestSpec}, in registration order
_registry: dict[str, dict[str, TestSpec]] = {}
_hints: dict[str, list[str]] = {}
_current: dict[str, Any] = {}


def tests(question_id: str, *, weight: float = 1.0,
          feedback: str = "") -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Register a test of ``question_id``: ``@tests("q1", weight=2, feedback="...")``.

    The test takes one argument, ``sub`` (``labkit.grading.harness.Submission``). ``weight``
    is its share of the question's points; ``feedback`` is what a student reads when it is a
    hidden test and fails (it should say what went wrong, not what the test does).
    """
    if not isinstance(weight, (int, float)) or weight <= 0:
        raise ValueError(f"tests({question_id!r}, weight={weight!r}): a weight is a positive number")

    def register(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        _registry.setdefault(question_id, {})[fn.__name__] = TestSpec(fn, float(weight), feedback)
        return fn
    return register


def encode_hints(texts: list[str]) -> str:
    """Hints as a blob (zlib + base64): in the student copy, read only when asked for."""
    return base64.b64encode(zlib.compress("\n".join(texts).encode())).decode()


def hints(question_id: str, blob: str) -> None:
    """Register the hints of ``question_id`` (the generated student copy calls this)."""
    _hints[question_id] = zlib.decompress(base64.b64decode(blob)).decode().splitlines()


def check(question_id: str, hint: bool = False) -> None:
    """Run the visible tests of ``question_id`` and print what passed and why not.

    ``hint=True`` also prints the question's hints. Run the cell marked ``# TEST <id>``
    first: it registers the tests this runs. Under ``labkit grade`` this does nothing (the
    grader runs the tests itself, outside this kernel).
    """
    if hint:
        found = _hints.get(question_id)
        print(f"{question_id} hints:\n" + "\n".join(f"  - {h}" for h in found) if found else
              f"{question_id}: no hints for this question")
    if os.environ.get(GRADE_ENV):
        print(f"{question_id}: checked by the grader")
        return
    found_tests = _registry.get(question_id)
    if not found_tests:
        print(f"{question_id}: no tests registered; run the cell that starts with "
              f"'# TEST {question_id}' first")
        return
    ws = _current.get("workspace")
    if ws is None:
        print(f"{question_id}: no workspace yet; run the notebook's first cell (workspace(...))")
        return
    from labkit.grading.harness import LocalSubmission
    sub = LocalSubmission(ws)
    try:
        results = [(name, spec, run_test(spec.fn, sub)) for name, spec in found_tests.items()]
    finally:
        sub.close()
    passed = [r for r in results if r[2] is None]
    total_w, passed_w = sum(s.weight for _, s, _ in results), sum(s.weight for _, s, _ in passed)
    mark = "all passed" if len(passed) == len(results) else "some failed"
    print(f"{question_id}: {len(passed)}/{len(results)} visible tests passed ({mark}; weight "
          f"{passed_w:g} of {total_w:g}). The grader runs more tests than these.")
    for name, _, message in results:
        print(f"  {'ok  ' if message is None else 'FAIL'} {name}"
              + ("" if message is None else f": {message}"))
    if len(passed) < len(results) and not hint:
        print(f'  (check("{question_id}", hint=True) gives a hint)')


def run_test(fn: Callable[[Any], Any], sub: Any) -> str | None:
    """Run one test; None when it passed, else what went wrong (for the student)."""
    try:
        fn(sub)
    except BaseException as e:  # the test's verdict, or an error in it
        return describe(e)
    return None


def describe(e: BaseException) -> str:
    """A failed test's message: its assertion's text, or what was raised where."""
    from labkit.grading.harness import NoAnswer, Raised
    if isinstance(e, AssertionError) and str(e):
        return str(e)
    if isinstance(e, Raised):
        if e.type == "NotImplementedError":
            return "not implemented yet"
        return f"your function raised {e}"
    if isinstance(e, NoAnswer):
        return f"{NO_ANSWER}: {e}"
    if isinstance(e, KeyboardInterrupt):
        return "interrupted: the test ran past its time limit"
    where = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
    at = f" (line {where[0].lineno} of {where[0].name})" if where else ""
    return f"{type(e).__name__}{': ' if str(e) else ''}{e}{at}"


# ----------------------------------------------------------------------- the workspace

@dataclass(frozen=True)
class CassandraWorkspace:
    """The keyspace one exercise runs in on the lab's ring, and the login that reaches it.

    Under ``labkit grade`` the login is a role granted this keyspace only
    (``namespace.create_cassandra``); in a student's own lab it is the lab's superuser.
    """

    contact_points: tuple[tuple[str, int], ...]
    user: str
    password: str = field(repr=False)
    keyspace: str = ""
    replication_factor: int = 3

    def connect(self) -> Any:
        """A driver session on the keyspace (closed with ``session.cluster.shutdown()``)."""
        from labkit.services.cassandra import CassandraCredentials, driver_cluster
        cluster = driver_cluster(self.contact_points, credentials=CassandraCredentials(
            self.user, self.password, jmx_password=""))
        try:
            return cluster.connect(self.keyspace)
        except BaseException:
            cluster.shutdown()
            raise


@dataclass(frozen=True)
class RegionsWorkspace:
    """The keyspace one exercise runs in, in each regional cluster, and the links that reach them.

    ``links`` maps each region to the (host, port) of the Toxiproxy link a client in region
    ``us`` uses (``lab.regions.address("us", region)``): ``eu`` is a cross-region round trip
    away. Under ``labkit grade`` the login is a role granted this keyspace only
    (``namespace.create_regions``); in a student's own lab it is the lab's superuser.
    """

    links: dict[str, tuple[str, int]]
    user: str
    password: str = field(repr=False)
    keyspace: str = ""

    def connect(self, region: str) -> Any:
        """A driver session on the keyspace in ``region``'s cluster, through its link."""
        if region not in self.links:
            raise KeyError(f"no region {region!r}; the regions are {', '.join(self.links)}")
        return CassandraWorkspace((tuple(self.links[region]),), self.user, self.password,
                                  self.keyspace, 1).connect()

    def stores(self) -> dict[str, Any]:
        """{region: RegionStore} on the keyspace, the AccessState table made (kept if there)."""
        from labkit.backend.akkio import RegionStore
        return {r: RegionStore(r, self.connect(r), self.keyspace).create(create_keyspace=False)
                for r in self.links}


@dataclass(frozen=True)
class Workspace:
    """The database and cache prefix one exercise runs in, with connection helpers.

    ``dsn`` and ``follower_dsn`` reach the same database on the leader and on a follower;
    ``prefix`` starts every cache key the exercise writes; ``broker_url`` is a RabbitMQ vhost
    of its own when the exercise uses one; ``cassandra`` a keyspace of its own on the ring;
    ``regions`` one in each regional cluster.
    """

    dsn: str
    follower_dsn: str
    cache_servers: tuple[tuple[str, int], ...]
    prefix: str
    broker_url: str = ""
    cassandra: CassandraWorkspace | None = None
    regions: RegionsWorkspace | None = None

    def connect(self, *, follower: bool = False, autocommit: bool = True) -> Any:
        """A psycopg connection to the leader (or the follower) of this workspace."""
        import psycopg
        return psycopg.connect(self.follower_dsn if follower else self.dsn,
                               autocommit=autocommit, connect_timeout=5)

    def cache(self, timeout_s: float = 5.0) -> Any:
        """A thread-safe pymemcache client for the workspace's memcached servers.

        Every write waits for memcached's answer (``default_noreply=False``): with pooled
        connections a fire-and-forget delete could otherwise land after the next read.
        """
        from pymemcache.client.hash import HashClient
        return HashClient(list(self.cache_servers), use_pooling=True, max_pool_size=64,
                          connect_timeout=timeout_s, timeout=timeout_s, no_delay=True,
                          default_noreply=False)


def workspace(name: str, *, rabbitmq: bool = False, cassandra: bool = False,
              regions: bool = False) -> Workspace:
    """The namespace of exercise ``name``: the grader's under ``labkit grade``, else a fresh one.

    Outside the grader this brings the lab up (``lk.up()``), recreates database
    ``exercise_<name>`` and picks a new cache prefix, so a notebook always starts clean.
    ``rabbitmq=True`` also gives it a broker URL (the lab's vhost outside the grader, the
    submission's own vhost under it). ``cassandra=True`` also gives it a keyspace on the
    lab's 3-node ring (``ws.cassandra``): outside the grader the ring is started if needed
    (``lk.up(cassandra="ring")``) and keyspace ``exercise_<name>`` recreated (RF 3); under it,
    the submission's own keyspace, reached with a login granted that keyspace alone.
    ``regions=True`` gives it a keyspace in each of the two regional clusters
    (``ws.regions``, reached through the links of a client in ``us``): outside the grader
    the regions are started if needed (``lk.up(cassandra="regions")``) and keyspace
    ``exercise_<name>`` recreated in each.
    """
    env = os.environ
    if env.get(GRADE_ENV):
        servers = _addresses(env["LABKIT_GRADE_CACHE_SERVERS"])
        cws = None
        if cassandra and env.get("LABKIT_GRADE_CASSANDRA_KEYSPACE"):
            cws = CassandraWorkspace(_addresses(env["LABKIT_GRADE_CASSANDRA_POINTS"]),
                                     env["LABKIT_GRADE_CASSANDRA_USER"],
                                     env["LABKIT_GRADE_CASSANDRA_PASSWORD"],
                                     env["LABKIT_GRADE_CASSANDRA_KEYSPACE"],
                                     int(env["LABKIT_GRADE_CASSANDRA_RF"]))
        elif cassandra:
            raise RuntimeError(f"exercise {name} uses Cassandra but the grader gave it no "
                               "keyspace: add \"cassandra\" to the solution's metadata labkit.uses")
        rws = None
        if regions and env.get("LABKIT_GRADE_REGIONS_KEYSPACE"):
            rws = RegionsWorkspace({r: _addresses(a)[0] for r, a in (
                item.split("=", 1) for item in env["LABKIT_GRADE_REGIONS_LINKS"].split(","))},
                env["LABKIT_GRADE_REGIONS_USER"], env["LABKIT_GRADE_REGIONS_PASSWORD"],
                env["LABKIT_GRADE_REGIONS_KEYSPACE"])
        elif regions:
            raise RuntimeError(f"exercise {name} uses the regions but the grader gave it no "
                               "keyspace there: add \"regions\" to the solution's metadata "
                               "labkit.uses")
        ws = Workspace(env["LABKIT_GRADE_DSN"], env["LABKIT_GRADE_FOLLOWER_DSN"], servers,
                       env["LABKIT_GRADE_CACHE_PREFIX"], env.get("LABKIT_GRADE_BROKER_URL", ""),
                       cws, rws)
    else:
        import labkit as lk
        overrides: dict[str, Any] = {}
        if rabbitmq:
            overrides["services"] = ("postgres", "memcached", "rabbitmq")
        if cassandra and regions:
            raise ValueError("workspace(cassandra=True, regions=True): an exercise uses the "
                             "ring or the regions, not both")
        if cassandra or regions:
            overrides["cassandra"] = "regions" if regions else "ring"
        lab = lk.up(**overrides)
        dbname = lab.postgres.create_database(f"exercise_{name}".lower(), replace=True)
        follower = lab.followers[0] if lab.followers else lab.leader
        ws = Workspace(lab.leader.dsn(dbname), follower.dsn(dbname),
                       tuple(tuple(s) for s in lab.cache_servers),
                       f"ex{name}-{secrets.token_hex(3)}",
                       lab.broker_url if rabbitmq else "",
                       _exercise_keyspace(lab, name) if cassandra else None,
                       _exercise_regions(lab, name) if regions else None)
    _current["workspace"] = ws
    return ws


def _addresses(text: str) -> tuple[tuple[str, int], ...]:
    """``"h1:p1,h2:p2"`` (how the grader passes server lists) as ((h1, p1), (h2, p2))."""
    return tuple((h, int(p)) for h, p in (item.rsplit(":", 1) for item in text.split(",")))


def _exercise_keyspace(lab: Any, name: str) -> CassandraWorkspace:
    """Recreate keyspace ``exercise_<name>`` (RF 3) on the lab's ring; the lab's login to it."""
    from labkit.services.cassandra import DDL_TIMEOUT_S, create_keyspace, wait_for_schema
    cluster = lab.cassandra.region(lab.cassandra.regions[0])
    if len(cluster.nodes) < 3:
        raise RuntimeError(f"exercise {name} needs the 3-node ring, and this lab runs Cassandra "
                           f"{lab.cassandra.topology!r}; stop it with `labkit down`, then "
                           "`labkit up --cassandra ring`")
    keyspace = f"exercise_{name}".lower()
    session = lab.cassandra.connect()
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=DDL_TIMEOUT_S)
        create_keyspace(session, keyspace, {cluster.dc: 3}, if_not_exists=False)
        wait_for_schema(session)
    finally:
        session.cluster.shutdown()
    creds = lab.cassandra.credentials
    return CassandraWorkspace(tuple(tuple(p) for p in cluster.contact_points), creds.user,
                              creds.password, keyspace, 3)


def _exercise_regions(lab: Any, name: str) -> RegionsWorkspace:
    """Recreate keyspace ``exercise_<name>`` in each regional cluster; the lab's login, links."""
    from labkit.grading.namespace import CLIENT_REGION
    from labkit.services.cassandra import DDL_TIMEOUT_S, create_keyspace
    cas, net = lab.cassandra_topologies["regions"], lab.regions
    keyspace = f"exercise_{name}".lower()
    for region in cas.regions:
        session = cas.connect(region=region)
        try:
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=DDL_TIMEOUT_S)
            create_keyspace(session, keyspace, {cas.region(region).dc: 1}, if_not_exists=False)
        finally:
            session.cluster.shutdown()
    creds = cas.credentials
    return RegionsWorkspace({r: net.address(CLIENT_REGION, r) for r in cas.regions},
                            creds.user, creds.password, keyspace)


# ------------------------------------------------------- the kernel's side of grading

def _serve(nonce: str, payload: str) -> None:
    """What the grader runs for each batch of calls: one tagged JSON line with the outcomes."""
    try:
        results: Any = _run_calls(json.loads(payload))
    except BaseException as e:  # an answer, whatever happened
        results = {"error": f"{type(e).__name__}: {e}"}
    sys.stdout.write(f"\n{TAG}{nonce} {json.dumps(results)}\n")
    sys.stdout.flush()


def _run_calls(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the calls of ``payload`` (threads, or a forked process each); their outcomes."""
    calls = payload["calls"]
    t0 = time.monotonic()
    if len(calls) == 1 and payload.get("mode") != "processes":
        return [_one(calls[0], t0)]
    results: list[Any] = [None] * len(calls)
    if payload.get("mode") == "processes":
        return _in_processes(calls, t0)

    def run(i: int) -> None:
        results[i] = _one(calls[i], t0)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _in_processes(calls: list[dict[str, Any]], t0: float) -> list[dict[str, Any]]:
    children = []
    for call in calls:
        fd, path = tempfile.mkstemp(prefix="lk-call-")
        os.close(fd)
        pid = os.fork()
        if pid == 0:  # the child: one call, its outcome in the file, and out
            try:
                with open(path, "w") as f:
                    json.dump(_one(call, t0), f)
            finally:
                os._exit(0)
        children.append((pid, path))
    results = []
    for pid, path in children:
        os.waitpid(pid, 0)
        try:
            with open(path) as f:
                results.append(json.load(f))
        except (OSError, ValueError):
            results.append({"raised": "ProcessDied", "message": "the process of this call died"})
        finally:
            os.unlink(path)
    return results


def _one(call: dict[str, Any], t0: float) -> dict[str, Any]:
    """Run one call at its moment; its outcome as JSON (the value wire-encoded)."""
    from labkit.grading import wire
    delay = t0 + float(call.get("after_s", 0)) - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    started = time.monotonic()
    try:
        fn = _function(call["fn"])
        args = wire.decode(call.get("args", []), resolve=_resolve)
        kwargs = wire.decode(call.get("kwargs", {}), resolve=_resolve)
        value = fn(*args, **kwargs)
        out: dict[str, Any] = {"value": wire.encode(value)}
    except BaseException as e:  # the student's exception is an observation
        out = {"raised": type(e).__name__, "message": str(e)[:2000]}
    out["elapsed_s"] = time.monotonic() - started
    return out


def _function(name: str) -> Callable[..., Any]:
    """The student's global ``name``, or ``module:attr`` of labkit (the grader's observers)."""
    if ":" in name:
        module, _, attr = name.partition(":")
        if not module.startswith("labkit."):
            raise NameError(f"{name}: only labkit's own functions can be named this way")
        import importlib
        return getattr(importlib.import_module(module), attr)
    main = vars(sys.modules["__main__"])
    if name not in main or not callable(main[name]):
        raise NameError(f"your notebook defines no function {name}(); run the cell that "
                        "defines it, or keep its name")
    return main[name]


def _resolve(spec: dict[str, Any]) -> Any:
    """What a marker in a call's arguments names (``harness.Marker``)."""
    if "ref" in spec:
        main = vars(sys.modules["__main__"])
        name = str(spec["ref"])
        if name not in main:
            raise NameError(f"your notebook has no variable {name}; run its first cell")
        return main[name]
    ws = _current.get("workspace")
    if ws is None:
        raise RuntimeError("no workspace: run the notebook's first cell (workspace(...))")
    if spec.get("new") == "conn":
        return ws.connect()
    if spec.get("new") == "follower_conn":
        return ws.connect(follower=True)
    if spec.get("new") == "cache":
        return ws.cache()
    if "loader" in spec:
        return _loader(ws, str(spec["loader"]), float(spec.get("sleep_s", 0)),
                       bool(spec.get("fail")))
    if "reader" in spec:
        return _reader(ws, str(spec["reader"]), str(spec["token"]), float(spec.get("sleep_s", 0)),
                       int(spec.get("ttl_s", 60)))
    raise ValueError(f"unknown marker {spec!r}")


def _loader(ws: Workspace, token: str, sleep_s: float, fail: bool) -> Callable[[], bytes]:
    def load() -> bytes:
        with ws.connect() as conn:
            value = conn.execute("SELECT lk_grader.load(%s)", (token,)).fetchone()[0]
        time.sleep(sleep_s)
        if fail:
            raise RuntimeError("the database is down (this load was made to fail)")
        return (value or "").encode()
    return load


def _reader(ws: Workspace, key: str, token: str, sleep_s: float,
            ttl_s: int) -> Callable[[], bytes]:
    cache = ws.cache()
    load = _loader(ws, token, sleep_s, False)

    def read() -> bytes:
        value = cache.get(key)
        if value is None:
            value = load()
            cache.set(key, value, expire=ttl_s)
        return value
    return read


def _kill_local_workers() -> int:
    from labkit.grading import workers
    return workers.kill_local()
