"""Memcached 1.6, started from the installed binary (meta commands included).

>>> from pathlib import Path
>>> with Memcached(Path("/tmp/lab-mc"), port=0) as mc:     # doctest: +SKIP
...     print(mc.host_port, mc.version())
('127.0.0.1', 40123) 1.6.18
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from labkit._proc import PortAllocator, ServiceError, spawn
from labkit.services.base import NativeService


def read_until(sock: socket.socket, *endings: bytes) -> bytes:
    """Read from ``sock`` until the data ends with one of ``endings`` (or the server closes)."""
    data = b""
    while not data.endswith(endings):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def memcached_command(host: str, port: int, line: bytes, timeout_s: float = 1.0,
                      until: bytes = b"\r\n") -> bytes:
    """Send one text-protocol line, return the response up to ``until`` (without the last CRLF).

    The first line by default; ``until=b"END\r\n"`` for a multi-line answer (``stats``).
    ``host`` may be the path of a unix socket (then ``port`` is ignored).
    """
    if host.startswith("/"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout_s)
        s.connect(host)
    else:
        s = socket.create_connection((host, port), timeout=timeout_s)
    with s:
        s.sendall(line)
        data = read_until(s, until)
    return data.strip()


class Memcached(NativeService):
    """One memcached instance on loopback, or on a unix socket only (``socket=PATH``).

    The unix-socket form is a graded submission's private cache (``labkit.grading``): no TCP
    port at all, reachable only through that path (memcached has no access control).

    >>> mc = Memcached(Path("/tmp/lab/memcached-0"), memory_mb=64).start()  # doctest: +SKIP
    >>> mc.host_port                                                         # doctest: +SKIP
    ('127.0.0.1', 41234)
    """

    kind = "memcached"
    DEFAULT_MEMORY_MB = 64

    def __init__(self, workdir: Path, *, index: int = 0, port: int = 0,
                 memory_mb: int = DEFAULT_MEMORY_MB, binary: str = "memcached",
                 host: str = "127.0.0.1", user: str | None = None, timeout_s: float = 30.0,
                 socket: Path | None = None, threads: int = 2) -> None:
        super().__init__(workdir, host=host, user=user, timeout_s=timeout_s)
        self.index, self.port, self.memory_mb, self.binary = index, port, memory_mb, binary
        self.socket, self.threads = (Path(socket) if socket else None), threads

    @property
    def name(self) -> str:
        return f"memcached-{self.index}"

    @property
    def host_port(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def address(self) -> str:
        return str(self.socket) if self.socket else f"{self.host}:{self.port}"

    @property
    def server(self) -> str | tuple[str, int]:
        """What pymemcache takes: the socket's path, or (host, port)."""
        return str(self.socket) if self.socket else self.host_port

    def _launch(self) -> None:
        if self.socket:  # -s: this socket only, no TCP; -a: mode of the socket file
            where = ["-s", str(self.socket), "-a", "0666"]
        else:
            if not self.port:
                self.port = PortAllocator(self.host).take()
            # -U 0: no UDP listener (an amplification vector, and unused here).
            where = ["-l", self.host, "-p", str(self.port), "-U", "0"]
        cmd = [self.binary, *where, "-m", str(self.memory_mb), "-c", "4096",
               "-t", str(self.threads)]
        self.procs.append(spawn(self.name, cmd, cwd=self.workdir, log_path=self.log_path,
                                user=self.user))

    def _command(self, line: bytes, until: bytes = b"\r\n") -> bytes:
        if self.socket:
            return memcached_command(str(self.socket), 0, line, until=until)
        return memcached_command(self.host, self.port, line, until=until)

    def ready(self) -> bool:
        return self._command(b"version\r\n").startswith(b"VERSION ")

    def version(self) -> str:
        return self._command(b"version\r\n").decode().split()[1]

    def stats(self) -> dict[str, int]:
        """The server's counters (``stats``): ``get_hits``, ``get_misses``, ``curr_items``, ...

        Only the integer ones (``version`` and ``rusage_*`` are left out).
        """
        out = {}
        for line in self._command(b"stats\r\n", until=b"END\r\n").decode().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "STAT" and parts[2].isdigit():
                out[parts[1]] = int(parts[2])
        return out

    def flush(self) -> None:
        """Invalidate every item (``flush_all``)."""
        answer = self._command(b"flush_all\r\n")
        if answer != b"OK":
            raise ServiceError(f"{self.name}: flush_all answered {answer!r}")

    def _state(self) -> dict[str, Any]:
        return {"index": self.index, "port": self.port, "memory_mb": self.memory_mb}

    def _restore(self, state: dict[str, Any]) -> None:
        self.index, self.port = state["index"], state["port"]
        self.memory_mb = state.get("memory_mb", self.memory_mb)
