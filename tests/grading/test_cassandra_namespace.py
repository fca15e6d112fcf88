"""A submission's Cassandra keyspace and role on the real ring: its keyspace only, then gone.

The namespace (``labkit.grading.namespace.create(lab, cassandra=True)``) is what the grader
makes for an assignment whose metadata ``labkit.uses`` names "cassandra"; the kernel reaches
it with ``workspace("09", cassandra=True)`` from the namespace's environment alone. Grading
through the sandbox's forwarders end to end is test_grading_grade.py's (exercise 09's solution
gets full marks, its stubs zero) and test_wrong_answers.py's.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from labkit.backend.feeds import DDL_TIMEOUT_S
from labkit.grading import namespace, student

pytestmark = pytest.mark.cassandra


@pytest.fixture
def two(ring_lab):
    mine = namespace.create(ring_lab, cassandra=True)
    other = namespace.create(ring_lab, cassandra=True)
    admin = ring_lab.cassandra.connect()
    admin.execute(f"CREATE TABLE {other.cassandra.keyspace}.secrets (k int PRIMARY KEY, v text)",
                  timeout=DDL_TIMEOUT_S)
    admin.execute(f"INSERT INTO {other.cassandra.keyspace}.secrets (k, v) VALUES (1, 'not yours')")
    yield mine, other
    admin.cluster.shutdown()
    for ns in (mine, other):
        namespace.drop(ring_lab, ns)


def _as(ns: namespace.Namespace, monkeypatch) -> object:
    """A session as the submission's kernel gets it: from the namespace's environment only."""
    for k, v in ns.env(("127.0.0.1", 11211)).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(student, "_current", {})
    return student.workspace("09", cassandra=True).cassandra.connect()


def test_the_namespace_carries_the_ring_to_the_kernel(ring_lab):
    ns = namespace.create(ring_lab, cassandra=True)
    try:
        env = ns.env(("127.0.0.1", 11211))
        assert env["LABKIT_GRADE_CASSANDRA_KEYSPACE"] == ns.cassandra.keyspace == ns.name
        assert ring_lab.cassandra.credentials.password not in env.values()
        assert env["LABKIT_GRADE_CASSANDRA_RF"] == "3"
        # One forwarder per node: the sandbox reaches the ring through these and nothing else.
        points = ring_lab.cassandra.region(ring_lab.cassandra.regions[0]).contact_points
        assert sorted(v for k, v in ns.servers().items() if k.startswith("cassandra")) == \
            sorted(tuple(p) for p in points)
    finally:
        namespace.drop(ring_lab, ns)
    plain = namespace.create(ring_lab)
    try:
        assert plain.cassandra is None
        assert not any(k.startswith("LABKIT_GRADE_CASSANDRA") for k in plain.env(("h", 1)))
        assert not any(k.startswith("cassandra") for k in plain.servers())
    finally:
        namespace.drop(ring_lab, plain)


def test_the_role_reaches_its_own_keyspace(two, monkeypatch):
    mine, _ = two
    session = _as(mine, monkeypatch)
    try:
        assert session.keyspace == mine.cassandra.keyspace
        session.execute("CREATE TABLE t (k int PRIMARY KEY, v int)", timeout=DDL_TIMEOUT_S)
        session.execute("INSERT INTO t (k, v) VALUES (1, 2)")
        assert session.execute("SELECT v FROM t WHERE k = 1").one().v == 2
    finally:
        session.cluster.shutdown()


def test_the_role_cannot_read_or_change_another_keyspace(two, monkeypatch):
    from cassandra import Unauthorized
    mine, other = two
    session = _as(mine, monkeypatch)
    try:
        for statement in (f"SELECT v FROM {other.cassandra.keyspace}.secrets WHERE k = 1",
                          f"INSERT INTO {other.cassandra.keyspace}.secrets (k, v) VALUES (2, 'x')",
                          f"DROP KEYSPACE {other.cassandra.keyspace}",
                          "CREATE KEYSPACE mine_too WITH replication = "
                          "{'class': 'NetworkTopologyStrategy', 'us': 1}",
                          f"GRANT SELECT ON KEYSPACE {mine.cassandra.keyspace} TO "
                          f"{other.cassandra.user}"):
            with pytest.raises(Unauthorized):
                session.execute(statement)
    finally:
        session.cluster.shutdown()


def test_drop_removes_keyspace_and_role_with_the_database(ring_lab):
    ns = namespace.create(ring_lab, cassandra=True)
    namespace.drop(ring_lab, ns)
    namespace.drop(ring_lab, ns)  # idempotent
    admin = ring_lab.cassandra.connect()
    try:
        assert admin.execute("SELECT keyspace_name FROM system_schema.keyspaces "
                             "WHERE keyspace_name = %s", (ns.cassandra.keyspace,)).one() is None
        assert admin.execute("SELECT role FROM system_auth.roles WHERE role = %s",
                             (ns.cassandra.user,)).one() is None
    finally:
        admin.cluster.shutdown()
    assert not ring_lab.leader.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                       (ns.name,))


def test_a_lab_without_cassandra_is_refused_with_the_fix():
    with pytest.raises(RuntimeError, match="labkit up --cassandra ring"):
        namespace.create_cassandra(SimpleNamespace(cassandra=None), "g_x")
