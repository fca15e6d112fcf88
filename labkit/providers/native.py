"""The native provider: the installed server binaries, run as child processes in the lab dir.

The servers themselves are ``NativeService``s (``labkit.services``); this module says what
the provider needs: the binaries (``binary_checks``, what ``labkit doctor`` prints) and an
unprivileged account when labkit runs as root.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from labkit._proc import service_account
from labkit.config import LabConfig
from labkit.providers.base import Provider, Verdict


class NativeProvider(Provider):
    """Start the installed binaries (PostgreSQL 15, memcached, RabbitMQ, Java 17 for Cassandra)."""

    name = "native"
    manages = True

    def service_user(self, config: LabConfig) -> str | None:
        return service_account(config.service_user)

    def check(self, config: LabConfig) -> Verdict:
        """Every server binary is installed, at a version the lab runs on."""
        missing = [what for what, ok, *_ in binary_checks(config) if not ok]
        if missing:
            return Verdict(self.name, False, f"missing or too old: {', '.join(missing)} (the "
                                             "install line is below)")
        return Verdict(self.name, True, "all binaries found")


def _version_of(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return _first_version(out.stdout + out.stderr)


def _first_version(text: str) -> str | None:
    m = re.search(r"(\d+\.\d+(?:\.\d+)?)", text)
    return m.group(1) if m else None


def binary_checks(cfg: LabConfig) -> list[tuple[str, bool, str, str]]:
    """(what, ok, found, needed) for every binary the lab starts."""
    def vt(v: str | None) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split(".")) if v else ()

    checks = []
    pg = Path(cfg.pg_bin_dir) / "postgres"
    v = _version_of([str(pg), "--version"]) if pg.exists() else None
    checks.append(("postgres", bool(v) and vt(v)[0] == 15, v or f"not found in {cfg.pg_bin_dir}",
                   "15"))
    for tool in ("initdb", "pg_basebackup"):
        ok = (Path(cfg.pg_bin_dir) / tool).exists()
        checks.append((tool, ok, "found" if ok else "not found", "15"))
    mc = shutil.which(cfg.memcached_bin) or (cfg.memcached_bin if Path(cfg.memcached_bin).exists()
                                             else None)
    v = _version_of([mc, "-V"]) if mc else None
    checks.append(("memcached", bool(v) and vt(v) >= (1, 6), v or "not found", ">= 1.6"))
    rmq = cfg.rabbitmq_server_bin
    found = Path(rmq).exists() or shutil.which(rmq)
    v = None
    if found:  # the broker has no --version; ask the package manager where there is one
        deb = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"],
                             capture_output=True, text=True) if shutil.which("dpkg-query") else None
        v = _first_version(deb.stdout) if deb and deb.returncode == 0 else "installed"
    checks.append(("rabbitmq", bool(found) and (v == "installed" or vt(v) >= (3, 10)),
                   v or "not found", ">= 3.10"))
    epmd = shutil.which(cfg.epmd_bin) or (cfg.epmd_bin if Path(cfg.epmd_bin).exists() else None)
    checks.append(("epmd", bool(epmd), "found" if epmd else "not found", "Erlang"))
    # Cassandra runs from jars that Maven resolves, on Java 17.
    from labkit.services.cassandra import CassandraError, check_java
    try:
        _, major = check_java(cfg.java_bin)
        checks.append(("java", True, str(major), ">= 17 (Cassandra)"))
    except CassandraError:
        found = _version_of([cfg.java_bin, "-version"]) if shutil.which(cfg.java_bin) else None
        checks.append(("java", False, found or "not found", ">= 17 (Cassandra)"))
    mvn = shutil.which(cfg.mvn_bin)
    v = _version_of([mvn, "--version"]) if mvn else None
    checks.append(("maven", bool(v), v or "not found", "any (Cassandra's jars)"))
    checks.append(_haproxy_check())
    # Toxiproxy puts distance between notebook 10's regions and cuts notebook 12's web tier off
    # Memcached; no Debian package has it.
    tp = shutil.which(cfg.toxiproxy_bin) or (cfg.toxiproxy_bin if Path(cfg.toxiproxy_bin).exists()
                                             else None)
    checks.append(("toxiproxy", bool(tp), "found" if tp else "not found",
                   "2.x (notebooks 10, 12; built by bootstrap.sh)"))
    # `labkit grade` isolates each submission with bubblewrap and socat forwarders.
    bwrap = shutil.which("bwrap")
    v = _version_of([bwrap, "--version"]) if bwrap else None
    checks.append(("bwrap", bool(v), v or "not found", "any (labkit grade)"))
    socat = shutil.which("socat")
    v = _version_of([socat, "-V"]) if socat else None
    checks.append(("socat", bool(v), v or "not found", "any (labkit grade)"))
    return checks


def _haproxy_check() -> tuple[str, bool, str, str]:
    """HAProxy routes notebook 13's canary traffic; its runtime API needs >= 2.4."""
    from labkit.deploy.router import find_haproxy
    exe = find_haproxy()
    v = _version_of([exe, "-v"]) if Path(exe).exists() or shutil.which(exe) else None
    ok = bool(v) and tuple(int(x) for x in v.split(".")[:2]) >= (2, 4)
    return ("haproxy", ok, v or "not found", ">= 2.4 (notebook 13)")
