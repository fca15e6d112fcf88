"""Django settings, built from a ``WebConfig`` (nothing read from the environment).

Introduced in notebooks/02_web_tier.ipynb.
"""

from __future__ import annotations

from typing import Any

from labkit.web.config import WebConfig


def _database(dsn: dict[str, Any], statement_timeout_ms: int) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": dsn["dbname"], "USER": dsn["user"], "PASSWORD": dsn["password"],
        "HOST": dsn["host"], "PORT": str(dsn["port"]),
        # One connection per worker, kept across requests: connecting costs more than a like.
        "CONN_MAX_AGE": None,
        # The database side of the time budget: no statement may outlive the request.
        "OPTIONS": {"options": f"-c statement_timeout={statement_timeout_ms}",
                    "connect_timeout": 3,
                    # Server-side binding lets psycopg prepare the hot statements (a like is
                    # then parsed and planned once per worker, not once per request).
                    "server_side_binding": True, "prepare_threshold": 2},
    }


def build(config: WebConfig) -> dict[str, Any]:
    """The settings dict for ``django.conf.settings.configure(**build(config))``."""
    timeout_ms = max(1, int(config.time_budget_s * 1000))
    databases = {"default": _database(config.leader, timeout_ms)}
    if config.follower:
        databases["follower"] = _database(config.follower, timeout_ms)
    return {
        "DEBUG": False,
        "SECRET_KEY": config.secret_key,
        "ALLOWED_HOSTS": ["127.0.0.1", "localhost", "testserver"],
        "ROOT_URLCONF": "labkit.web.urls",
        "INSTALLED_APPS": ["labkit.web.apps.InstagramConfig"],
        "MIDDLEWARE": ["labkit.web.middleware.TimeBudgetMiddleware"],
        "DATABASES": databases,
        "DATABASE_ROUTERS": ["labkit.web.routers.LeaderFollowerRouter"],
        "USE_TZ": True,
        "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
        "LOGGING_CONFIG": None,
        "LABKIT_TIME_BUDGET_S": config.time_budget_s,
        "LABKIT_ALLOW_INJECTED_DELAY": config.allow_injected_delay,
        "LABKIT_TOKEN_CACHE_TTL_S": config.token_cache_ttl_s,
        "LABKIT_BROKER_URL": config.broker_url,
        "LABKIT_NOTIFY_QUEUE": config.notify_queue,
        "LABKIT_LEADER_DSN": config.leader_dsn(),
        "LABKIT_FEED_KERNEL": config.feed_kernel,
        "LABKIT_FEED_SOURCE": config.feed_source,
        "LABKIT_CASSANDRA_FEEDS": config.cassandra_feeds,
        "LABKIT_GATES": config.gates,
        "LABKIT_CACHE": config.cache,
    }
