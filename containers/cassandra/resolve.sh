#!/bin/sh
# Resolve Apache Cassandra (cassandra-all + runtime dependencies) from Maven Central into
#   ${LABKIT_CACHE_DIR:-/var/cache/labkit (root) or ~/.cache/labkit}/cassandra/<version>/lib
# Idempotent: a .resolved marker next to lib/ makes later runs return at once.
# The version comes from pom.xml (<cassandra.version>), the same file and the same
# Maven command that labkit.services.cassandra.resolve_jars() uses.
#
# Usage: containers/cassandra/resolve.sh [cache_dir]      (prints the lib dir)
# Extra Maven flags (e.g. -s settings.xml, -Dmaven.repo.local=...) via $MAVEN_ARGS.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
pom="$here/pom.xml"
# The same default as LabConfig.cache_dir: /var/cache/labkit for root, else ~/.cache/labkit.
if [ "$(id -u)" -eq 0 ]; then default_cache=/var/cache/labkit; else default_cache=${XDG_CACHE_HOME:-$HOME/.cache}/labkit; fi
cache_dir=${1:-${LABKIT_CACHE_DIR:-$default_cache}}
version=$(sed -n 's:.*<cassandra.version>\(.*\)</cassandra.version>.*:\1:p' "$pom")
[ -n "$version" ] || { echo "resolve.sh: no <cassandra.version> in $pom" >&2; exit 1; }
base="$cache_dir/cassandra/$version"
lib="$base/lib"

if [ -f "$base/.resolved" ]; then
    echo "$lib"
    exit 0
fi
if ! command -v mvn >/dev/null 2>&1; then
    echo "resolve.sh: mvn not found; install it with \`apt-get install maven\` or \`brew install maven\`, or run \`labkit doctor\`." >&2
    exit 1
fi

mkdir -p "$base"
tmp=$(mktemp -d "$base/lib.XXXXXX")
log="$base/mvn.log"
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2086  # MAVEN_ARGS is a list of flags
if ! mvn -B -q -f "$pom" ${MAVEN_ARGS:-} dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$log" 2>&1; then
    echo "resolve.sh: resolving Cassandra $version with Maven failed; check access to Maven Central." >&2
    echo "--- last lines of $log ---" >&2
    tail -n 20 "$log" >&2
    exit 1
fi
ls "$tmp"/cassandra-all-"$version".jar >/dev/null
chmod 755 "$tmp"
rm -rf "$lib"
mv "$tmp" "$lib"
trap - EXIT
printf '%s\n%s jars\n' "$version" "$(ls "$lib" | wc -l)" >"$base/.resolved"
echo "$lib"
