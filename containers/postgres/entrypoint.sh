#!/bin/sh
# The docker provider's PostgreSQL (see Dockerfile). Made once, at the container's first start;
# a restarted container (`docker stop`/`start`) keeps its data and only runs postgres again.
#   LABKIT_PG_PASSWORD  the lab's generated password (the superuser's, and replication's)
#   LABKIT_LEADER_HOST  set for a follower: the leader's name on the lab's network
#   LABKIT_NAME         a follower's name (its replication slot and application_name)
set -eu
BIN=/usr/lib/postgresql/15/bin
PGDATA=/var/lib/postgresql/data
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -n "${LABKIT_LEADER_HOST:-}" ]; then
    PGPASSWORD="$LABKIT_PG_PASSWORD" "$BIN/pg_basebackup" -h "$LABKIT_LEADER_HOST" -p 5432 \
      -U postgres -D "$PGDATA" -X stream -c fast -C -S "$LABKIT_NAME" --no-sync
    touch "$PGDATA/standby.signal"
    cat > "$PGDATA/labkit-runtime.conf" <<CONF
listen_addresses = '*'
port = 5432
primary_conninfo = 'host=$LABKIT_LEADER_HOST port=5432 user=postgres password=$LABKIT_PG_PASSWORD application_name=$LABKIT_NAME'
primary_slot_name = '$LABKIT_NAME'
CONF
  else
    printf '%s\n' "$LABKIT_PG_PASSWORD" > /tmp/pwfile
    "$BIN/initdb" -D "$PGDATA" -U postgres --pwfile=/tmp/pwfile --auth=scram-sha-256 \
      -E UTF8 --locale=C --no-sync >/dev/null
    rm -f /tmp/pwfile
    cp /etc/labkit/postgresql.conf "$PGDATA/labkit.conf"
    cp /etc/labkit/pg_hba.docker.conf "$PGDATA/pg_hba.conf"
    printf "\ninclude 'labkit.conf'\ninclude_if_exists 'labkit-runtime.conf'\n" >> "$PGDATA/postgresql.conf"
    printf "listen_addresses = '*'\nport = 5432\n" > "$PGDATA/labkit-runtime.conf"
  fi
  chmod 0600 "$PGDATA/labkit-runtime.conf"
fi
exec "$BIN/postgres" -D "$PGDATA"
