"""Which Java runs Cassandra: found on PATH, and 17 or newer."""

from __future__ import annotations

import re
import shutil
import subprocess

from labkit.services.cassandra.errors import CassandraError

__all__ = ["JAVA_FIX", "check_java"]

JAVA_FIX = (
    "install it with `apt-get install openjdk-17-jre-headless` or "
    "`brew install openjdk@17`, or run `labkit doctor`"
)


def check_java(java: str = "java") -> tuple[str, int]:
    """Return (path, major version) of ``java``; raise CassandraError unless it is Java 17+.

    >>> check_java()[1] >= 17
    True
    """
    path = shutil.which(java)
    if path is None:
        raise CassandraError(f"Java not found (`{java}`); Cassandra 5.0 needs Java 17: {JAVA_FIX}.")
    try:
        out = subprocess.run(
            [path, "-version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CassandraError(f"`{path} -version` failed ({e}); Cassandra 5.0 needs Java 17: {JAVA_FIX}.") from None
    text = out.stderr + out.stdout
    m = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if m is None:
        raise CassandraError(
            f"could not read a version from `{path} -version` ({text.strip()[:200]!r}); "
            f"Cassandra 5.0 needs Java 17: {JAVA_FIX}."
        )
    major = int(m.group(1))
    if major == 1 and m.group(2):  # "1.8.0_392" is Java 8
        major = int(m.group(2))
    if major < 17:
        raise CassandraError(
            f"{path} is Java {major}; Cassandra 5.0 in labkit needs Java 17: {JAVA_FIX}."
        )
    return path, major

