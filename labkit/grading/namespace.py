"""Per-submission namespaces: a database owned by a login role of its own, and a cache prefix.

The grader (which holds the lab's admin credentials) creates a namespace before a submission
runs and drops it afterwards; the submission only ever sees the namespace's own role. The
role is not a superuser and cannot create roles or databases, so it cannot drop another
namespace's database (only an owner or a superuser may), and ``REVOKE CONNECT ... FROM
PUBLIC`` keeps other roles out of this one. RabbitMQ gets no namespace: no exercise uses it.
Cassandra (exercise 09) gets a keyspace and a role granted that keyspace alone
(``create_cassandra``/``drop_cassandra``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from psycopg.conninfo import make_conninfo

from labkit.backend.cache import delete_prefix
from labkit.backend.feeds import DDL_TIMEOUT_S


@dataclass(frozen=True)
class Namespace:
    """One submission's database, role and cache prefix, and the environment that carries them."""

    name: str
    password: str
    leader: tuple[str, int]
    follower: tuple[str, int]
    cache_servers: tuple[tuple[str, int], ...]

    @property
    def prefix(self) -> str:
        return self.name

    def dsn(self, follower: bool = False) -> str:
        host, port = self.follower if follower else self.leader
        return make_conninfo(host=host, port=port, dbname=self.name, user=self.name,
                             password=self.password)

    def env(self) -> dict[str, str]:
        """The only credentials a graded kernel receives."""
        return {"LABKIT_GRADE": "1", "LABKIT_GRADE_DSN": self.dsn(),
                "LABKIT_GRADE_FOLLOWER_DSN": self.dsn(follower=True),
                "LABKIT_GRADE_CACHE_SERVERS": ",".join(f"{h}:{p}" for h, p in self.cache_servers),
                "LABKIT_GRADE_CACHE_PREFIX": self.prefix}


def create(lab: Any, tag: str = "g") -> Namespace:
    """Create a role and a database it owns (replicated to the followers) and a cache prefix."""
    name = f"{tag}_{secrets.token_hex(5)}"
    password = secrets.token_urlsafe(18)
    # token_urlsafe never contains a quote, so the literal needs no escaping.
    lab.leader.execute(f'CREATE ROLE "{name}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                       f"NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 20 PASSWORD '{password}'")
    lab.postgres.create_database(name, owner=name)
    lab.leader.execute(f'REVOKE ALL ON DATABASE "{name}" FROM PUBLIC')
    follower = lab.followers[0] if lab.followers else lab.leader
    return Namespace(name, password, (lab.leader.host, lab.leader.port),
                     (follower.host, follower.port), tuple(tuple(s) for s in lab.cache_servers))


def drop(lab: Any, ns: Namespace) -> None:
    """Drop the namespace's database, role and cache keys (idempotent)."""
    lab.postgres.drop_database(ns.name)
    lab.leader.execute(f'DROP ROLE IF EXISTS "{ns.name}"')
    delete_prefix(ns.cache_servers, ns.prefix)


# --------------------------------------------------------------------------------- Cassandra
# A submission's keyspace and a role that reaches it alone (exercise 09). Kept apart from
# Namespace so the grading isolation can take it in as it is.

@dataclass(frozen=True)
class CassandraNamespace:
    """One submission's keyspace on the lab's ring, and a login role granted that keyspace only.

    The role is no superuser and holds CREATE, ALTER, DROP, SELECT and MODIFY on its keyspace
    (not AUTHORIZE, so it cannot hand them on); any other keyspace answers ``Unauthorized``.
    Reading the system tables (the driver's metadata) is allowed to every role.
    """

    keyspace: str
    password: str = field(repr=False)
    contact_points: tuple[tuple[str, int], ...]
    replication_factor: int

    @property
    def user(self) -> str:
        return self.keyspace

    def env(self) -> dict[str, str]:
        """What a graded kernel receives to reach its keyspace (``student.cassandra_workspace``)."""
        return {"LABKIT_GRADE_CASSANDRA_POINTS": ",".join(f"{h}:{p}" for h, p in self.contact_points),
                "LABKIT_GRADE_CASSANDRA_USER": self.user,
                "LABKIT_GRADE_CASSANDRA_PASSWORD": self.password,
                "LABKIT_GRADE_CASSANDRA_KEYSPACE": self.keyspace,
                "LABKIT_GRADE_CASSANDRA_RF": str(self.replication_factor)}


CASSANDRA_GRANTS = ("CREATE", "ALTER", "DROP", "SELECT", "MODIFY")


def create_cassandra(lab: Any, tag: str = "g") -> CassandraNamespace:
    """Create a keyspace (NetworkTopologyStrategy, RF = nodes up to 3) and a role for it alone."""
    cluster = lab.cassandra.region(lab.cassandra.regions[0])
    name = f"{tag}_{secrets.token_hex(5)}"
    password = secrets.token_urlsafe(18)
    rf = min(3, len(cluster.nodes))
    session = lab.cassandra.connect()
    try:
        session.execute(f"CREATE KEYSPACE {name} WITH replication = "
                        f"{{'class': 'NetworkTopologyStrategy', '{cluster.dc}': {rf}}}",
                        timeout=DDL_TIMEOUT_S)
        # token_urlsafe never contains a quote; the password is bound all the same.
        session.execute(f"CREATE ROLE {name} WITH LOGIN = true AND SUPERUSER = false "
                        "AND PASSWORD = %s", (password,))
        for permission in CASSANDRA_GRANTS:
            session.execute(f"GRANT {permission} ON KEYSPACE {name} TO {name}")
    finally:
        session.cluster.shutdown()
    return CassandraNamespace(name, password, tuple(tuple(p) for p in cluster.contact_points), rf)


def drop_cassandra(lab: Any, ns: CassandraNamespace) -> None:
    """Drop the namespace's keyspace and role (idempotent)."""
    session = lab.cassandra.connect()
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {ns.keyspace}", timeout=DDL_TIMEOUT_S)
        session.execute(f"DROP ROLE IF EXISTS {ns.user}")
    finally:
        session.cluster.shutdown()
