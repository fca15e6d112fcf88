"""Per-submission namespaces: a database owned by a login role of its own, and a cache prefix.

The grader (which holds the lab's admin credentials) creates a namespace before a submission
runs and drops it afterwards; the submission only ever sees the namespace's own role. The
role is not a superuser and cannot create roles or databases, so it cannot drop another
namespace's database (only an owner or a superuser may), and ``REVOKE CONNECT ... FROM
PUBLIC`` keeps other roles out of this one. RabbitMQ gets no namespace: no exercise uses it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from psycopg.conninfo import make_conninfo

from labkit.backend.cache import delete_prefix


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
