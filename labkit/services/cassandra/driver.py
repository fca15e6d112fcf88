"""The cassandra-driver side: one factory for driver clusters, and reading its errors."""

from __future__ import annotations

from typing import Any, Sequence

from labkit.services.cassandra.credentials import CassandraCredentials

__all__ = ["READY_QUERY", "driver_cluster", "refused"]

READY_QUERY = "SELECT release_version FROM system.local"

def _connection_class():
    """The driver reactor to use: libev if built, else asyncio (asyncore is gone in Python 3.12)."""
    try:
        from cassandra.io.libevreactor import LibevConnection

        return LibevConnection
    except Exception:  # ImportError or a libev build without the shared library
        from cassandra.io.asyncioreactor import AsyncioConnection

        return AsyncioConnection


def driver_cluster(
    contact_points: Sequence[tuple[str, int]],
    *,
    credentials: CassandraCredentials,
    only: str | None = None,
    connect_timeout_s: float = 5,
    request_timeout_s: float = 10,
    **kwargs: Any,
):
    """A ``cassandra.cluster.Cluster`` for these contact points, logging in with ``credentials``.

    ``only="127.0.0.3"`` sends every request to that node alone (a
    ``WhiteListRoundRobinPolicy``), to check one replica by itself.

        >>> with Cassandra(Path("/tmp/lab")) as cas:
        ...     cluster = driver_cluster(cas.contact_points, credentials=cas.credentials)
        ...     session = cluster.connect()
        ...     cluster.shutdown()
    """
    from cassandra import ProtocolVersion
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import (
        DCAwareRoundRobinPolicy,
        TokenAwarePolicy,
        WhiteListRoundRobinPolicy,
    )

    policy = WhiteListRoundRobinPolicy([only]) if only else TokenAwarePolicy(DCAwareRoundRobinPolicy())
    profile = ExecutionProfile(load_balancing_policy=policy, request_timeout=request_timeout_s)
    return Cluster(
        contact_points=list(contact_points),
        protocol_version=ProtocolVersion.V5,
        connection_class=_connection_class(),
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=connect_timeout_s,
        control_connection_timeout=connect_timeout_s,
        auth_provider=credentials.auth_provider(),
        **kwargs,
    )


def refused(error: Exception) -> bool:
    """True when the driver's error is the server refusing the user name or password."""
    from cassandra import AuthenticationFailed
    from cassandra.cluster import NoHostAvailable

    if isinstance(error, NoHostAvailable):
        return any(isinstance(e, AuthenticationFailed) and "incorrect" in str(e)
                   for e in error.errors.values())
    return isinstance(error, AuthenticationFailed) and "incorrect" in str(error)

