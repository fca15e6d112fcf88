"""Where each server's config templates are: ``containers/<service>/``, shipped as package data.

The repository's top-level ``containers/`` directory is installed as the package
``labkit.containers`` (pyproject.toml maps it), so a wheel carries the templates and an
editable install reads them from the checkout. Every service asks here, through
``importlib.resources``, instead of building a path from its own ``__file__``.

>>> (template_dir("postgres") / "postgresql.conf").is_file()
True
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from labkit._proc import ServiceError

__all__ = ["template_dir"]


def template_dir(service: str) -> Path:
    """The directory holding ``service``'s templates (``postgres``, ``cassandra``, ...).

    A real directory: the servers' own tools (Maven for Cassandra's pom.xml) read it by path.
    """
    path = resources.files("labkit.containers") / service
    if not isinstance(path, Path) or not path.is_dir():
        raise ServiceError(
            f"labkit's {service} config templates are missing ({path}): labkit must be installed "
            "as files, from a checkout (`bash containers/bootstrap.sh`) or a wheel "
            "(`pip install --force-reinstall labkit`)"
        )
    return path
