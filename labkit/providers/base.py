"""What every provider says about itself: whether it manages the servers, and if it can run here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from labkit.config import LabConfig


@dataclass(frozen=True)
class Verdict:
    """Whether a provider can run on this machine, why (not), and the facts behind it."""

    provider: str
    ok: bool
    why: str
    details: tuple[str, ...] = ()


class Provider:
    """Who runs a lab's servers (see ``labkit.providers``)."""

    name: ClassVar[str]
    #: True when labkit starts and stops the servers; False when they run elsewhere.
    manages: ClassVar[bool] = True

    def service_user(self, config: LabConfig) -> str | None:
        """The account the servers run under (as root), or None; made on first use."""
        return None

    def check(self, config: LabConfig) -> Verdict:
        """Can this provider run the configured lab here? (``labkit doctor``)."""
        raise NotImplementedError

    def launcher(self, config: LabConfig) -> Callable[..., Any] | None:
        """Where the lab's own processes (the backend's web tier, workers, invalidation service)
        run: a callable like ``labkit._proc.spawn``, or None for ``spawn`` itself (the host)."""
        return None

    def sweep(self, config: LabConfig) -> list[str]:
        """At ``down``: remove what the provider made for this lab beyond its servers' processes
        (the docker provider's labelled containers and network); what was removed."""
        return []

    def __repr__(self) -> str:
        return f"<provider {self.name}>"
