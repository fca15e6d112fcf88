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


def memcached_command(host: str, port: int, line: bytes, timeout_s: float = 1.0) -> bytes:
    """Send one text-protocol line, return the first response line (without CRLF)."""
    with socket.create_connection((host, port), timeout=timeout_s) as s:
        s.sendall(line)
        data = read_until(s, b"\r\n")
    return data.strip()


class Memcached(NativeService):
    """One memcached instance on loopback.

    >>> mc = Memcached(Path("/tmp/lab/memcached-0"), memory_mb=64).start()  # doctest: +SKIP
    >>> mc.host_port                                                         # doctest: +SKIP
    ('127.0.0.1', 41234)
    """

    kind = "memcached"
    DEFAULT_MEMORY_MB = 64

    def __init__(self, workdir: Path, *, index: int = 0, port: int = 0,
                 memory_mb: int = DEFAULT_MEMORY_MB, binary: str = "memcached",
                 host: str = "127.0.0.1", user: str | None = None, timeout_s: float = 30.0) -> None:
        super().__init__(workdir, host=host, user=user, timeout_s=timeout_s)
        self.index, self.port, self.memory_mb, self.binary = index, port, memory_mb, binary

    @property
    def name(self) -> str:
        return f"memcached-{self.index}"

    @property
    def host_port(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _launch(self) -> None:
        if not self.port:
            self.port = PortAllocator(self.host).take()
        # -U 0: no UDP listener (memcached's UDP port was an amplification vector, and unused here).
        cmd = [self.binary, "-l", self.host, "-p", str(self.port), "-U", "0",
               "-m", str(self.memory_mb), "-c", "4096", "-t", "2"]
        self.procs.append(spawn(self.name, cmd, cwd=self.workdir, log_path=self.log_path,
                                user=self.user))

    def ready(self) -> bool:
        return memcached_command(self.host, self.port, b"version\r\n").startswith(b"VERSION ")

    def version(self) -> str:
        return memcached_command(self.host, self.port, b"version\r\n").decode().split()[1]

    def flush(self) -> None:
        """Invalidate every item (``flush_all``)."""
        answer = memcached_command(self.host, self.port, b"flush_all\r\n")
        if answer != b"OK":
            raise ServiceError(f"{self.name}: flush_all answered {answer!r}")

    def _state(self) -> dict[str, Any]:
        return {"index": self.index, "port": self.port, "memory_mb": self.memory_mb}

    def _restore(self, state: dict[str, Any]) -> None:
        self.index, self.port = state["index"], state["port"]
        self.memory_mb = state.get("memory_mb", self.memory_mb)
