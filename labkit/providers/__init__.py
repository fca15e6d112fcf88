"""Providers: who runs the lab's servers. One is chosen per lab, here (``choose``).

=========  ========  ===================================================================
provider   manages   how
=========  ========  ===================================================================
native     yes       the installed binaries, as child processes in the lab directory
external   no        servers that run elsewhere, named in lab.toml's ``[external]``
docker     yes       containers on a Docker engine, from images built here (testcontainers)
=========  ========  ===================================================================

A provider says whether labkit starts and stops the servers (``manages``), which account
they run under, and whether it can run on this machine (``check``, for ``labkit doctor``).
How one kind of server is built under a provider is that kind's business: the method named
after the provider on its ``ServiceKind`` (``labkit/lab/kinds/``). A new provider is a
module here, an entry in ``PROVIDERS``, and one such method per kind it can run.

>>> get("native").manages
True
"""

from __future__ import annotations

from typing import Any

from labkit import _state
from labkit._proc import ServiceError
from labkit.config import LabConfig
from labkit.providers.base import Provider, Verdict
from labkit.providers.docker import DockerProvider
from labkit.providers.external import ExternalProvider
from labkit.providers.native import NativeProvider

__all__ = ["PROVIDERS", "Provider", "Verdict", "choose", "get"]

#: The providers a lab can run on (``config.provider``); ``labkit doctor`` checks each.
PROVIDERS: dict[str, Provider] = {p.name: p for p in (NativeProvider(), ExternalProvider(),
                                                      DockerProvider())}


def get(name: str) -> Provider:
    """The provider called ``name``."""
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ServiceError(f"unknown provider {name!r}; choose one of "
                           f"{', '.join(PROVIDERS)}") from None


def choose(config: LabConfig, state: dict[str, Any], *, attaching: bool = False) -> Provider:
    """The provider of a lab: the one its state file records, or else the config's.

    ``attaching`` (status, env, down, reset): what runs is what counts. At ``up`` too, unless
    the config asks for a provider (lab.toml, LABKIT_PROVIDER, an argument): asking for another
    one than the one that runs is an error naming both and the fix.
    """
    if not state.get("services"):
        return get(config.provider)
    running = state.get("provider", "native")  # state files before providers: native
    if running not in PROVIDERS:
        raise _state.damaged(config.lab_dir, f"it names provider {running!r}, which this "
                                             f"labkit does not know ({', '.join(PROVIDERS)})")
    if attaching or running == config.provider or config.origin("provider") == "default":
        return get(running)
    raise ServiceError(
        f"lab {config.lab_dir} runs on the {running} provider (its state file says so), but "
        f"the config asks for {config.provider}. Use the lab as it is (provider = "
        f"\"{running}\", or LABKIT_PROVIDER={running}), or stop it first with `labkit down` "
        "and bring it up again")
