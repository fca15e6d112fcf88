"""Test fixtures: one real lab per test session, in a directory of its own.

The session lab never touches a student's lab: the repository root's conftest.py points
LABKIT_LAB_DIR at a fresh temporary directory before anything runs, and notebooks run under
nbval inherit it, so their `lk.up()` reattaches to the same servers. Tests that must kill or break a lab start a
separate, disposable one (`fresh_lab_dir`).
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

import labkit as lk
from labkit import _labdir
from labkit.config import LabConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def lab() -> lk.Lab:
    """The session's lab: PostgreSQL leader + 1 follower, Memcached, RabbitMQ."""
    return lk.up(followers=1, services=("postgres", "memcached", "rabbitmq"))


@pytest.fixture
def fresh_lab_dir():
    """A disposable lab directory; whatever runs there is stopped and deleted afterwards.

    Marked as a lab's from the start, so servers a test starts there by hand (without
    `lk.up`) carry its marker too, and `down` finds them.
    """
    path = _labdir.make_temp("labkit-fresh-")
    _labdir.mark(path)
    yield path
    lk.down(LabConfig.load(lab_dir=path), purge=True)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pg_db(lab):
    """A database of its own for one test (the janitor pattern), dropped afterwards."""
    import uuid
    name = lab.postgres.create_database(f"t_{uuid.uuid4().hex[:10]}")
    yield name
    lab.postgres.drop_database(name)


@pytest.fixture(scope="session")
def ring_lab(lab) -> lk.Lab:
    """The session's lab with a 3-node Cassandra ring added (`lk.up(cassandra="ring")`).

    Started once per session, on first use; notebook 09 and exercise 09 reattach to it. Tests
    that pause or stop a node put it back before they return.
    """
    ring = lk.up(followers=1, services=("postgres", "memcached", "rabbitmq"), cassandra="ring")
    if len(ring.cassandra.nodes) != 3:
        pytest.fail(f"the session lab runs Cassandra {ring.cassandra.topology!r}, not the ring "
                    "these tests need")
    return ring


@pytest.fixture(scope="session")
def regions_lab(lab) -> lk.Lab:
    """The session's lab with the two regional clusters and their Toxiproxy links added.

    `lk.up(cassandra="regions")`, started once per session on first use (beside the ring, if
    that runs); notebook 10 and exercise 10 reattach to it.
    """
    return lk.up(followers=1, services=("postgres", "memcached", "rabbitmq"), cassandra="regions")


@pytest.fixture(scope="session")
def feeds_world(ring_lab):
    """Make a database (storage schema, task tables) and a feeds keyspace on the ring.

    A factory: ``with feeds_world("feeds", shards=4) as w:`` gives ``w.lab``, ``w.db``,
    ``w.conn`` (autocommit), ``w.session``, ``w.keyspace`` and ``w.tag``; the keyspace and the
    database are dropped afterwards. Modules share one world per module: creating a keyspace
    on the ring is the slow part.
    """
    from labkit.backend import feeds, schema, tasks

    @contextlib.contextmanager
    def make(prefix: str, shards: int):
        tag = uuid.uuid4().hex[:8]
        db = schema.create_database(ring_lab.leader, f"{prefix}_{tag}", shards=shards)
        conn = ring_lab.leader.connect(db, autocommit=True)
        tasks.install(conn)
        session = ring_lab.cassandra.connect()
        keyspace = feeds.install(session, f"{prefix}_{tag}")
        try:
            yield SimpleNamespace(lab=ring_lab, db=db, conn=conn, session=session,
                                  keyspace=keyspace, tag=tag)
        finally:
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=feeds.DDL_TIMEOUT_S)
            session.cluster.shutdown()
            conn.close()
            ring_lab.postgres.drop_database(db)
    return make
