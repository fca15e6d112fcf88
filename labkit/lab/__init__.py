"""The Lab and what it is made of: one concern per module.

=============  ===============================================================
module         holds
=============  ===============================================================
core           ``Lab``: up, attach, down, reset; reaches every server through the
               registry (a few accessors, ``leader``, ``broker_url``, are sugar)
kinds/         the registry (``kinds/__init__.py``) and one module per kind of service:
               how it is built under each provider, its state, env, status rows,
               topology lines, warnings and reset steps (``kinds/base.py``)
helpers        helper processes notebooks start (web servers, Celery workers, ...)
secrets        ``secrets.json``: the credentials generated once per lab
locking        one ``up``/``down``/``reset`` at a time per lab directory
status         presentation: the status table, what ``down`` did, progress
=============  ===============================================================

The state file is ``labkit._state`` (below the services: helper processes record themselves
there), the providers are ``labkit.providers``.
"""

from labkit._state import StateError
from labkit.lab.core import Lab
from labkit.lab.status import DownReport

__all__ = ["DownReport", "Lab", "StateError"]
