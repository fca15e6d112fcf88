"""The cassandra-driver side: one factory for driver clusters, and reading its errors."""

from __future__ import annotations

from typing import Any, Sequence

from labkit.services.cassandra.credentials import CassandraCredentials

__all__ = ["DDL_TIMEOUT_S", "READY_QUERY", "create_keyspace", "driver_cluster", "refused",
           "wait_for_schema"]

READY_QUERY = "SELECT release_version FROM system.local"

# Schema changes wait for agreement across the ring: with three JVMs on two loaded cores that
# took longer than the driver's 10 s request timeout (a CREATE TABLE failed with
# 'Connection defunct by heartbeat' at load 18): slow there, not broken.
DDL_TIMEOUT_S = 60.0

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


def wait_for_schema(session: Any, *, timeout_s: float = DDL_TIMEOUT_S) -> float:
    """Return once every node of the session's cluster reports one schema version; the seconds waited.

    The driver's own wait after a DDL statement gives up silently after 10 s (and skips nodes
    it holds down); a statement prepared on a node that has not yet applied the change then
    fails with "table ... does not exist". This asks the coordinator for its own version and
    every peer's, until they are one, and raises a ServiceError naming the fix after
    ``timeout_s``.
    """
    from labkit._proc import wait_ready

    def agreed() -> bool:
        local = session.execute("SELECT schema_version FROM system.local").one()
        peers = session.execute("SELECT schema_version FROM system.peers").all()
        return len({local.schema_version, *(p.schema_version for p in peers)}) == 1

    return wait_ready("Cassandra schema agreement (every node on one schema version; "
                      "`nodetool describecluster` shows which node lags)", agreed,
                      timeout_s=timeout_s)


def create_keyspace(session: Any, name: str, replicas: dict[str, int], *,
                    if_not_exists: bool = True) -> None:
    """CREATE KEYSPACE ``name`` with NetworkTopologyStrategy: ``replicas`` is {dc: copies}.

    ``if_not_exists=False`` fails when it exists (a grading namespace must be new). The
    statement waits up to DDL_TIMEOUT_S: schema changes are slow on loaded cores.
    """
    replication = ", ".join(f"'{dc}': {int(n)}" for dc, n in replicas.items())
    session.execute(f"CREATE KEYSPACE {'IF NOT EXISTS ' if if_not_exists else ''}{name} WITH "
                    f"replication = {{'class': 'NetworkTopologyStrategy', {replication}}}",
                    timeout=DDL_TIMEOUT_S)
