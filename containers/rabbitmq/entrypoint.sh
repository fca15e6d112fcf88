#!/bin/sh
# The docker provider's RabbitMQ (see Dockerfile): write the lab's config, run the node.
set -eu
umask 077
printf '%s\n' "$LABKIT_RABBITMQ_CONF" > "$HOME/rabbitmq.conf"
exec /usr/lib/rabbitmq/bin/rabbitmq-server
