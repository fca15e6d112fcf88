"""Per-submission namespaces on the lab's shared servers: database and role, vhost, keyspace.

The grader (which holds the lab's admin credentials) creates a namespace before a submission
runs and drops it afterwards; the submission only ever sees the namespace's own credentials.
The PostgreSQL role is not a superuser and cannot create roles or databases, so it cannot
drop another namespace's database (only an owner or a superuser may), and ``REVOKE CONNECT
... FROM PUBLIC`` keeps other roles out of this one. When the assignment uses RabbitMQ, the
namespace gets a vhost of its own and a user whose permissions cover that vhost only. When
it uses Cassandra (exercise 09), a keyspace on the lab's ring and a Cassandra role granted that
keyspace alone (``CassandraNamespace``): not a superuser, no AUTHORIZE, so it can neither
reach another keyspace nor hand its own permissions on. When it uses the regions (exercise
10), the same in each of the two regional clusters (``RegionsNamespace``), reached through
the lab's Toxiproxy links of a client in region ``us`` (so the submission pays the distance).

Memcached has no access control, so a key prefix would be a convention only: each graded
submission gets a memcached instance of its own instead (``labkit.grading.grader``); the
prefix stays, so that notebooks read the same inside and outside the grader.
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass, field, replace
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
class RegionsNamespace:
    """One submission's keyspace in each regional cluster, a role of its own in each, the links.

    The keyspace and role have the same name (and password) in every region. ``links`` are
    ``(region, host, port)``: the Toxiproxy links a client in ``CLIENT_REGION`` uses, the
    only addresses the sandbox forwards (the clusters themselves stay out of its reach).
    """

    keyspace: str
    password: str = field(repr=False)
    links: tuple[tuple[str, str, int], ...]

    @property
    def user(self) -> str:
        return self.keyspace

    def env(self) -> dict[str, str]:
        """What a graded kernel receives to reach its keyspaces (``student.workspace``)."""
        return {"LABKIT_GRADE_REGIONS_LINKS": ",".join(f"{r}={h}:{p}" for r, h, p in self.links),
                "LABKIT_GRADE_REGIONS_USER": self.user,
                "LABKIT_GRADE_REGIONS_PASSWORD": self.password,
                "LABKIT_GRADE_REGIONS_KEYSPACE": self.keyspace}


@dataclass(frozen=True)
class Namespace:
    """One submission's database, role (and vhost), and the environment that carries them."""

    name: str
    password: str
    leader: tuple[str, int]
    follower: tuple[str, int]
    rabbitmq: tuple[str, int] | None = None
    cassandra: CassandraNamespace | None = None
    regions: RegionsNamespace | None = None

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
        if self.regions:
            for region, host, port in self.regions.links:
                out[f"region-{region}"] = (host, port)
        return out

    def env(self, cache: tuple[str, int]) -> dict[str, str]:
        """The only credentials a graded kernel receives (``cache``: its memcached)."""
        return {"LABKIT_GRADE": "1", "LABKIT_GRADE_DSN": self.dsn(),
                "LABKIT_GRADE_FOLLOWER_DSN": self.dsn(follower=True),
                "LABKIT_GRADE_CACHE_SERVERS": f"{cache[0]}:{cache[1]}",
                "LABKIT_GRADE_CACHE_PREFIX": self.prefix,
                "LABKIT_GRADE_BROKER_URL": self.broker_url(),
                **(self.cassandra.env() if self.cassandra else {}),
                **(self.regions.env() if self.regions else {})}


def create(lab: Any, tag: str = "g", *, rabbitmq: bool = False, cassandra: bool = False,
           regions: bool = False) -> Namespace:
    """Create a role and a database it owns (replicated to the followers), a vhost, keyspaces.

    ``rabbitmq``, ``cassandra`` and ``regions`` ask for a vhost, a keyspace on the ring
    (``create_cassandra``) and a keyspace in each regional cluster (``create_regions``).
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
    ns = Namespace(name, password, (lab.leader.host, lab.leader.port),
                   (follower.host, follower.port), mq)
    try:
        if cassandra:
            ns = replace(ns, cassandra=create_cassandra(lab, name))
        if regions:
            ns = replace(ns, regions=create_regions(lab, name))
    except BaseException:
        drop(lab, ns)
        raise
    return ns


def drop(lab: Any, ns: Namespace) -> None:
    """Drop the namespace's database, role, vhost and keyspace (idempotent)."""
    lab.postgres.drop_database(ns.name)
    lab.leader.execute(f'DROP ROLE IF EXISTS "{ns.name}"')
    if ns.rabbitmq and lab.rabbitmq:
        lab.rabbitmq.delete_vhost(ns.name, user=ns.name)
    if ns.cassandra:
        drop_cassandra(lab, ns.cassandra)
    if ns.regions:
        drop_regions(lab, ns.regions)


# --------------------------------------------------------------------------------- Cassandra

CASSANDRA_FIX = ("this assignment uses the Cassandra ring (metadata labkit.uses) and the lab "
                 "runs none: start the ring with `labkit up --cassandra ring` (or `labkit "
                 "grade --cassandra ring ...`)")


