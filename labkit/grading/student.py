"""What a student's notebook calls: ``workspace``, ``tests`` and ``check``.

Inside a student's own lab, ``workspace("03")`` makes a fresh database and cache prefix on
the lab's servers. Under ``labkit grade`` the grader has already made a namespace for the
submission and passes only its credentials (``LABKIT_GRADE_*`` variables); the notebook code
is the same in both places. This module is the one bridge that reads those variables: the
grader's kernel has nothing else to go on.
"""

from __future__ import annotations

import json
import os
import secrets
import traceback
from dataclasses import dataclass
from typing import Any, Callable

GRADE_ENV = "LABKIT_GRADE"
# question id -> {test name: function}, in registration order
_registry: dict[str, dict[str, Callable[[], Any]]] = {}


def tests(question_id: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Register a test function of ``question_id`` (used in test cells: ``@tests("q1")``)."""
    def register(fn: Callable[[], Any]) -> Callable[[], Any]:
        _registry.setdefault(question_id, {})[fn.__name__] = fn
        return fn
    return register


def run_test(question_id: str, name: str) -> dict[str, Any]:
    """Run one registered test; return {"question", "test", "passed", "message"}."""
    fn = _registry.get(question_id, {}).get(name)
    result = {"question": question_id, "test": name, "passed": False, "message": ""}
    if fn is None:
        result["message"] = f"test {name} of {question_id} was not registered"
        return result
    try:
        fn()
    except BaseException as e:  # a KeyboardInterrupt from the grader's timeout fails one test
        result["message"] = _describe(e)
    else:
        result["passed"] = True
    return result


def _describe(e: BaseException) -> str:
    if isinstance(e, AssertionError) and str(e):
        return str(e)
    if isinstance(e, NotImplementedError):
        return f"not implemented yet: {e}" if str(e) else "not implemented yet"
    if isinstance(e, KeyboardInterrupt):
        return "interrupted: the test ran past its time limit"
    where = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
    at = f" (line {where[0].lineno} of {where[0].name})" if where else ""
    return f"{type(e).__name__}{': ' if str(e) else ''}{e}{at}"


def check(question_id: str) -> None:
    """Run the visible tests of ``question_id`` and print what passed and why not.

    Run the cell marked ``# TEST <id>`` first: it registers the tests this runs.
    """
    if os.environ.get(GRADE_ENV):
        print(f"{question_id}: checked by the grader")
        return
    found = _registry.get(question_id)
    if not found:
        print(f"{question_id}: no tests registered; run the cell that starts with "
              f"'# TEST {question_id}' first")
        return
    results = [run_test(question_id, name) for name in found]
    passed = sum(r["passed"] for r in results)
    mark = "all passed" if passed == len(results) else "some failed"
    print(f"{question_id}: {passed}/{len(results)} visible tests passed ({mark})")
    for r in results:
        line = f"  {'ok  ' if r['passed'] else 'FAIL'} {r['test']}"
        print(line + ("" if r["passed"] else f": {r['message']}"))


def _grade_line(nonce: str, question_id: str, name: str) -> None:
    """What the grader runs for each test: one JSON line it can find among the output."""
    print(f"LABKIT-RESULT-{nonce} " + json.dumps(run_test(question_id, name)))


@dataclass(frozen=True)
class Workspace:
    """The database and cache prefix one exercise runs in, with connection helpers.

    ``dsn`` and ``follower_dsn`` reach the same database on the leader and on a follower;
    ``prefix`` starts every cache key the exercise writes.
    """

    dsn: str
    follower_dsn: str
    cache_servers: tuple[tuple[str, int], ...]
    prefix: str

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


def workspace(name: str) -> Workspace:
    """The namespace of exercise ``name``: the grader's under ``labkit grade``, else a fresh one.

    Outside the grader this brings the lab up (``lk.up()``), recreates database
    ``exercise_<name>`` and picks a new cache prefix, so a notebook always starts clean.
    """
    env = os.environ
    if env.get(GRADE_ENV):
        servers = tuple((h, int(p)) for h, p in
                        (s.rsplit(":", 1) for s in env["LABKIT_GRADE_CACHE_SERVERS"].split(",")))
        return Workspace(env["LABKIT_GRADE_DSN"], env["LABKIT_GRADE_FOLLOWER_DSN"], servers,
                         env["LABKIT_GRADE_CACHE_PREFIX"])
    import labkit as lk
    lab = lk.up()
    dbname = lab.postgres.create_database(f"exercise_{name}".lower(), replace=True)
    follower = lab.followers[0] if lab.followers else lab.leader
    return Workspace(lab.leader.dsn(dbname), follower.dsn(dbname),
                     tuple(tuple(s) for s in lab.cache_servers),
                     f"ex{name}-{secrets.token_hex(3)}")


@dataclass(frozen=True)
class CassandraWorkspace:
    """The keyspace one exercise runs in on the lab's ring, and the login that reaches it.

    Under ``labkit grade`` the login is a role granted this keyspace only
    (``namespace.create_cassandra``); in a student's own lab it is the lab's superuser.
    """

    contact_points: tuple[tuple[str, int], ...]
    user: str
    password: str
    keyspace: str
    replication_factor: int

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


def cassandra_workspace(name: str) -> CassandraWorkspace:
    """Exercise ``name``'s keyspace: the grader's under ``labkit grade``, else a fresh one.

    Outside the grader this brings the lab up with the 3-node ring (``lk.up(cassandra="ring")``)
    and recreates keyspace ``exercise_<name>`` (NetworkTopologyStrategy, RF 3).
    """
    env = os.environ
    if env.get(GRADE_ENV):
        points = tuple((h, int(p)) for h, p in (s.rsplit(":", 1) for s in
                                                env["LABKIT_GRADE_CASSANDRA_POINTS"].split(",")))
        return CassandraWorkspace(points, env["LABKIT_GRADE_CASSANDRA_USER"],
                                  env["LABKIT_GRADE_CASSANDRA_PASSWORD"],
                                  env["LABKIT_GRADE_CASSANDRA_KEYSPACE"],
                                  int(env["LABKIT_GRADE_CASSANDRA_RF"]))
    import labkit as lk
    lab = lk.up(cassandra="ring")
    cluster = lab.cassandra.region(lab.cassandra.regions[0])
    if len(cluster.nodes) < 3:
        raise RuntimeError(f"exercise {name} needs the 3-node ring, and this lab runs Cassandra "
                           f"{lab.cassandra.topology!r}; stop it with `labkit down`, then "
                           "`labkit up --cassandra ring`")
    from labkit.backend.feeds import DDL_TIMEOUT_S
    keyspace = f"exercise_{name}".lower()
    session = lab.cassandra.connect()
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=DDL_TIMEOUT_S)
        session.execute(f"CREATE KEYSPACE {keyspace} WITH replication = "
                        f"{{'class': 'NetworkTopologyStrategy', '{cluster.dc}': 3}}",
                        timeout=DDL_TIMEOUT_S)
    finally:
        session.cluster.shutdown()
    creds = lab.cassandra.credentials
    return CassandraWorkspace(tuple(tuple(p) for p in cluster.contact_points), creds.user,
                              creds.password, keyspace, 3)
