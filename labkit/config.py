"""LabConfig: the one configuration object of the lab.

Precedence, highest first: an argument to ``LabConfig.load(...)`` > a ``LABKIT_<FIELD>``
environment variable > a key in ``lab.toml`` > the default below. Building blocks never read
the environment themselves; they are handed a ``LabConfig``.

>>> cfg = LabConfig.load(followers=2)
>>> cfg.followers
2
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ALL_SERVICES = ("postgres", "memcached", "rabbitmq", "cassandra")
DEFAULT_SERVICES = ("postgres", "memcached", "rabbitmq")
CASSANDRA_TOPOLOGIES = ("single", "ring", "regions")
SYNCHRONOUS_COMMIT_MODES = ("off", "local", "remote_apply")


class ConfigError(ValueError):
    """A configuration value is wrong; the message says which and how to fix it."""


def _default_lab_dir() -> Path:
    # As root the servers run under an unprivileged account, which cannot traverse /root.
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/labkit/lab")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "labkit" / "lab"


def _default_cache_dir() -> Path:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/cache/labkit")
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "labkit"


def _find_pg_bin_dir() -> str:
    """Where PostgreSQL 15's server binaries are (Debian keeps them off PATH)."""
    candidates = [
        "/usr/lib/postgresql/15/bin",  # Debian / Ubuntu
        "/opt/homebrew/opt/postgresql@15/bin",  # macOS, Apple silicon
        "/usr/local/opt/postgresql@15/bin",  # macOS, Intel
    ]
    for c in candidates:
        if Path(c, "postgres").exists():
            return c
    found = shutil.which("postgres")
    return str(Path(found).resolve().parent) if found else candidates[0]


def _find_rabbitmq_server() -> str:
    # Debian's /usr/sbin/rabbitmq-server is a wrapper that insists on the `rabbitmq` account;
    # the real script beside it honours our environment and runs as any user.
    for c in ("/usr/lib/rabbitmq/bin/rabbitmq-server",
              "/opt/homebrew/sbin/rabbitmq-server", "/usr/local/sbin/rabbitmq-server"):
        if Path(c).exists():
            return c
    return shutil.which("rabbitmq-server") or "rabbitmq-server"


@dataclass(frozen=True)
class LabConfig:
    """Everything the lab needs to know, built once and passed down.

    >>> LabConfig.load(services=("memcached",)).services
    ('memcached',)
    """

    lab_dir: Path = field(default_factory=_default_lab_dir)
    cache_dir: Path = field(default_factory=_default_cache_dir)
    services: tuple[str, ...] = DEFAULT_SERVICES
    followers: int = 1
    memcached_instances: int = 1
    memcached_memory_mb: int = 64
    # 0 lets the OS pick free ports; otherwise ports are taken from here upwards, skipping busy ones.
    port_base: int = 0
    host: str = "127.0.0.1"
    # Account the servers run under when labkit runs as root.
    service_user: str = "labkit"
    synchronous_commit: str = "local"
    startup_timeout_s: float = 120.0
    pg_bin_dir: str = field(default_factory=_find_pg_bin_dir)
    memcached_bin: str = field(default_factory=lambda: shutil.which("memcached") or "memcached")
    rabbitmq_server_bin: str = field(default_factory=_find_rabbitmq_server)
    epmd_bin: str = field(default_factory=lambda: shutil.which("epmd") or "epmd")
    # Cassandra joins the lab when a topology is named (or "cassandra" is among the services).
    cassandra: str = ""
    cassandra_heap_mb: int = 512
    java_bin: str = "java"
    mvn_bin: str = "mvn"

    def __post_init__(self) -> None:
        unknown = [s for s in self.services if s not in ALL_SERVICES]
        if unknown:
            raise ConfigError(
                f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(ALL_SERVICES)}"
            )
        if self.cassandra and self.cassandra not in CASSANDRA_TOPOLOGIES:
            raise ConfigError(f"cassandra={self.cassandra!r}: choose a topology from "
                              f"{', '.join(CASSANDRA_TOPOLOGIES)}")
        if "cassandra" in self.services and not self.cassandra:
            object.__setattr__(self, "cassandra", "single")
        if self.cassandra and "cassandra" not in self.services:
            object.__setattr__(self, "services", (*self.services, "cassandra"))
        if not 0 <= self.followers <= 8:
            raise ConfigError(f"followers={self.followers}: choose 0 to 8 followers")
        if not 1 <= self.memcached_instances <= 16:
            raise ConfigError(f"memcached_instances={self.memcached_instances}: choose 1 to 16")
        if self.synchronous_commit not in SYNCHRONOUS_COMMIT_MODES:
            raise ConfigError(
                f"synchronous_commit={self.synchronous_commit!r}: choose one of "
                f"{', '.join(SYNCHRONOUS_COMMIT_MODES)}"
            )
        if not self.host.startswith("127."):
            raise ConfigError(f"host={self.host!r}: the lab binds to loopback only (127.0.0.x)")
        if self.port_base and not 1024 <= self.port_base <= 65000:
            raise ConfigError(f"port_base={self.port_base}: choose 1024..65000, or 0 for any free port")

    @property
    def state_file(self) -> Path:
        return self.lab_dir / "state.json"

    @classmethod
    def load(cls, toml_path: str | os.PathLike | None = None,
             environ: Mapping[str, str] | None = None, **overrides: Any) -> "LabConfig":
        """Build the config: ``overrides`` > ``LABKIT_*`` environment > ``lab.toml`` > defaults.

        ``lab.toml`` is looked up at ``toml_path``, else ``$LABKIT_CONFIG``, else ``./lab.toml``.
        Its keys are the field names, at top level or under a ``[lab]`` table.
        """
        environ = os.environ if environ is None else environ
        path = Path(toml_path or environ.get("LABKIT_CONFIG") or "lab.toml")
        values: dict[str, Any] = {}
        if path.is_file():
            with open(path, "rb") as f:
                data = tomllib.load(f)
            values.update(data.get("lab", data))
        for f in fields(cls):
            env_value = environ.get(f"LABKIT_{f.name.upper()}")
            if env_value is not None and env_value != "":
                values[f.name] = env_value
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {', '.join(unknown)} (from {path if path.is_file() else 'arguments'});"
                f" known settings: {', '.join(sorted(known))}"
            )
        return cls(**{k: _coerce(cls, k, v) for k, v in values.items() if k in known})

    def replace(self, **changes: Any) -> "LabConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (str(v) if isinstance(v, Path) else v)
                for f in fields(self) for v in [getattr(self, f.name)]}


def _coerce(cls: type, name: str, value: Any) -> Any:
    """Turn a string from the environment (or a TOML value) into the field's type."""
    default = {f.name: f for f in fields(cls)}[name]
    kind = default.type if isinstance(default.type, str) else getattr(default.type, "__name__", "")
    try:
        if kind == "Path":
            return Path(value).expanduser()
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind.startswith("tuple"):
            if isinstance(value, str):
                return tuple(s.strip() for s in value.split(",") if s.strip())
            return tuple(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"setting {name}={value!r} is not a valid {kind}: {e}") from None
    return value
