"""Cassandra's jars: the version the pom names, resolved once per cache directory by Maven.

The jar set is described by ``containers/cassandra/pom.xml`` (the one place that names the
Cassandra version) and resolved once per cache directory by :func:`resolve_jars` or
``containers/cassandra/resolve.sh``. :func:`readable_jars` stages them where the servers'
unprivileged account can read them.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from labkit.services.cassandra.errors import CassandraError
from labkit.services.templates import template_dir

__all__ = ["MAVEN_FIX", "cassandra_version", "jar_dir", "readable_jars", "resolve_jars"]

MAVEN_FIX = "install it with `apt-get install maven` or `brew install maven`, or run `labkit doctor`"


def cassandra_version(pom: Path | None = None) -> str:
    """The Cassandra version named by the pom's ``cassandra.version`` property.

    >>> cassandra_version().startswith("5.0.")
    True
    """
    pom = pom or template_dir("cassandra") / "pom.xml"
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:cassandra.version", ns)
    if node is None or not (node.text or "").strip():
        raise CassandraError(f"{pom} has no <cassandra.version> property")
    return node.text.strip()


def jar_dir(cache_dir: Path, version: str | None = None) -> Path:
    """The directory holding the resolved jars for ``version`` under ``cache_dir``."""
    return Path(cache_dir) / "cassandra" / (version or cassandra_version()) / "lib"


def resolve_jars(
    cache_dir: Path,
    *,
    mvn: str = "mvn",
    pom: Path | None = None,
    maven_settings: Path | None = None,
    maven_repo_local: Path | None = None,
    timeout_s: float = 1800,
) -> Path:
    """Resolve cassandra-all and its runtime dependencies into ``cache_dir``; return the jar dir.

    Idempotent: a marker file records a finished resolution of that version and
    makes later calls return at once. Concurrent callers serialise on a lock.
    ``containers/cassandra/resolve.sh`` runs the same Maven command.

        >>> lib = resolve_jars(Path.home() / ".cache" / "labkit")
        >>> any(p.name.startswith("cassandra-all-") for p in lib.iterdir())
        True
    """
    pom = pom or template_dir("cassandra") / "pom.xml"
    version = cassandra_version(pom)
    lib = jar_dir(cache_dir, version)
    base = lib.parent
    marker = base / ".resolved"
    if marker.exists():
        return lib
    base.mkdir(parents=True, exist_ok=True)
    if shutil.which(mvn) is None and not Path(mvn).is_file():
        raise CassandraError(
            f"Maven (`{mvn}`) not found; it resolves Cassandra {version} from Maven Central: {MAVEN_FIX}."
        )
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return lib
        tmp = Path(tempfile.mkdtemp(prefix="lib.", dir=base))
        cmd = [mvn, "-B", "-q", "-f", str(pom)]
        if maven_settings is not None:
            cmd += ["-s", str(maven_settings)]
        if maven_repo_local is not None:
            cmd.append(f"-Dmaven.repo.local={maven_repo_local}")
        cmd += [
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CassandraError(
                f"Resolving Cassandra {version} jars with Maven took over {timeout_s:.0f} s; "
                "check access to Maven Central (or your mirror in ~/.m2/settings.xml)."
            ) from None
        jars = list(tmp.glob("*.jar"))
        if proc.returncode != 0 or not any(j.name.startswith("cassandra-all-") for j in jars):
            shutil.rmtree(tmp, ignore_errors=True)
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise CassandraError(
                f"Resolving Cassandra {version} jars with Maven failed (exit {proc.returncode}). "
                "Check access to Maven Central (or the mirror in your Maven settings); if Maven "
                f"itself is broken, {MAVEN_FIX}. Command: {' '.join(cmd)}\n"
                f"mvn output (last lines):\n{tail}"
            )
        if lib.exists():
            shutil.rmtree(lib)
        tmp.chmod(0o755)
        tmp.rename(lib)
        marker.write_text(f"{version}\n{len(jars)} jars\n")
    return lib


def readable_jars(lib: Path, lab_dir: Path, user: str | None) -> Path:
    """The jars as the server account can read them: staged in the lab dir if the cache is private."""
    if user is None or _world_readable(lib):
        return lib
    staged = lab_dir / "cassandra" / "lib" / lib.parent.name
    if not (staged / ".complete").exists():
        staged.mkdir(parents=True, exist_ok=True)
        for jar in lib.glob("*.jar"):
            target = staged / jar.name
            if target.exists():
                continue
            try:
                os.link(jar, target)
            except OSError:
                shutil.copyfile(jar, target)
            target.chmod(0o644)
        (staged / ".complete").touch()
    for d in (staged, *staged.parents):
        if d == Path("/") or d.stat().st_mode & stat.S_IXOTH:
            continue
        d.chmod(d.stat().st_mode | 0o755)
    return staged


def _world_readable(path: Path) -> bool:
    """True if any user can traverse to ``path`` and read it."""
    p = path.resolve()
    for parent in [p, *p.parents]:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return False
    return bool(p.stat().st_mode & stat.S_IROTH)
