"""A run's history: every client operation and every fault window, saved as JSON lines.

Introduced in notebooks/12_backend_under_faults.ipynb. As in Jepsen, an operation is recorded
with its invocation and completion and an outcome that says what the client knows:

- ``ok``: acknowledged (a 2xx answer): the effect must be there;
- ``fail``: refused before any effect (a 4xx answer): the effect must not be there;
- ``info``: unknown (no answer, a timeout, a 5xx): the effect may or may not be there, and a
  checker must accept both (but never twice).

Times are seconds since the run's start (``due_s`` is when the operation should have been
sent: an open-loop load counts latency from there, so a stall is not hidden).

>>> h = History()
>>> op = h.add(Op(index=0, process=7, f="like", args={"media_id": 3}, due_s=0.0, sent_s=0.0,
...               done_s=0.01, outcome="ok", value={"like_count": 1}))
>>> [o.index for o in h.acknowledged("like")]
[0]
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

OUTCOMES = ("ok", "fail", "info")


def outcome_of(status: int) -> str:
    """The outcome of an HTTP answer's status (0: no answer at all)."""
    if 200 <= status < 300:
        return "ok"
    if 400 <= status < 500:
        return "fail"
    return "info"


@dataclass(frozen=True)
class Op:
    """One client operation.

    ``process`` is the acting user (``user_id``); ``f`` the operation ("like", "unlike",
    "post", "media", "feed", "profile"); ``args`` its arguments (``media_id``, ...);
    ``value`` what the server answered (parsed JSON), None without an answer; ``done_s`` None
    when it never completed.
    """

    index: int
    process: int
    f: str
    args: dict[str, Any]
    due_s: float
    sent_s: float
    done_s: float | None
    outcome: str
    value: Any = None
    status: int = 0
    error: str | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome {self.outcome!r} is not one of {', '.join(OUTCOMES)}")

    @property
    def latency_ms(self) -> float | None:
        """From due to done (None when it never completed)."""
        return None if self.done_s is None else (self.done_s - self.due_s) * 1000


@dataclass(frozen=True)
class Fault:
    """One fault the nemesis injected: what, on which target, from ``start_s`` to ``end_s``."""

    name: str
    target: str
    start_s: float
    end_s: float
    detail: dict[str, Any] = field(default_factory=dict)


class History:
    """Operations and faults of one run (thread-safe appends), saved and loaded as JSON lines."""

    def __init__(self, ops: list[Op] | None = None, faults: list[Fault] | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        self.ops: list[Op] = list(ops or [])
        self.faults: list[Fault] = list(faults or [])
        self.meta: dict[str, Any] = dict(meta or {})
        self._lock = threading.Lock()

    def add(self, op: Op) -> Op:
        with self._lock:
            self.ops.append(op)
        return op

    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def of(self, *fs: str) -> Iterator[Op]:
        """The operations named ``fs`` (all when none is named), in index order."""
        return (o for o in sorted(self.ops, key=lambda o: o.index) if not fs or o.f in fs)

    def during(self, fault: "Fault", *fs: str) -> list[Op]:
        """The operations named ``fs`` (all when none is named) due in ``fault``'s window."""
        return [o for o in self.of(*fs) if fault.start_s <= o.due_s < fault.end_s]

    def acknowledged(self, *fs: str) -> list[Op]:
        return [o for o in self.of(*fs) if o.outcome == "ok"]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with path.open("w") as out:
            out.write(json.dumps({"type": "meta", **self.meta}) + "\n")
            for fault in self.faults:
                out.write(json.dumps({"type": "fault", **asdict(fault)}) + "\n")
            for op in self.of():
                out.write(json.dumps({"type": "op", **asdict(op)}) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "History":
        history = cls()
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                kind = record.pop("type")
            except (ValueError, KeyError) as e:
                raise ValueError(f"{path}:{number} is not a history record ({e}); a history "
                                 "file is written by History.save") from None
            if kind == "meta":
                history.meta = record
            elif kind == "fault":
                history.faults.append(Fault(**record))
            elif kind == "op":
                history.ops.append(Op(**record))
        return history
