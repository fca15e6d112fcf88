"""A submission's Cassandra namespace on the real ring: its keyspace only, then gone."""

from __future__ import annotations

import pytest

from labkit.backend.feeds import DDL_TIMEOUT_S
from labkit.grading import namespace, student

pytestmark = pytest.mark.cassandra


@pytest.fixture
def two(ring_lab):
    mine, other = namespace.create_cassandra(ring_lab), namespace.create_cassandra(ring_lab)
    admin = ring_lab.cassandra.connect()
    admin.execute(f"CREATE TABLE {other.keyspace}.secrets (k int PRIMARY KEY, v text)",
                  timeout=DDL_TIMEOUT_S)
    admin.execute(f"INSERT INTO {other.keyspace}.secrets (k, v) VALUES (1, 'not yours')")
    yield mine, other
    admin.cluster.shutdown()
    for ns in (mine, other):
        namespace.drop_cassandra(ring_lab, ns)


def _as(ns: namespace.CassandraNamespace, monkeypatch) -> object:
    """A session as the submission's kernel gets it: from the namespace's environment only."""
    for k, v in {"LABKIT_GRADE": "1", **ns.env()}.items():
        monkeypatch.setenv(k, v)
    return student.cassandra_workspace("09").connect()


def test_the_role_reaches_its_own_keyspace(two, monkeypatch):
    mine, _ = two
    session = _as(mine, monkeypatch)
    try:
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
        for statement in (f"SELECT v FROM {other.keyspace}.secrets WHERE k = 1",
                          f"INSERT INTO {other.keyspace}.secrets (k, v) VALUES (2, 'x')",
                          f"DROP KEYSPACE {other.keyspace}",
                          "CREATE KEYSPACE mine_too WITH replication = "
                          "{'class': 'NetworkTopologyStrategy', 'us': 1}",
                          f"GRANT SELECT ON KEYSPACE {mine.keyspace} TO {other.user}"):
            with pytest.raises(Unauthorized):
                session.execute(statement)
    finally:
        session.cluster.shutdown()


def test_drop_removes_keyspace_and_role(ring_lab):
    ns = namespace.create_cassandra(ring_lab)
    namespace.drop_cassandra(ring_lab, ns)
    namespace.drop_cassandra(ring_lab, ns)  # idempotent
    admin = ring_lab.cassandra.connect()
    try:
        assert admin.execute("SELECT keyspace_name FROM system_schema.keyspaces "
                             "WHERE keyspace_name = %s", (ns.keyspace,)).one() is None
        assert admin.execute("SELECT role FROM system_auth.roles WHERE role = %s",
                             (ns.user,)).one() is None
    finally:
        admin.cluster.shutdown()
