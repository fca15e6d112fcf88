"""The registry: every kind of service the lab can run, in the order it starts, shows and stops.

A new kind (Toxiproxy, the placement service, the backend's processes) is a module here
with a ``ServiceKind`` subclass (``base.py`` says what it contributes) and one line below.
"""

from __future__ import annotations

from labkit.lab.kinds.base import BuildContext, ServiceKind
from labkit.lab.kinds.cassandra import CassandraKind
from labkit.lab.kinds.memcached import MemcachedKind
from labkit.lab.kinds.postgres import PostgresKind
from labkit.lab.kinds.rabbitmq import RabbitMQKind
from labkit.lab.kinds.toxiproxy import ToxiproxyKind

KINDS: tuple[ServiceKind, ...] = (PostgresKind(), MemcachedKind(), RabbitMQKind(),
                                  CassandraKind(), ToxiproxyKind())
BY_NAME: dict[str, ServiceKind] = {k.name: k for k in KINDS}
#: ``lab.<attribute>`` -> (kind, its method): ``lab.postgres``, ``lab.cassandra_topologies``...
ATTRIBUTES: dict[str, tuple[ServiceKind, str]] = {
    **{k.name: (k, "access") for k in KINDS},
    **{a: (k, a) for k in KINDS for a in k.accessors}}

__all__ = ["ATTRIBUTES", "BY_NAME", "KINDS", "BuildContext", "ServiceKind"]
