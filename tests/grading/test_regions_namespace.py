"""A submission's keyspaces in the two regional clusters, reached only through the links.

``namespace.create(lab, regions=True)`` is what the grader makes for an assignment whose
metadata ``labkit.uses`` names "regions" (exercise 10): a keyspace and a role granted it alone
in each regional cluster; the kernel gets the Toxiproxy links of a client in ``us`` (never
the clusters' own addresses) and reaches its keyspaces with ``workspace("10", regions=True)``
from the namespace's environment alone. Grading end to end through the sandbox is
test_grading_grade.py's and test_wrong_answers.py's.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from labkit.backend.feeds import DDL_TIMEOUT_S
from labkit.grading import namespace, student

pytestmark = pytest.mark.cassandra


def _as(ns: namespace.Namespace, monkeypatch) -> student.RegionsWorkspace:
    """The regions as the submission's kernel gets them: from the namespace's environment."""
    for k, v in ns.env(("127.0.0.1", 11211)).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(student, "_current", {})
    return student.workspace("10", regions=True).regions


def test_the_role_reaches_its_keyspaces_through_the_links_only(regions_lab, monkeypatch):
    from cassandra import Unauthorized
    cas, net = regions_lab.cassandra_topologies["regions"], regions_lab.regions
    mine = namespace.create(regions_lab, regions=True)
    other = f"{mine.name}_other"  # someone else's keyspace, with data, in each region
    for region in cas.regions:
        admin = cas.connect(region=region)
        try:
            admin.execute(f"CREATE KEYSPACE {other} WITH replication = {{'class': "
                          f"'NetworkTopologyStrategy', '{cas.region(region).dc}': 1}}",
                          timeout=DDL_TIMEOUT_S)
            admin.execute(f"CREATE TABLE {other}.secrets (k int PRIMARY KEY, v text)",
                          timeout=DDL_TIMEOUT_S)
        finally:
            admin.cluster.shutdown()
    try:
        env = mine.env(("127.0.0.1", 11211))
        assert regions_lab.cassandra.credentials.password not in env.values()
        direct = {tuple(p) for r in cas.regions for p in cas.region(r).contact_points}
        forwarded = {v for k, v in mine.servers().items() if k.startswith("region-")}
        assert forwarded == {net.address("us", r) for r in cas.regions}
        assert not forwarded & direct, "the sandbox must reach the clusters through the links"
        rws = _as(mine, monkeypatch)
        sessions = {r: rws.connect(r) for r in ("us", "eu")}
        try:
            for region, session in sessions.items():
                session.execute("CREATE TABLE t (k int PRIMARY KEY, v text)",
                                timeout=DDL_TIMEOUT_S)
                session.execute("INSERT INTO t (k, v) VALUES (1, %s)", (region,))
                assert session.execute("SELECT v FROM t WHERE k = 1").one().v == region
                for statement in (f"SELECT * FROM {other}.secrets", f"DROP KEYSPACE {other}"):
                    with pytest.raises(Unauthorized):
                        session.execute(statement)
        finally:
            for s in sessions.values():
                s.cluster.shutdown()
    finally:
        namespace.drop(regions_lab, mine)
        for region in cas.regions:
            admin = cas.connect(region=region)
            try:
                admin.execute(f"DROP KEYSPACE IF EXISTS {other}", timeout=DDL_TIMEOUT_S)
            finally:
                admin.cluster.shutdown()
    for region in cas.regions:
        admin = cas.connect(region=region)
        try:
            assert admin.execute("SELECT keyspace_name FROM system_schema.keyspaces WHERE "
                                 "keyspace_name = %s", (mine.regions.keyspace,)).one() is None
            assert admin.execute("SELECT role FROM system_auth.roles WHERE role = %s",
                                 (mine.regions.user,)).one() is None
        finally:
            admin.cluster.shutdown()


def test_a_lab_without_the_regions_is_refused_with_the_fix():
    ring_only = SimpleNamespace(cassandra_topologies={"ring": object()})
    with pytest.raises(RuntimeError, match="labkit up --cassandra regions"):
        namespace.create_regions(ring_only, "g_x")
