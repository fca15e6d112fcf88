"""labkit: real PostgreSQL, Memcached and RabbitMQ servers for the Instagram Backend Lab.

>>> import labkit as lk
>>> lab = lk.up()          # doctest: +SKIP
>>> print(lab.topology())  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from labkit._proc import ServiceError
from labkit.config import ConfigError, LabConfig
from labkit.grading.student import check
from labkit.lab import DownReport, Lab
from labkit.services.postgres import Lag
from labkit.sliders import explore

__all__ = ["Lab", "LabConfig", "Lag", "ServiceError", "ConfigError", "up", "down", "attach",
           "reset", "check", "dashboard", "explore"]
__version__ = "0.1.0"


def up(config: LabConfig | None = None, **overrides: Any) -> Lab:
    """Bring the lab up (or reattach to it): ``lk.up(followers=2)``.

    Keyword arguments override ``LABKIT_*`` variables and ``lab.toml`` (see LabConfig).
    """
    return Lab.up(config or LabConfig.load(**overrides))


def attach(config: LabConfig | None = None, **overrides: Any) -> Lab:
    """Reattach to a running lab without starting anything."""
    return Lab.attach(config or LabConfig.load(**overrides))


def down(config: LabConfig | None = None, purge: bool = False, **overrides: Any) -> DownReport:
    """Stop every server of the lab; ``purge=True`` deletes its data too (what the lab made)."""
    return Lab(config or LabConfig.load(**overrides)).down(purge=purge)


def reset(config: LabConfig | None = None, **overrides: Any) -> list[str]:
    """Put the running lab back to its starting state (see ``Lab.reset``); what was done."""
    return Lab.attach(config or LabConfig.load(**overrides)).reset()


def dashboard(lab: Lab | None = None, interval_s: float = 2.0, duration_s: float = 900.0,
              queues: tuple[str, ...] = ()) -> Any:
    """Show a live dashboard of the lab in the notebook (see ``labkit.monitor``); ``.stop()`` it.

    Server health, follower lag (ms and bytes), queue depths (the Celery workers' queues and
    ``queues``), cache hit ratio and invalidation delay, refreshed every ``interval_s`` until
    ``duration_s`` has passed.
    """
    from labkit.monitor import dashboard as show  # ipywidgets only where a dashboard is wanted
    return show(lab, interval_s=interval_s, duration_s=duration_s, queues=queues)
