"""Akkio's migration decision: per-user, per-region access counts over a sliding window.

Introduced in notebooks/10_akkio_placement.ipynb. A user moves to region R when, within the
last ``window_s``, R asked for the user's data at least ``threshold`` times and at least
``ratio`` times as often as the home region did, and the user has stayed put at least
``min_stay_s`` since the last move. The three together are the hysteresis: a short trip
(fewer than ``threshold`` requests from abroad) moves nothing, and a user whose requests
alternate between regions does not bounce back and forth.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

__all__ = ["AccessCounters", "MigrationPolicy"]


class AccessCounters:
    """How often each region asked for each user's data in the last ``window_s`` seconds.

    Thread-safe (the placement service counts from many request threads). Each access is a
    timestamp in a deque per (user, region); old ones drop off on every count.
    """

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s={window_s}: the window must be longer than 0 s")
        self.window_s, self.clock = window_s, clock
        self._seen: dict[int, dict[str, deque[float]]] = {}
        self._lock = threading.Lock()

    def record(self, user_id: int, region: str) -> dict[str, int]:
        """Count one access of ``user_id``'s data from ``region``; return the window's counts."""
        with self._lock:
            self._seen.setdefault(user_id, {}).setdefault(region, deque()).append(self.clock())
            return self._counts(user_id)

    def counts(self, user_id: int) -> dict[str, int]:
        """{region: accesses within the window} for ``user_id`` (regions with none left out)."""
        with self._lock:
            return self._counts(user_id)

    def forget(self, user_id: int) -> None:
        """Start the user's window afresh (after a move: the old counts led to it)."""
        with self._lock:
            self._seen.pop(user_id, None)

    def _counts(self, user_id: int) -> dict[str, int]:
        oldest = self.clock() - self.window_s
        out = {}
        for region, times in self._seen.get(user_id, {}).items():
            while times and times[0] < oldest:
                times.popleft()
            if times:
                out[region] = len(times)
        return out


@dataclass(frozen=True)
class MigrationPolicy:
    """When to move a user's data: a threshold, a ratio over home, and a minimum stay."""

    threshold: int = 10
    ratio: float = 2.0
    min_stay_s: float = 5.0

    def __post_init__(self) -> None:
        if self.threshold < 1 or self.ratio < 1 or self.min_stay_s < 0:
            raise ValueError(f"{self}: choose threshold >= 1, ratio >= 1 and min_stay_s >= 0 "
                             "(a ratio below 1 would move users away from where they are)")

    def decide(self, counts: dict[str, int], home: str, stayed_s: float) -> str | None:
        """The region to move the user to, or None to stay at ``home``.

        ``counts`` are the window's accesses per region; ``stayed_s`` the seconds since the
        user's last move (or since signing up).
        """
        if stayed_s < self.min_stay_s:
            return None
        here = counts.get(home, 0)
        best = max((r for r in counts if r != home), key=lambda r: counts[r], default=None)
        if best is None:
            return None
        n = counts[best]
        if n >= self.threshold and n >= self.ratio * here:
            return best
        return None