def create_cassandra(lab: Any, name: str) -> CassandraNamespace:
    """Create keyspace ``name`` (NetworkTopologyStrategy, RF = nodes up to 3) and a role for it.

    The role logs in with a fresh password and holds ``CASSANDRA_GRANTS`` on that keyspace
    only. The lab's superuser (the grader's credentials) makes both.
    """
    from labkit.services.cassandra import wait_for_schema
    cas = _topology(lab, "ring", CASSANDRA_FIX)
    cluster = cas.region(cas.regions[0])
    password = new_password()
    rf = min(3, len(cluster.nodes))
    with _session(cas) as session:
        _keyspace_and_role(session, name, password, {cluster.dc: rf})
        wait_for_schema(session)
    return CassandraNamespace(name, password, tuple(tuple(p) for p in cluster.contact_points), rf)


def drop_cassandra(lab: Any, ns: CassandraNamespace) -> None:
    """Drop the keyspace and its role (idempotent)."""
    with _session(_topology(lab, "ring", CASSANDRA_FIX)) as session:
        _drop_keyspace_and_role(session, ns.keyspace)


@contextlib.contextmanager
def _session(cas: Any, region: str | None = None) -> Any:
    """A session of the lab's superuser on ``region`` of topology ``cas``, closed afterwards."""
    session = cas.connect(region=region)
    try:
        yield session
    finally:
        session.cluster.shutdown()


def _keyspace_and_role(session: Any, name: str, password: str, dcs: dict[str, int]) -> None:
    """Keyspace ``name`` ({dc: replicas}) and login role ``name`` granted it alone.

    All or nothing: when a step fails, what the earlier ones made is dropped again.
    """
    from labkit.services.cassandra import create_keyspace
    try:
        create_keyspace(session, name, dcs, if_not_exists=False)
        # new_password never contains a quote; the password is bound all the same.
        session.execute(f"CREATE ROLE {name} WITH LOGIN = true AND SUPERUSER = false "
                        "AND PASSWORD = %s", (password,))
        for permission in CASSANDRA_GRANTS:
            session.execute(f"GRANT {permission} ON KEYSPACE {name} TO {name}")
    except BaseException:
        with contextlib.suppress(Exception):
            _drop_keyspace_and_role(session, name)
        raise


def _drop_keyspace_and_role(session: Any, name: str) -> None:
    """Drop keyspace and role ``name`` if there."""
    from labkit.services.cassandra import DDL_TIMEOUT_S
    session.execute(f"DROP KEYSPACE IF EXISTS {name}", timeout=DDL_TIMEOUT_S)
    session.execute(f"DROP ROLE IF EXISTS {name}")


def _topology(lab: Any, name: str, fix: str) -> Any:
    """The lab's Cassandra topology ``name`` (a lab may run the ring and the regions at once)."""
    running = getattr(lab, "cassandra_topologies", None) or {}  # None: no Cassandra at all
    if name in running:
        return running[name]
    if name == "ring" and len(running) == 1 and "regions" not in running:
        return next(iter(running.values()))  # a lab that runs one cluster (single): that one
    raise RuntimeError(fix)


# ------------------------------------------------------------------------- the regions

REGIONS_FIX = ("this assignment uses the regional clusters (metadata labkit.uses names "
               "\"regions\") and the lab runs none: start them with `labkit up --cassandra "
               "regions` (or `labkit grade --cassandra regions ...`)")
#: The region a graded submission runs in: it reaches ``us`` directly and ``eu`` across the
#: link's delay, as the placement service's mover does (``PlacementService.for_lab``).
CLIENT_REGION = "us"


def create_regions(lab: Any, name: str) -> RegionsNamespace:
    """Keyspace ``name`` (RF 1) and a role granted it alone, in each regional cluster.

    One password for the role in every region; the lab's superuser makes them. The links
    are the lab's (``lab.regions``) from ``CLIENT_REGION``: their delay is the lesson.
    """
    cas = _topology(lab, "regions", REGIONS_FIX)
    net = lab.regions
    password = new_password()
    made: list[str] = []
    try:
        for region in cas.regions:
            with _session(cas, region) as session:
                _keyspace_and_role(session, name, password, {cas.region(region).dc: 1})
            made.append(region)
    except BaseException:  # all regions or none: the earlier regions' keyspaces go again
        for region in made:
            with contextlib.suppress(Exception), _session(cas, region) as session:
                _drop_keyspace_and_role(session, name)
        raise
    links = tuple((r, *net.address(CLIENT_REGION, r)) for r in cas.regions)
    return RegionsNamespace(name, password, links)


def drop_regions(lab: Any, ns: RegionsNamespace) -> None:
    """Drop the keyspace and role in every regional cluster (idempotent)."""
    cas = _topology(lab, "regions", REGIONS_FIX)
    for region in cas.regions:
        with _session(cas, region) as session:
            _drop_keyspace_and_role(session, ns.keyspace)
