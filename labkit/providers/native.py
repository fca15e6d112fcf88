"""The native provider: the installed server binaries, run as child processes in the lab dir.

The servers themselves are ``NativeService``s (``labkit.services``); this module says what
the provider needs: an unprivileged account when labkit runs as root.
"""

from __future__ import annotations

from labkit._proc import service_account
from labkit.config import LabConfig
from labkit.providers.base import Provider


class NativeProvider(Provider):
    """Start the installed binaries (PostgreSQL 15, memcached, RabbitMQ, Java 17 for Cassandra)."""

    name = "native"
    manages = True

    def service_user(self, config: LabConfig) -> str | None:
        return service_account(config.service_user)
