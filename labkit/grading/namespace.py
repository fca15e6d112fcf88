"""Per-submission namespaces on the lab's shared servers: database and role, vhost, keyspace.

The grader (which holds the lab's admin credentials) creates a namespace before a submission
runs and drops it afterwards; the submission only ever sees the namespace's own credentials.
The PostgreSQL role is not a superuser and cannot create roles or databases, so it cannot
drop another namespace's database (only an owner or a superuser may), and ``REVOKE CONNECT
... FROM PUBLIC`` keeps other roles out of this one. When the assignment uses RabbitMQ, the
namespace gets a vhost of its own and a user whose permissions cover that vhost only. When
it uses Cassandra (exercise 09), a keyspace on the lab's ring and a Cassandra role granted that
keyspace alone (``CassandraNamespace``): not a superuser, no AUTHORIZE, so it can neither
reach another keyspace nor hand its own permissions on.

Memcached has no access control, so a key prefix would be a convention only: each graded
submission gets a memcached instance of its own instead (``labkit.grading.grader``); the
prefix stays, so that notebooks read the same inside and outside the grader.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from psycopg.conninfo import make_conninfo

from labkit._proc import new_password

# The permissions a submission's Cassandra role holds on its own keyspace (not AUTHORIZE).
CASSANDRA_GRANTS = ("CREATE", "ALTER", "DROP", "SELECT", "MODIFY")


@dataclass(frozen=True)
class CassandraNamespace:
    """One submission's keyspace on the lab's ring, and a login role granted that keyspace only.

    Reading the system tables (the driver's metadata) is allowed to every role; any other
    keyspace answers ``Unauthorized``. The role's name is the keyspace's.
    """

    keyspace: str
    password: str = field(repr=False)
    contact_points: tuple[tuple[str, int], ...]
    replication_factor: int

    @property
    def user(self) -> str:
        return self.keyspace

    def env(self) -> dict[str, str]:
        """What a graded kernel receives to reach its keyspace (``student.workspace``)."""
        return {"LABKIT_GRADE_CASSANDRA_POINTS": ",".join(f"{h}:{p}" for h, p in
                                                          self.contact_points),
                "LABKIT_GRADE_CASSANDRA_USER": self.user,
                "LABKIT_GRADE_CASSANDRA_PASSWORD": self.password,
                "LABKIT_GRADE_CASSANDRA_KEYSPACE": self.keyspace,
                "LABKIT_GRADE_CASSANDRA_RF": str(self.replication_factor)}


@dataclass(frozen=True)
class Namespace:
    """One submission's database, role (and vhost), and the environment that carries them."""

    name: str
    password: str
    leader: tuple[str, int]
    follower: tuple[str, int]
    rabbitmq: tuple[str, int] | None = None
    cassandra: CassandraNamespace | None = None

    @property
    def prefix(self) -> str:
        return self.name

    @property
    def vhost(self) -> str:
        return self.name

    def dsn(self, follower: bool = False) -> str:
        host, port = self.follower if follower else self.leader
        return make_conninfo(host=host, port=port, dbname=self.name, user=self.name,
                             password=self.password)

    def broker_url(self) -> str:
        if self.rabbitmq is None:
            return ""
        host, port = self.rabbitmq
        return f"amqp://{self.name}:{quote(self.password, safe='')}@{host}:{port}/{self.vhost}"

    def servers(self) -> dict[str, tuple[str, int]]:
        """The shared servers the submission may reach, by forwarder name."""
        out = {"leader": self.leader, "follower": self.follower}
        if self.follower == self.leader:
            del out["follower"]
        if self.rabbitmq:
            out["rabbitmq"] = self.rabbitmq
        if self.cassandra:
            # Every node: the driver finds the others in system.peers and connects to each.
            for i, point in enumerate(self.cassandra.contact_points):
                out[f"cassandra{i + 1}"] = point
        return out

    def env(self, cache: tuple[str, int]) -> dict[str, str]:
        """The only credentials a graded kernel receives (``cache``: its memcached)."""
        return {"LABKIT_GRADE": "1", "LABKIT_GRADE_DSN": self.dsn(),
                "LABKIT_GRADE_FOLLOWER_DSN": self.dsn(follower=True),
                "LABKIT_GRADE_CACHE_SERVERS": f"{cache[0]}:{cache[1]}",
                "LABKIT_GRADE_CACHE_PREFIX": self.prefix,
                "LABKIT_GRADE_BROKER_URL": self.broker_url(),
                **(self.cassandra.env() if self.cassandra else {})}


def create(lab: Any, tag: str = "g", *, rabbitmq: bool = False,
           cassandra: bool = False) -> Namespace:
    """Create a role and a database it owns (replicated to the followers), a vhost, a keyspace.

    ``rabbitmq`` and ``cassandra`` ask for a vhost and a keyspace (``create_cassandra``).
    """
    name = f"{tag}_{secrets.token_hex(5)}"
    password = new_password()  # never contains a quote: the literal needs no escaping
    lab.leader.execute(f'CREATE ROLE "{name}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                       f"NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 40 PASSWORD '{password}'")
    lab.postgres.create_database(name, owner=name)
    lab.leader.execute(f'REVOKE ALL ON DATABASE "{name}" FROM PUBLIC')
    follower = lab.followers[0] if lab.followers else lab.leader
    mq = None
    if rabbitmq:
        lab.rabbitmq.add_vhost(name, user=name, password=password)
        mq = lab.rabbitmq.host_port
    cns = None
    if cassandra:
        try:
            cns = create_cassandra(lab, name)
        except BaseException:
            drop(lab, Namespace(name, password, (lab.leader.host, lab.leader.port),
                                (follower.host, follower.port), mq))
            raise
    return Namespace(name, password, (lab.leader.host, lab.leader.port),
                     (follower.host, follower.port), mq, cns)


def drop(lab: Any, ns: Namespace) -> None:
    """Drop the namespace's database, role, vhost and keyspace (idempotent)."""
    lab.postgres.drop_database(ns.name)
    lab.leader.execute(f'DROP ROLE IF EXISTS "{ns.name}"')
    if ns.rabbitmq and lab.rabbitmq:
        lab.rabbitmq.delete_vhost(ns.name, user=ns.name)
    if ns.cassandra:
        drop_cassandra(lab, ns.cassandra)


# --------------------------------------------------------------------------------- Cassandra

CASSANDRA_FIX = ("this assignment uses Cassandra (metadata labkit.uses) and the lab runs none: "
                 "start the ring with `labkit up --cassandra ring` (or `labkit grade --cassandra "
                 "ring ...`)")


def create_cassandra(lab: Any, name: str) -> CassandraNamespace:
    """Create keyspace ``name`` (NetworkTopologyStrategy, RF = nodes up to 3) and a role for it.

    The role logs in with a fresh password and holds ``CASSANDRA_GRANTS`` on that keyspace
    only. The lab's superuser (the grader's credentials) makes both.
    """
    from labkit.backend.feeds import DDL_TIMEOUT_S
    if getattr(lab, "cassandra", None) is None:
        raise RuntimeError(CASSANDRA_FIX)
    cluster = lab.cassandra.region(lab.cassandra.regions[0])
    password = new_password()
    rf = min(3, len(cluster.nodes))
    session = lab.cassandra.connect()
    try:
        session.execute(f"CREATE KEYSPACE {name} WITH replication = "
                        f"{{'class': 'NetworkTopologyStrategy', '{cluster.dc}': {rf}}}",
                        timeout=DDL_TIMEOUT_S)
        # new_password never contains a quote; the password is bound all the same.
        session.execute(f"CREATE ROLE {name} WITH LOGIN = true AND SUPERUSER = false "
                        "AND PASSWORD = %s", (password,))
        for permission in CASSANDRA_GRANTS:
            session.execute(f"GRANT {permission} ON KEYSPACE {name} TO {name}")
    finally:
        session.cluster.shutdown()
    return CassandraNamespace(name, password, tuple(tuple(p) for p in cluster.contact_points), rf)


def drop_cassandra(lab: Any, ns: CassandraNamespace) -> None:
    """Drop the keyspace and its role (idempotent)."""
    from labkit.backend.feeds import DDL_TIMEOUT_S
    session = lab.cassandra.connect()
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {ns.keyspace}", timeout=DDL_TIMEOUT_S)
        session.execute(f"DROP ROLE IF EXISTS {ns.user}")
    finally:
        session.cluster.shutdown()
