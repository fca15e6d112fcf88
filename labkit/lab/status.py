"""How the lab shows itself: the status table, what ``down`` did, progress while servers start.

Presentation only: the rows come from the service kinds (``ServiceKind.status_rows``) and
the helper processes (``labkit.lab.helpers``); nothing here talks to a server.

>>> print(status_table([{"name": "memcached-0", "ok": True, "address": "127.0.0.1:4000",
...                      "version": "1.6.18"}]))
server               health  address           version                          lag
memcached-0          ok      127.0.0.1:4000    1.6.18
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from labkit._proc import LAB_ID_ENV, PROCESS_ENV


def status_table(rows: list[dict[str, Any]]) -> str:
    """Health rows as an aligned text table (what `labkit status` prints).

    Rows that carry a ``group`` (a Cassandra topology) come under a line naming it.
    """
    lines = [f"{'server':<20} {'health':<7} {'address':<17} {'version':<32} lag"]
    group = None
    for r in rows:
        if r.get("group") and r["group"] != group:
            lines.append(f"{r['group']}:")
        group = r.get("group")
        lines.append(f"{r['name']:<20} {'ok' if r['ok'] else 'DOWN':<7} {r['address']:<17} "
                     f"{r['version'][:32]:<32} {r.get('lag', '')}".rstrip())
    return "\n".join(lines)


def helper_table(rows: list[dict[str, Any]]) -> str:
    """The recorded helper processes (``labkit.lab.helpers.recorded``) as a text table."""
    lines = [f"{'helper':<20} {'health':<7} {'address':<24} {'kind':<13} pid"]
    for r in rows:
        lines.append(f"{r['name']:<20} {'ok' if r['ok'] else 'DOWN':<7} {r['address']:<24} "
                     f"{r['kind']:<13} {r['pids']}" + ("" if r["ok"] else f"  ({r['why']})"))
    return "\n".join(lines)


@dataclass
class DownReport:
    """What ``Lab.down`` did, for the CLI to say."""

    lab_dir: Path
    purge: bool
    nothing: str = ""          # why there was nothing to do (no lab in the directory)
    damaged: str = ""          # why the state file could not be used
    stopped: list[str] = field(default_factory=list)
    left_running: list[str] = field(default_factory=list)  # servers labkit did not start
    swept: list[int] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # containers and networks (docker)
    helpers: list[str] = field(default_factory=list)  # the helpers the state file recorded
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        if self.nothing:
            return [f"no lab in {self.lab_dir} ({self.nothing}): nothing to stop"
                    + (" or delete" if self.purge else "")]
        out = []
        if self.damaged:
            out.append(f"the lab's files could not say what runs ({self.damaged}); stopped "
                       f"instead every process carrying this lab's marker ({LAB_ID_ENV}): "
                       f"{len(self.swept)} process(es){_pids(self.swept)}")
        out.append(f"lab {self.lab_dir} is down"
                   + (f" (stopped {', '.join(self.stopped)})" if self.stopped else ""))
        if self.left_running:
            out.append(f"left running (external servers, which labkit did not start): "
                       f"{', '.join(self.left_running)}")
        if self.swept and not self.damaged:
            what = (f"its helpers ({', '.join(self.helpers)}) and whatever else carried the "
                    "lab's marker" if self.helpers else "stray process(es) carrying the lab's marker")
            out.append(f"(also stopped {len(self.swept)} process(es): {what}{_pids(self.swept)})")
        if self.removed:
            out.append(f"removed the lab's containers and network: {', '.join(self.removed)}")
        out += self.problems
        if self.purge:
            out.append("deleted the lab's data: " + (", ".join(self.deleted) or "there was none"))
            if self.kept:
                out.append(f"left in place (the lab did not make them): {', '.join(self.kept)}")
        return out


def _pids(pids: list[int]) -> str:
    return f": pid {', '.join(map(str, pids))}" if pids else ""


def describe(procs: list[psutil.Process]) -> str:
    """``name (pid 1, 2)`` per spawned name, for messages."""
    by_name: dict[str, list[int]] = {}
    for p in procs:
        try:
            name = p.environ().get(PROCESS_ENV) or p.name()
        except psutil.Error:
            name = "?"
        by_name.setdefault(name, []).append(p.pid)
    return ", ".join(f"{n} (pid {', '.join(map(str, pids))})" for n, pids in by_name.items())


def size(n: float) -> str:
    """Bytes as ``512 B``, ``1.5 kB``, ``3.2 MB``."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


class Progress:
    """Says what is still starting once a wait passes 2 s (silent for quick starts)."""

    def __init__(self, verb: str, enabled: bool = True, after_s: float = 2.0,
                 stream: Any = None) -> None:
        self.verb, self.enabled, self.after_s = verb, enabled, after_s
        self.stream = stream or sys.stderr
        self.pending: list[str] = []
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._shown = False

    def add(self, name: str) -> None:
        self.pending.append(name)

    def done(self, name: str) -> None:
        if name in self.pending:
            self.pending.remove(name)

    def _loop(self) -> None:
        tty = getattr(self.stream, "isatty", lambda: False)()
        last_line = 0.0
        while not self._stop.wait(0.5):
            elapsed = time.monotonic() - self.t0
            if elapsed < self.after_s or not self.pending:
                continue
            msg = f"{self.verb} the lab: {elapsed:4.0f} s, waiting for {', '.join(self.pending)}"
            if tty:
                self.stream.write("\r" + msg.ljust(78))
            elif elapsed - last_line >= 3:
                self.stream.write(msg + "\n")
                last_line = elapsed
            self.stream.flush()
            self._shown = True

    def __enter__(self) -> "Progress":
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()
            if self._shown:
                done = f"{self.verb} the lab: done in {time.monotonic() - self.t0:.1f} s"
                self.stream.write("\r" + done.ljust(78) + "\n")
                self.stream.flush()
