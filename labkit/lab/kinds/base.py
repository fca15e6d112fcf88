"""What a kind of service contributes to the lab, in one place: the ``ServiceKind`` interface.

A kind (postgres, memcached, ...) says, for the Lab:

- how it is built under each provider (a method named after the provider: ``native(ctx,
  saved)``, ``docker(ctx, saved)``, ``external(ctx, saved)``; a provider without one cannot
  run the kind), from the config, its saved state, the lab's secrets and ports, or the
  servers lab.toml names (all in ``ctx``);
- which credentials it needs generated (``secrets``);
- what it records in the state file (``state``), what ``lab.<name>`` returns (``access``,
  and any further ``accessors``);
- its ``env`` lines, ``status_rows``, ``topology`` lines, ``warnings`` and ``reset`` steps.

The object a kind builds (its *handle*: a ``Postgres``, a list of ``Memcached``, ...) is the
kind's own; the Lab only keeps it and hands it back to the kind's methods. ``members`` lists
what in it starts and stops (each has ``start``, ``stop``, ``running``, ``ready``, ``procs``).
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

from labkit._proc import PortAllocator, ServiceError
from labkit.config import ExternalServers, LabConfig
from labkit.providers import Provider

if TYPE_CHECKING:
    from labkit.lab.core import Lab


class BuildContext:
    """What a kind is built from: the config, the provider, the lab's ports, account, secrets.

    ``ports`` is one allocator for the whole lab (kinds take ports in registry order, so a
    ``port_base`` gives the same ports each time); ``user`` and ``secrets`` are made on first
    use, so a provider that needs neither (external) creates no account and writes no file.
    """

    def __init__(self, config: LabConfig, provider: Provider,
                 secrets: Callable[[], dict[str, str]], state: dict[str, Any] | None = None,
                 *, attaching: bool = False) -> None:
        self.config, self.provider = config, provider
        #: Rebuild only what the state file lists (status, env, down), adding nothing the
        #: config asks for: that is for `up`.
        self.attaching = attaching
        self.ports = PortAllocator(config.host, config.port_base)
        self._load_secrets = secrets
        self._state = state or {}

    @cached_property
    def external(self) -> ExternalServers:
        """The servers an external lab points at: the config's, else those it was brought up with.

        (So ``labkit status`` reattaches to an external lab without its lab.toml at hand.)
        """
        if self.config.external is not None:
            return self.config.external
        saved = self._state.get("config", {}).get("external")
        if saved is None:
            raise ServiceError("the external provider needs lab.toml's [external] table, naming "
                               "the servers (see the README's external provider section)")
        return ExternalServers(**saved)

    @cached_property
    def user(self) -> str | None:
        return self.provider.service_user(self.config)

    @cached_property
    def secrets(self) -> dict[str, str]:
        return self._load_secrets()


class ServiceKind:
    """One kind of service the lab runs; see the module docstring for what each method says."""

    #: The kind's name: in ``config.services``, in the state file, and ``lab.<name>``.
    name: ClassVar[str]
    #: What ``lab.<name>`` is when the lab has none of it.
    empty: ClassVar[Any] = None
    #: Credentials the kind needs, by name, and how to make a fresh one.
    secrets: ClassVar[Mapping[str, Callable[[], str]]] = {}
    #: More ``lab.<name>`` attributes: each is a method ``name(handle, lab)`` of the kind.
    accessors: ClassVar[tuple[str, ...]] = ()

    def wanted(self, config: LabConfig, saved: Any) -> bool:
        """At ``up``: build this kind (asked for in the config, or already running)."""
        return self.name in config.services or saved is not None

    def build(self, ctx: BuildContext, saved: Any) -> Any:
        """The kind's handle, built by the method named after the provider."""
        builder = getattr(self, ctx.provider.name, None)
        if builder is None:
            raise ServiceError(f"{self.name} cannot run on the {ctx.provider.name} provider; "
                               f"leave it out of services, or choose another provider")
        return builder(ctx, saved)

    def members(self, handle: Any) -> list[Any]:
        """What in the handle starts and stops, in start order."""
        if not handle:
            return []
        return list(handle) if isinstance(handle, list) else [handle]

    def state(self, handle: Any) -> Any:
        """What the state file keeps, for ``build`` to reattach from (as ``saved``)."""
        return handle.to_state()

    def access(self, handle: Any, lab: "Lab") -> Any:
        """What ``lab.<name>`` returns."""
        return handle

    def env(self, handle: Any, lab: "Lab") -> dict[str, str]:
        """Connection settings as environment variables (``labkit env``)."""
        return {}

    def after_up(self, handle: Any, lab: "Lab") -> None:
        """Once every server answers: connect what joins two kinds (Toxiproxy's links)."""

    def status_rows(self, handle: Any, lab: "Lab") -> list[dict[str, Any]]:
        """One row per server: name, ok, address, version (and lag)."""
        rows: list[dict[str, Any]] = []
        for m in self.members(handle):
            h = m.health()
            rows += h if isinstance(h, list) else [h]
        return rows

    def topology(self, handle: Any, lab: "Lab") -> list[str]:
        """Lines that draw what runs where (``lab.topology()``)."""
        return []

    def warnings(self, handle: Any, lab: "Lab") -> list[str]:
        """What is not as ``up`` left it, each with what puts it back (``labkit status``)."""
        return []

    def reset(self, handle: Any, lab: "Lab", dry_run: bool) -> list[str]:
        """Put the kind back to its starting state; one line per step (done, or to do)."""
        return []
