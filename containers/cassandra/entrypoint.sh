#!/bin/sh
# The docker provider's Cassandra node (see Dockerfile): write the files the lab rendered for
# this node, gossip on this container's address on the lab's network, then run the JVM
# command line the lab gives as the container's command.
set -eu
umask 077
d=/var/lib/cassandra
for sub in conf data commitlog saved_caches hints cdc_raw system logs tmp fql triggers; do
    mkdir -p "$d/$sub"
done
address=$(hostname -i | cut -d' ' -f1)
printf '%s\n' "$LABKIT_CASSANDRA_YAML" | sed "s/@CONTAINER_ADDRESS@/$address/" > "$d/conf/cassandra.yaml"
printf '%s' "$LABKIT_CASSANDRA_RACKDC" > "$d/conf/cassandra-rackdc.properties"
# JMX's login (local to the container; nodetool reads the password file with -pwf).
printf '%s\n' "$LABKIT_JMX_LOGIN" > "$d/conf/jmxremote.password"
printf '%s readwrite\n' "${LABKIT_JMX_LOGIN%% *}" > "$d/conf/jmxremote.access"
cp /etc/labkit/logback.xml /etc/labkit/logback-tools.xml "$d/conf/"
# The seeds are the other nodes' containers, by name: a cluster's containers start together,
# so wait (at most 30 s) until each name resolves on the lab's network; one that does not
# (its container stopped) is skipped by Cassandra, and gossip finds it when it comes back.
for seed in $LABKIT_SEED_HOSTS; do
    i=0
    until getent hosts "$seed" >/dev/null 2>&1 || [ "$i" -ge 150 ]; do
        sleep 0.2
        i=$((i + 1))
    done
done
unset LABKIT_CASSANDRA_YAML LABKIT_JMX_LOGIN
export HOME="$d/tmp"
exec "$@"
