"""WSGI entry point for gunicorn: ``labkit.web.wsgi:create_app('/path/to/web.json')``.

Introduced in notebooks/02_web_tier.ipynb.
"""

from __future__ import annotations

from typing import Any


def create_app(config_path: str) -> Any:
    """The Django WSGI application, configured from the ``WebConfig`` JSON at ``config_path``."""
    from django.core.wsgi import get_wsgi_application

    from labkit.web.config import WebConfig, configure

    configure(WebConfig.read(config_path))
    return get_wsgi_application()
