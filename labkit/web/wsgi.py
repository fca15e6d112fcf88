"""WSGI entry point for gunicorn: ``labkit.web.wsgi:create_app('/path/to/web.json')``.

Introduced in notebooks/02_web_tier.ipynb.
"""

from __future__ import annotations

from typing import Any


def create_app(config_path: str) -> Any:
    """The Django WSGI application, configured from the ``WebConfig`` JSON at ``config_path``."""
    from django.core.wsgi import get_wsgi_application

    from labkit.web.config import WebConfig, configure

    config = WebConfig.read(config_path)
    configure(config)
    if config.preload_feed_model:
        from labkit.web import feed
        feed.preload(config.follower or config.leader)
    app = get_wsgi_application()
    # Import the views now (Django would on the first request): with preload_app, in the
    # master, so the workers share those modules instead of each importing its own copy.
    from django.urls import get_resolver
    get_resolver().url_patterns
    return app
