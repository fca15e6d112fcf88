"""Apache Cassandra 5.0, run natively from jars resolved from Maven Central.

One JVM per node (:class:`CassandraNode`), nodes grouped into a ring
(:class:`CassandraCluster`), rings grouped by topology (:class:`Cassandra`):

=========  ==========================================================
topology   what runs
=========  ==========================================================
single     one cluster, one node, dc ``us``
ring       one cluster, three nodes in dc ``us`` (RF=3 experiments)
regions    two clusters, ``us`` and ``eu``, different cluster names and
           disjoint seeds so they never gossip (Akkio, notebook 10)
=========  ==========================================================

Each node listens on its own loopback address 127.0.0.N (Linux routes all of
127/8 to ``lo``) with its own free native, storage and JMX ports; each topology
has its own block of addresses (ring 127.0.0.1-3, regions from .11, single .21)
and data directory, so one lab runs several topologies side by side. Tokens are
fixed and balanced (``num_tokens: 1``), nobody bootstraps, so all nodes of a
ring start at the same time.

The jar set is described by ``containers/cassandra/pom.xml`` (the one place
that names the Cassandra version) and resolved once per cache directory by
:func:`resolve_jars` or ``containers/cassandra/resolve.sh``.

One concern per module, every name re-exported here:

==============  ============================================================
module          holds
==============  ============================================================
errors          :class:`CassandraError`
jars            the pom's version, :func:`resolve_jars` (Maven), staging
java            :func:`check_java` (Java 17+)
driver          :func:`driver_cluster`, the one driver factory
credentials     :class:`CassandraCredentials`, files that hold secrets
node            :class:`CassandraNode`: one JVM, its fault controls
cluster         :class:`CassandraCluster`: one ring, secured on first start
topology        :class:`Cassandra`: the clusters of a topology
==============  ============================================================

Every cluster authenticates (PasswordAuthenticator, CassandraAuthorizer): on its
first start the lab creates its own superuser with the lab's generated password
(:class:`CassandraCredentials`) and drops Cassandra's default ``cassandra`` role;
``system_auth`` is replicated to every node, so a login works with nodes down.
JMX listens on loopback and asks for the lab's JMX password (nodetool sends it
from a password file, not on its command line).
"""

from labkit.services.cassandra.cluster import CassandraCluster
from labkit.services.cassandra.credentials import DEFAULT_SUPERUSER, CassandraCredentials
from labkit.services.cassandra.driver import (DDL_TIMEOUT_S, READY_QUERY, create_keyspace,
                                              driver_cluster, wait_for_schema)
from labkit.services.cassandra.errors import CassandraError
from labkit.services.cassandra.jars import MAVEN_FIX, cassandra_version, jar_dir, resolve_jars
from labkit.services.cassandra.java import JAVA_FIX, check_java
from labkit.services.cassandra.node import CassandraNode
from labkit.services.cassandra.topology import FIRST_HOST, TOPOLOGIES, Cassandra

__all__ = [
    "DDL_TIMEOUT_S", "create_keyspace", "wait_for_schema",
    "Cassandra",
    "CassandraCluster",
    "CassandraNode",
    "CassandraCredentials",
    "CassandraError",
    "DEFAULT_SUPERUSER",
    "FIRST_HOST",
    "JAVA_FIX",
    "MAVEN_FIX",
    "READY_QUERY",
    "TOPOLOGIES",
    "cassandra_version",
    "check_java",
    "driver_cluster",
    "jar_dir",
    "resolve_jars",
]
