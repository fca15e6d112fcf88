"""One module per server, all of the same shape: typed defaults, start(), stop(), a context
manager, one readiness check over the real protocol, and typed accessors."""

from labkit.services.memcached import Memcached
from labkit.services.postgres import Lag, Postgres, PostgresServer
from labkit.services.rabbitmq import RabbitMQ

__all__ = ["Memcached", "Postgres", "PostgresServer", "RabbitMQ", "Lag"]
