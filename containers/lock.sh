#!/usr/bin/env bash
# Regenerates containers/requirements.lock from pyproject.toml: the exact versions (with their
# hashes) of every dependency and every extra, that containers/bootstrap.sh installs and CI tests.
#
#   bash containers/lock.sh              # after changing pyproject's dependencies: keeps every
#                                        # pin it can, resolves what changed
#   bash containers/lock.sh --upgrade    # move every pin to the newest version that fits
#
# The lock is universal (one file for Python 3.10-3.13 on Linux and macOS: platform-specific
# packages carry markers) and takes the fewest versions of each package across those Pythons,
# so CI's Python tests the versions every other machine installs. It is written by uv (from
# PyPI, pinned below, installed into a throwaway venv) and installed by plain pip.
# Extra arguments go to `uv pip compile`.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
PYTHON="${PYTHON:-python3}"
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
"$PYTHON" -m venv "$tools"
"$tools/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
"$tools/bin/uv" pip compile pyproject.toml \
  --all-extras --universal --python-version 3.10 --fork-strategy fewest --generate-hashes \
  --custom-compile-command "bash containers/lock.sh" --quiet \
  -o containers/requirements.lock "$@"
echo "wrote containers/requirements.lock ($(grep -c '==' containers/requirements.lock) packages)"
