"""The web tier: a Django project inside labkit, served by gunicorn on loopback.

``WebConfig`` says which databases to use (built from the lab's leader and follower) and the
per-request time budget; ``WebServer`` runs the project under gunicorn as a lab process;
``configure`` sets Django up in this process (for Django's test client).

Introduced in notebooks/02_web_tier.ipynb.

>>> cfg = WebConfig.from_lab(lab, dbname="instagram", time_budget_s=12.0)   # doctest: +SKIP
>>> with WebServer(lab.config.lab_dir / "web", cfg) as web:                  # doctest: +SKIP
...     web.url("/api/constant")
'http://127.0.0.1:40123/api/constant'
"""

from labkit.web.config import WebConfig, configure
from labkit.web.server import WebServer

__all__ = ["WebConfig", "WebServer", "configure"]
