"""WebConfig: everything the Django project needs, passed in explicitly (never the environment).

Introduced in notebooks/02_web_tier.ipynb.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

# The time budget the Instagram articles cite for a request.
DEFAULT_TIME_BUDGET_S = 12.0
FEED_KERNELS = ("compiled", "pure")
FEED_SOURCES = ("postgres", "cassandra")


def dsn_dict(server: Any, dbname: str) -> dict[str, Any]:
    """Connection settings of a ``PostgresServer`` for one database, as plain values."""
    return {"host": server.host, "port": int(server.port), "user": "postgres",
            "password": server.password, "dbname": dbname}


@dataclass(frozen=True)
class WebConfig:
    """Databases and limits of the web tier.

    ``leader`` takes the writes (likes); ``follower``, when given, the reads (like counts,
    media, profiles). Each is a dict with host, port, user, password and dbname.
    ``time_budget_s`` bounds every request: past it the request is cut off with a 504.
    ``allow_injected_delay`` lets ``?dependency_ms=`` simulate a slow dependency (for demos).
    ``token_cache_ttl_s``: each worker remembers a verified token that long (0 turns it off),
    so a request pays one database round trip for its data, not a second one for its token;
    a revoked token can keep working in a worker for up to that long.
    ``broker_url``, when given, makes a new like enqueue ``notify_like`` on ``notify_queue``
    (labkit.backend.tasks) after its commit, instead of notifying inline; the database needs
    ``tasks.install`` and a worker (``CeleryWorkers``) consuming that queue.
    ``cache``, when given, makes the media endpoint read like counts through memcached with
    leases (``{"servers": [[host, port], ...], "prefix": ..., "lease": "meta"}``; the keys are
    ``labkit.backend.cache``'s, which the invalidation service deletes; notebook 12).
    ``gates``, when given, is where views find feature gates (``labkit.backend.gates``):
    ``{"dsn": ..., "cache_servers": [[host, port], ...], "prefix": ...}``; without it every
    gate is off (``views.feature_on``).
    """

    leader: dict[str, Any]
    follower: dict[str, Any] | None = None
    time_budget_s: float = DEFAULT_TIME_BUDGET_S
    allow_injected_delay: bool = True
    token_cache_ttl_s: float = 30.0
    broker_url: str | None = field(default=None, repr=False)
    notify_queue: str = "notifications"
    gates: dict[str, Any] | None = field(default=None, repr=False)
    cache: dict[str, Any] | None = None
    secret_key: str = field(default="labkit-web-not-secret", repr=False)
    # The feed (notebook 11): which scoring kernel runs, and whether the ranking model is
    # built when the app loads (in gunicorn's master with preload, shared by the workers)
    # rather than on a worker's first feed request.
    feed_kernel: str = "compiled"
    preload_feed_model: bool = False
    # Where the feed's candidates come from (notebook 09): PostgreSQL's follows and posts, or
    # the viewer's Cassandra feed (``cassandra_feeds``: a ``FeedConfig.to_dict()``).
    feed_source: str = "postgres"
    cassandra_feeds: dict[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.time_budget_s > 0:
            raise ValueError(f"time_budget_s={self.time_budget_s}: give a positive number of "
                             f"seconds (the articles use {DEFAULT_TIME_BUDGET_S})")
        if self.feed_kernel not in FEED_KERNELS:
            raise ValueError(f"feed_kernel={self.feed_kernel!r}: choose one of "
                             f"{', '.join(FEED_KERNELS)} (compiled falls back to pure when "
                             "the extension was not built; see `labkit doctor`)")
        if self.feed_source not in FEED_SOURCES:
            raise ValueError(f"feed_source={self.feed_source!r}: choose one of "
                             f"{', '.join(FEED_SOURCES)}")
        if self.feed_source == "cassandra" and not self.cassandra_feeds:
            raise ValueError("feed_source='cassandra' needs cassandra_feeds: pass "
                             "FeedConfig.from_lab(lab, keyspace).to_dict()")

    @classmethod
    def from_lab(cls, lab: Any, dbname: str, *, notify: bool = False,
                 **kwargs: Any) -> "WebConfig":
        """The lab's leader for writes and its first follower (if any) for reads.

        ``notify=True`` sends like notifications through the lab's RabbitMQ.
        """
        follower = dsn_dict(lab.follower, dbname) if lab.followers else None
        if notify:
            kwargs.setdefault("broker_url", lab.broker_url)
        return cls(leader=dsn_dict(lab.leader, dbname), follower=follower, **kwargs)

    def leader_dsn(self) -> str:
        """The leader as a libpq connection string (for the notification tasks)."""
        return " ".join(f"{k}={v}" for k, v in self.leader.items())

    def replace(self, **changes: Any) -> "WebConfig":
        return WebConfig(**{**asdict(self), **changes})

    def write(self, path: Path) -> Path:
        """Save as JSON readable by its owner only (it holds the database password).

        Settings left at their default are not written, so an older release of the web tier
        (labkit.deploy), whose WebConfig lacks a newer setting, can read the file.
        """
        import os
        defaults = {f.name: f.default for f in fields(self)}
        values = {k: v for k, v in asdict(self).items() if k not in defaults
                  or defaults[k] is MISSING or v != defaults[k]}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(values, f)
        return path

    @classmethod
    def read(cls, path: str | Path) -> "WebConfig":
        return cls(**json.loads(Path(path).read_text()))


def configure(config: WebConfig) -> None:
    """Set Django up in this process with ``config`` (again with a new config if called twice)."""
    import django
    from django.conf import settings

    from labkit.web.settings import build

    values = build(config)
    if not settings.configured:
        settings.configure(**values)
        django.setup()
        return
    # Reconfiguring (a second test module, another database): swap databases and limits.
    from django.db import connections
    connections.close_all()
    for key, value in values.items():
        setattr(settings, key, value)
    # The handler keeps the DATABASES it first read in _settings; forget both copies.
    connections._settings = None
    connections.__dict__.pop("settings", None)
    from asgiref.local import Local
    connections._connections = Local(connections.thread_critical)
