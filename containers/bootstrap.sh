#!/usr/bin/env bash
# Prepares a machine for the lab, idempotently: the servers' system packages (only those
# missing) and a virtualenv in .venv with labkit installed. Both README commands start here.
#   Debian/Ubuntu: apt-get (with sudo when not root).  macOS: Homebrew.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[bootstrap] %s\n' "$*"; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
need_sudo() {
  if [ -n "$SUDO" ] && ! command -v sudo >/dev/null; then
    echo "Installing system packages needs root: run this as root, or install sudo." >&2
    exit 1
  fi
}

if [ "$(uname -s)" = "Darwin" ]; then
  command -v brew >/dev/null || { echo "Install Homebrew first (https://brew.sh), then run this again." >&2; exit 1; }
  for f in postgresql@15 memcached rabbitmq openjdk@17 maven haproxy toxiproxy python@3.11; do
    brew list --versions "$f" >/dev/null 2>&1 || { log "brew install $f"; brew install "$f"; }
  done
  PYTHON="${PYTHON:-$(brew --prefix python@3.11)/bin/python3.11}"
else
  need=()
  [ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)  # contrib (pg_stat_statements) is part of it
  command -v memcached >/dev/null || need+=(memcached)
  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
  command -v epmd >/dev/null || need+=(erlang-base)
  command -v java >/dev/null || need+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || need+=(maven)
  # The canary router of notebook 13 (weights changed at run time through its stats socket).
  [ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null || need+=(haproxy)
  command -v git >/dev/null || need+=(git)
  # `labkit grade` confines each submission: bubblewrap (namespaces) and socat (forwarders to
  # its own servers through the sandbox's loopback-only network).
  command -v bwrap >/dev/null || need+=(bubblewrap)
  command -v socat >/dev/null || need+=(socat)
  # The browser test (tests/test_browser.py): headless Chromium, driven through Playwright.
  command -v chromium >/dev/null || need+=(chromium)
  command -v python3 >/dev/null || need+=(python3)
  if command -v python3 >/dev/null && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    need+=(python3-venv)
  fi
  # A C compiler and Python's headers build labkit/speedups (Cython); without them the
  # pure-Python twins run (slower), and `labkit doctor` says so.
  command -v gcc >/dev/null || need+=(gcc)
  if command -v python3 >/dev/null && ! python3 -c 'import os, sysconfig; assert os.path.exists(
      os.path.join(sysconfig.get_paths()["include"], "Python.h"))' 2>/dev/null; then
    need+=(python3-dev)
  fi
  # The docker provider (CI, or LABKIT_DOCKER=1): Debian's engine, and debootstrap for the base
  # image where no registry answers (containers/docker-engine.sh starts the engine, below).
  if [ "${CI:-}" = "true" ] || [ "${LABKIT_DOCKER:-}" = "1" ]; then
    command -v dockerd >/dev/null || need+=(docker.io)
    command -v debootstrap >/dev/null || need+=(debootstrap)
  fi
  if [ ${#need[@]} -gt 0 ]; then
    log "installing Debian packages: ${need[*]}"
    need_sudo
    # Keep the packages' own system services from starting: the lab runs its own servers on
    # free ports, so a system PostgreSQL/RabbitMQ/memcached would only take memory and ports.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
      $SUDO chmod +x /usr/sbin/policy-rc.d
      # Removed however this script ends, so a failed install leaves no policy behind.
      trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    $SUDO apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
  fi
  PYTHON="${PYTHON:-python3}"
  # Toxiproxy puts distance between the regions of notebook 10 (this kernel has no netem).
  # Debian has no package: build the pinned release with Go (its go.mod asks for Go 1.19,
  # which is Debian bookworm's golang-go) and install the binary on PATH.
  if ! command -v toxiproxy-server >/dev/null; then
    GO=$(command -v go || true)
    [ -n "$GO" ] || { [ -x /usr/local/go/bin/go ] && GO=/usr/local/go/bin/go; } || true
    if [ -z "$GO" ]; then
      log "installing Debian package golang-go (to build Toxiproxy)"
      need_sudo
      $SUDO apt-get update -q
      $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends golang-go
      GO=$(command -v go)
    fi
    gotmp=$(mktemp -d)
    log "building Toxiproxy v2.8.0 with $("$GO" version)"
    GOPATH="$gotmp/gopath" GOBIN="$gotmp/bin" GOFLAGS=-modcacherw GOTOOLCHAIN=local \
      "$GO" install github.com/Shopify/toxiproxy/v2/cmd/server@v2.8.0
    $SUDO install -m 0755 "$gotmp/bin/server" /usr/local/bin/toxiproxy-server
    rm -rf "$gotmp"
  fi
fi

"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "labkit needs Python >= 3.10"'
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
# Install the locked versions (containers/requirements.lock, the versions CI tests; regenerate
# it with `bash containers/lock.sh`), then labkit itself, editable, without resolving anything
# again. Only when pyproject.toml or the lock changed. The installer is uv (the version that
# writes the lock, from PyPI, into .venv): it installs the lock in about 35 s where pip took
# two minutes, and checks every hash as pip does.
lock=containers/requirements.lock
stamp=.venv/.labkit-installed
# The stamp is a hash of what the install depends on: pyproject, the lock, and the compiled
# kernels' sources (an edited .pyx/.c reinstalls, so the extension is rebuilt in place).
want=$(cat pyproject.toml "$lock" setup.py $(find labkit/speedups -name '*.pyx' -o -name '*.[ch]' ! -name '_*' | sort) \
       | .venv/bin/python -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing labkit and its locked dependencies into .venv"
  uv_version=$(sed -n 's/^UV_VERSION=//p' containers/lock.sh)
  .venv/bin/python -m pip install -q --disable-pip-version-check "uv==$uv_version"
  .venv/bin/uv pip install -q --python .venv/bin/python --require-hashes -r "$lock"
  .venv/bin/uv pip install -q --python .venv/bin/python --no-deps -e .
  echo "$want" > "$stamp"
fi
# Cassandra runs from Maven Central's jars; resolve them now rather than at the first `up`.
log "Cassandra jars: $(bash containers/cassandra/resolve.sh)"
# The docker provider (CI, or LABKIT_DOCKER=1): a dockerd only when no engine answers (its data
# under /var/lib/labkit/docker, so images stay cached between runs on this machine), then the
# base image (debootstrap when it is missing) and the lab's images, each built once.
if [ "${CI:-}" = "true" ] || [ "${LABKIT_DOCKER:-}" = "1" ]; then
  bash containers/docker-engine.sh
  .venv/bin/labkit images build
fi
log "ready: $(.venv/bin/labkit doctor >/dev/null 2>&1 && echo 'all servers installed' || echo 'run .venv/bin/labkit doctor')"
