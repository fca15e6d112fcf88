"""Per-submission namespaces on the lab's shared servers: a database and role, a RabbitMQ vhost.

The grader (which holds the lab's admin credentials) creates a namespace before a submission
runs and drops it afterwards; the submission only ever sees the namespace's own credentials.
The PostgreSQL role is not a superuser and cannot create roles or databases, so it cannot
drop another namespace's database (only an owner or a superuser may), and ``REVOKE CONNECT
... FROM PUBLIC`` keeps other roles out of this one. When the assignment uses RabbitMQ, the
namespace gets a vhost of its own and a user whose permissions cover that vhost only.

Memcached has no access control, so a key prefix would be a convention only: each graded
submission gets a memcached instance of its own instead (``labkit.grading.grader``); the
prefix stays, so that notebooks read the same inside and outside the grader.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from psycopg.conninfo import make_conninfo

from labkit._proc import new_password


@dataclass(frozen=True)
class Namespace:
    """One submission's database, role (and vhost), and the environment that carries them."""

    name: str
    password: str
    leader: tuple[str, int]
    follower: tuple[str, int]
    rabbitmq: tuple[str, int] | None = None

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
        return out

    def env(self, cache: tuple[str, int]) -> dict[str, str]:
        """The only credentials a graded kernel receives (``cache``: its memcached)."""
        return {"LABKIT_GRADE": "1", "LABKIT_GRADE_DSN": self.dsn(),
                "LABKIT_GRADE_FOLLOWER_DSN": self.dsn(follower=True),
                "LABKIT_GRADE_CACHE_SERVERS": f"{cache[0]}:{cache[1]}",
                "LABKIT_GRADE_CACHE_PREFIX": self.prefix,
                "LABKIT_GRADE_BROKER_URL": self.broker_url()}


def create(lab: Any, tag: str = "g", *, rabbitmq: bool = False) -> Namespace:
    """Create a role and a database it owns (replicated to the followers), and a vhost."""
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
    return Namespace(name, password, (lab.leader.host, lab.leader.port),
                     (follower.host, follower.port), mq)


def drop(lab: Any, ns: Namespace) -> None:
    """Drop the namespace's database, role and vhost (idempotent)."""
    lab.postgres.drop_database(ns.name)
    lab.leader.execute(f'DROP ROLE IF EXISTS "{ns.name}"')
    if ns.rabbitmq and lab.rabbitmq:
        lab.rabbitmq.delete_vhost(ns.name, user=ns.name)
