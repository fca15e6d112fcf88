"""The one error type of the Cassandra service."""

from __future__ import annotations

from labkit._proc import ServiceError

__all__ = ["CassandraError"]


class CassandraError(ServiceError):
    """Cassandra could not be resolved, started, reached or stopped; the message says what to do."""

