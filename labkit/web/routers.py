"""Writes go to the leader, reads to the follower (when the lab has one).

Introduced in notebooks/02_web_tier.ipynb.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings


class LeaderFollowerRouter:
    """Django database router: ``default`` is the leader, ``follower`` a streaming replica."""

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return "follower" if "follower" in settings.DATABASES else "default"

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return "default"

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db == "default"
