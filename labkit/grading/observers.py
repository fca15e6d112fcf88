"""Small observations a test asks the kernel for, about the kernel's own objects.

Called by name from a test (``sub.call("labkit.grading.observers:setting", sub.ref("conn"),
"statement_timeout")``): they run in the student's kernel, so what they return is an
observation like any other (the student could alter it, and only make it wrong).
"""

from __future__ import annotations

from typing import Any


def setting(conn: Any, name: str) -> str:
    """A session setting of a psycopg connection (``SHOW <name>``)."""
    from psycopg import sql
    return conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0]


def execute(conn: Any, statement: str) -> None:
    """Run one statement on a connection of the kernel (to set a session up for a test)."""
    conn.execute(statement)


def call(fn: Any, *args: Any) -> Any:
    """Call a callable made in the kernel (a loader, a reader): what it returns."""
    return fn(*args)
