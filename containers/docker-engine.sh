#!/usr/bin/env bash
# A Docker engine for the docker provider, idempotently (bootstrap.sh runs this in CI, or when
# LABKIT_DOCKER=1, after installing Debian's docker.io): a dockerd when no engine answers, its
# data under /var/lib/labkit/docker (LABKIT_DOCKER_DATA) so the images `labkit images build`
# makes stay cached between runs on this machine.
# An engine that already answers (the machine's own, or DOCKER_HOST's) is used as it is.
set -euo pipefail
log() { printf '[docker-engine] %s\n' "$*"; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

command -v dockerd >/dev/null || {
  echo "dockerd is not installed: apt-get install docker.io (LABKIT_DOCKER=1 bash containers/bootstrap.sh does)" >&2
  exit 1
}
answers() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }
if answers; then
  log "a Docker engine answers ($(docker version --format '{{.Server.Version}}')): using it"
  exit 0
fi
data=${LABKIT_DOCKER_DATA:-/var/lib/labkit/docker}
$SUDO mkdir -p "$data"
log "starting dockerd (data in $data, log in $data.log)"
# setsid: the engine outlives this script (and CI's shell); its pid file is in $data.
$SUDO setsid dockerd --data-root "$data" --pidfile "$data/dockerd.pid" \
  --storage-driver overlay2 >>"$data.log" 2>&1 < /dev/null &
for _ in $(seq 1 60); do
  answers && { log "dockerd $(docker version --format '{{.Server.Version}}') answers"; exit 0; }
  sleep 1
done
echo "dockerd did not answer within 60 s: see $data.log" >&2
exit 1
