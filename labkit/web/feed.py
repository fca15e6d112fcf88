"""The feed endpoint's per-process state: the ranking model, built once per process.

With gunicorn's ``preload_app`` the master builds it (``preload``, called by ``create_app``)
and the forked workers share its pages; otherwise each worker builds its own on its first
feed request. The model is read-only after it is built. With the feed in Cassandra
(notebook 09) each worker also opens its own driver session, on its first feed request (never
in the master: a driver's connections and threads do not survive a fork).

Introduced in notebooks/11_cython_and_memory.ipynb.
"""

from __future__ import annotations

from typing import Any, Callable

import psycopg

from labkit.backend.ranking import FeedModel

_model: FeedModel | None = None


def preload(dsn: dict[str, Any]) -> FeedModel:
    """Build this process's model from the database ``dsn`` (a fresh connection, closed after).

    Called in gunicorn's master, it must leave no connection open: a forked worker would
    share the socket.
    """
    global _model
    with psycopg.connect(**dsn, connect_timeout=10) as conn:
        _model = FeedModel.load(conn)
    return _model


def model(connect: Callable[[], psycopg.Connection]) -> FeedModel:
    """This process's model, built from ``connect()`` on first use."""
    global _model
    if _model is None:
        _model = FeedModel.load(connect())
    return _model


_cassandra: dict[str, Any] = {}


def cassandra_clients(settings: dict[str, Any]) -> dict[str, Any]:
    """This process's feeds (its own driver session), page cache and celebrity list."""
    from labkit.backend.feeds import Celebrities, FeedConfig
    if not _cassandra:
        config = FeedConfig.from_dict(settings)
        _cassandra.update(feeds=config.feeds(config.connect()), cache=config.cache(),
                          celebrities=Celebrities(config.threshold))
    return _cassandra


def cassandra_source(conn: psycopg.Connection, settings: dict[str, Any]) -> Any:
    """The Cassandra candidate source for this request, over this process's session."""
    from labkit.backend.feeds import CassandraCandidates
    clients = cassandra_clients(settings)
    return CassandraCandidates(clients["feeds"], conn, celebrities=clients["celebrities"],
                               cache=clients["cache"])

