"""LabConfig: the one configuration object of the lab.

Precedence, highest first: an argument to ``LabConfig.load(...)`` > a ``LABKIT_<FIELD>``
environment variable > a key in ``lab.toml`` > the default below. Building blocks never read
the environment themselves; they are handed a ``LabConfig``.

Every field is checked by type and range (pydantic does the checking: ``followers = 1.7`` or
``host = 127`` is an error, never silently coerced). A bad value raises ``ConfigError`` naming
the key, where the value came from (an argument, which ``LABKIT_*`` variable, which TOML file)
and what to put there instead. A ``LABKIT_*`` variable that is no setting warns
(``ConfigWarning``); a ``LABKIT_CONFIG`` naming a missing file is an error, because running on
with the defaults would act on another lab than the one the user pointed at (``labkit down
--purge`` included).

>>> cfg = LabConfig.load(followers=2)
>>> cfg.followers
2
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import pwd
import re
import shutil
import warnings
from dataclasses import asdict, field, fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any, Mapping, get_args

from pydantic import ConfigDict, Field, ValidationError, field_validator
from pydantic.dataclasses import dataclass

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ALL_SERVICES = ("postgres", "memcached", "rabbitmq", "cassandra")
DEFAULT_SERVICES = ("postgres", "memcached", "rabbitmq")
CASSANDRA_TOPOLOGIES = ("single", "ring", "regions")
SYNCHRONOUS_COMMIT_MODES = ("off", "local", "remote_apply")
# Who runs the servers (labkit.providers): the installed binaries, servers that run elsewhere,
# or containers on a Docker engine.
PROVIDERS = ("native", "external", "docker")

ENV_PREFIX = "LABKIT_"
# LABKIT_* variables that are the lab's own and no setting: LABKIT_CONFIG, the markers `spawn`
# puts in every server's environment, what the grader hands its kernels, and what `labkit env`
# prints (tests/test_config.py checks that every LABKIT_* name of `Lab.env()` is covered).
LAB_VARIABLES = re.compile(
    r"LABKIT_(CONFIG|LAB_ID|SERVER_DIR|PROCESS|GRADE(_\w+)?|LEADER_DSN|FOLLOWER\d+_DSN"
    r"|MEMCACHED_SERVERS|BROKER_URL|CQLSH_CREDENTIALS|CASSANDRA_(?!HEAP_MB$)[A-Z0-9_]+)")


class ConfigError(ValueError):
    """A configuration value is wrong; the message says which and how to fix it."""


class ConfigWarning(UserWarning):
    """A configuration input is ignored (an unknown ``LABKIT_*`` variable)."""


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


def _hint(text: str) -> Any:
    """Field metadata: what the setting is and which values it takes (used in every error)."""
    return Field(description=text)


Program = Annotated[str, Field(min_length=1, description="a program name or path")]

# Where the default ports of the servers are (an external endpoint may leave its port out).
DEFAULT_PORTS = {"memcached": 11211, "cassandra": 9042}


def split_endpoint(text: str, default_port: int) -> tuple[str, int]:
    """``"host:port"`` (or ``"host"``, or ``"[v6]:port"``) as (host, port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or "]" in port or (host.count(":") and not host.startswith("[")):
        host, port = text.strip(), str(default_port)  # no port, or a bare IPv6 address
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port (e.g. \"10.0.0.7:{default_port}\")")
    return host, int(port)


def _endpoints(values: Any, default_port: int) -> Any:
    for v in values or ():
        split_endpoint(str(v), default_port)
    return values


def _dsn(value: str | None) -> str | None:
    if value is None:
        return value
    from psycopg.conninfo import conninfo_to_dict  # only when an external lab is configured
    try:
        params = conninfo_to_dict(value)
    except Exception as e:
        raise ValueError(f"not a libpq connection string or postgresql:// URL "
                         f"({str(e).strip()})") from None
    if not params.get("host"):
        raise ValueError("it names no host (e.g. \"postgresql://user:password@10.0.0.5:5432/"
                         "postgres\")")
    return value


_TOPOLOGY = ("a topology's clusters: a table of region = [\"host:9042\", ...], e.g. "
             "{ us = [\"10.0.1.1:9042\"], eu = [\"10.0.2.1:9042\"] }")


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ExternalCassandra:
    """``[external.cassandra]``: the login, and each topology's contact points by region.

    ``ring = { us = ["10.0.1.1:9042", "10.0.1.2:9042"] }``; ``regions = { us = [...],
    eu = [...] }`` (one cluster per region); ``single`` likewise. A notebook asking for a
    topology gets the clusters named under it.
    """

    user: Annotated[str, Field(min_length=1, description="the Cassandra role to log in as")]
    password: Annotated[str, Field(description="its password")]
    single: Annotated[dict[str, tuple[str, ...]] | None, Field(description=_TOPOLOGY)] = None
    ring: Annotated[dict[str, tuple[str, ...]] | None, Field(description=_TOPOLOGY)] = None
    regions: Annotated[dict[str, tuple[str, ...]] | None, Field(description=_TOPOLOGY)] = None

    @field_validator("single", "ring", "regions")
    @classmethod
    def _regions(cls, v: dict[str, tuple[str, ...]] | None) -> Any:
        for region, points in (v or {}).items():
            if not re.fullmatch(r"[a-z][a-z0-9_]*", region):
                raise ValueError(f"region {region!r}: use lower-case letters, digits and _")
            if not points:
                raise ValueError(f"region {region!r} names no contact point; give host:port")
            _endpoints(points, DEFAULT_PORTS["cassandra"])
        return v

    def topology(self, name: str) -> dict[str, list[tuple[str, int]]] | None:
        """{region: [(host, port), ...]} of topology ``name``, or None if lab.toml names none."""
        regions = getattr(self, name, None)
        if regions is None:
            return None
        return {r: [split_endpoint(p, DEFAULT_PORTS["cassandra"]) for p in points]
                for r, points in regions.items()}


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ExternalServers:
    """``[external]`` in lab.toml: servers that run elsewhere, for ``provider = "external"``.

    >>> ExternalServers(leader="postgresql://lab:pw@10.0.0.5/postgres",
    ...                 memcached=("10.0.0.7:11211",)).memcached
    ('10.0.0.7:11211',)
    """

    leader: Annotated[str | None, Field(description=(
        "the PostgreSQL leader: a libpq DSN or postgresql:// URL, with user and password"))] = None
    followers: Annotated[tuple[str, ...], Field(description=(
        "its streaming replicas: DSNs or URLs, as the leader"))] = ()
    memcached: Annotated[tuple[str, ...], Field(description="memcached servers, host:port")] = ()
    broker_url: Annotated[str | None, Field(description=(
        "RabbitMQ: amqp://user:password@host:5672/vhost (amqps:// for TLS)"))] = None
    cassandra: Annotated[ExternalCassandra | None, Field(description=(
        "[external.cassandra]: user, password, and single/ring/regions = { region = "
        "[\"host:9042\", ...] }"))] = None

    @field_validator("leader")
    @classmethod
    def _leader(cls, v: str | None) -> str | None:
        return _dsn(v)

    @field_validator("followers")
    @classmethod
    def _followers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for dsn in v:
            _dsn(dsn)
        return v

    @field_validator("memcached")
    @classmethod
    def _memcached(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _endpoints(v, DEFAULT_PORTS["memcached"])

    @field_validator("broker_url")
    @classmethod
    def _broker(cls, v: str | None) -> str | None:
        from urllib.parse import urlsplit
        if v is not None:
            url = urlsplit(v)
            if url.scheme not in ("amqp", "amqps") or not url.hostname:
                raise ValueError("not an AMQP URL (e.g. \"amqp://user:password@10.0.0.9:5672/"
                                 "vhost\")")
        return v


@dataclass(frozen=True, config=ConfigDict(extra="forbid", allow_inf_nan=False))
class LabConfig:
    """Everything the lab needs to know, built once and passed down.

    >>> LabConfig.load(services=("memcached",)).services
    ('memcached',)
    """

    lab_dir: Annotated[Path, _hint(
        "the lab's own directory (new or empty at the first `up`, which marks it)")] = field(
        default_factory=_default_lab_dir)
    cache_dir: Annotated[Path, _hint("a directory for downloads (Cassandra's jars)")] = field(
        default_factory=_default_cache_dir)
    provider: Annotated[str, _hint(
        f"who runs the servers: one of {', '.join(PROVIDERS)}")] = "native"
    services: Annotated[tuple[str, ...], _hint(
        f"servers to start: some of {', '.join(ALL_SERVICES)} (a TOML list, or "
        "comma-separated in LABKIT_SERVICES)")] = DEFAULT_SERVICES
    followers: Annotated[int, Field(ge=0, le=8, description=(
        "PostgreSQL followers: a whole number, choose 0 to 8 followers"))] = 1
    memcached_instances: Annotated[int, Field(ge=1, le=16, description=(
        "memcached instances: a whole number, choose 1 to 16"))] = 1
    memcached_memory_mb: Annotated[int, Field(ge=8, le=65536, description=(
        "memory per memcached instance in MB: a whole number from 8 to 65536"))] = 64
    # 0 lets the OS pick free ports; otherwise ports are taken from here upwards, skipping busy ones.
    port_base: Annotated[int, _hint(
        "first port to try: choose 1024..65000, or 0 for any free port")] = 0
    host: Annotated[str, _hint(
        "the address servers bind to: loopback only, 127.0.0.1 (or another 127.x.y.z)")] = (
        "127.0.0.1")
    # Account the servers run under when labkit runs as root.
    service_user: Annotated[str, _hint(
        "the unprivileged account servers run under when labkit runs as root (created when "
        "missing); never root")] = "labkit"
    synchronous_commit: Annotated[str, _hint(
        f"how leader commits wait: choose one of {', '.join(SYNCHRONOUS_COMMIT_MODES)}")] = (
        "local")
    startup_timeout_s: Annotated[float, Field(gt=0, le=3600, description=(
        "seconds a server may take to start: more than 0, at most 3600"))] = 120.0
    pg_bin_dir: Annotated[str, Field(min_length=1, description=(
        "the directory of PostgreSQL 15's server binaries (postgres, initdb)"))] = field(
        default_factory=_find_pg_bin_dir)
    memcached_bin: Program = field(
        default_factory=lambda: shutil.which("memcached") or "memcached")
    rabbitmq_server_bin: Program = field(default_factory=_find_rabbitmq_server)
    epmd_bin: Program = field(default_factory=lambda: shutil.which("epmd") or "epmd")
    # Cassandra joins the lab when a topology is named (or "cassandra" is among the services).
    cassandra: Annotated[str, _hint(
        f"Cassandra topology: empty for none, or one of {', '.join(CASSANDRA_TOPOLOGIES)}")] = ""
    cassandra_heap_mb: Annotated[int, Field(ge=256, le=65536, description=(
        "heap per Cassandra node in MB: a whole number from 256 to 65536"))] = 512
    java_bin: Program = "java"
    mvn_bin: Program = "mvn"
    # The regions topology: Toxiproxy links between the regions (labkit.services.regions).
    toxiproxy_bin: Program = field(
        default_factory=lambda: shutil.which("toxiproxy-server") or "toxiproxy-server")
    region_delay_ms: Annotated[float, Field(ge=0, le=5000, description=(
        "one-way delay between two regions in ms (a round trip pays it twice): 0 to 5000"))] = 40.0
    local_delay_ms: Annotated[float, Field(ge=0, le=5000, description=(
        "one-way delay from a region's clients to its own cluster in ms: 0 to 5000"))] = 0.0
    docker_host: Annotated[str, _hint(
        "the Docker engine's address (unix:///path or tcp://host:port); default DOCKER_HOST, "
        "else unix:///var/run/docker.sock")] = field(
        default_factory=lambda: os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
    # The servers an external lab points at (provider = "external"): lab.toml's [external].
    external: Annotated[ExternalServers | None, _hint(
        "the servers that run elsewhere, for provider = \"external\": an [external] table in "
        "lab.toml naming leader, followers, memcached, broker_url and [external.cassandra]")] = None

    # -- checks beyond type and range (each error says what to choose) -----------------------
    @field_validator("followers", "memcached_instances", "memcached_memory_mb", "port_base",
                     "startup_timeout_s", "cassandra_heap_mb", mode="before")
    @classmethod
    def _no_booleans(cls, v: Any) -> Any:
        if isinstance(v, bool):  # pydantic's lax mode would read true as 1
            raise ValueError("a number is needed, not true/false")
        return v

    @field_validator("docker_host")
    @classmethod
    def _docker_host(cls, v: str) -> str:
        if not re.fullmatch(r"(unix://|tcp://|ssh://|npipe://)\S+", v):
            raise ValueError(f"{v!r} is not an engine address: unix:///var/run/docker.sock, "
                             "or tcp://host:2375")
        return v

    @field_validator("external", mode="before")
    @classmethod
    def _table(cls, v: Any) -> Any:
        if isinstance(v, str):
            raise ValueError("the external servers are a table: name them in lab.toml's "
                             "[external] (leader = ..., memcached = [...]), not in a string")
        return v

    @field_validator("lab_dir", "cache_dir", mode="before")
    @classmethod
    def _path(cls, v: Any) -> Any:
        if isinstance(v, str):
            if not v.strip():  # Path("") is the working directory: never a lab's by accident
                raise ValueError("an empty path")
            return Path(v).expanduser()
        return v.expanduser() if isinstance(v, Path) else v

    @field_validator("services", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            return tuple(s.strip() for s in v.split(",") if s.strip())
        return v

    @field_validator("services")
    @classmethod
    def _known_services(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [s for s in v if s not in ALL_SERVICES]
        if unknown:
            raise ValueError(f"unknown service(s) {', '.join(unknown)}; "
                             f"choose from {', '.join(ALL_SERVICES)}")
        if not v:
            raise ValueError(f"no service named; choose from {', '.join(ALL_SERVICES)}")
        return tuple(dict.fromkeys(v))

    @field_validator("port_base")
    @classmethod
    def _port(cls, v: int) -> int:
        if v and not 1024 <= v <= 65000:
            raise ValueError(f"port {v} is out of range; choose 1024..65000, or 0 for any free port")
        return v

    @field_validator("host")
    @classmethod
    def _loopback(cls, v: str) -> str:
        try:
            loopback = ipaddress.IPv4Address(v).is_loopback
        except ValueError:
            raise ValueError(f"{v!r} is not an IPv4 address; the lab binds to loopback only "
                             "(127.0.0.x)") from None
        if not loopback:
            raise ValueError(f"{v} is not a loopback address; the lab binds to loopback only "
                             "(127.0.0.x)")
        return v

    @field_validator("service_user")
    @classmethod
    def _unprivileged(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", v):
            raise ValueError(f"{v!r} is not an account name (lower-case letters, digits, _ and -)")
        try:
            uid = pwd.getpwnam(v).pw_uid
        except KeyError:
            uid = None  # created at `up` when labkit runs as root
        if v == "root" or uid == 0:
            raise ValueError(f"{v!r} is a root account; servers never run as root")
        return v

    @field_validator("synchronous_commit")
    @classmethod
    def _sync_mode(cls, v: str) -> str:
        return _one_of(v, SYNCHRONOUS_COMMIT_MODES, "one")

    @field_validator("provider")
    @classmethod
    def _provider(cls, v: str) -> str:
        return _one_of(v, PROVIDERS, "a provider")

    @field_validator("cassandra")
    @classmethod
    def _topology(cls, v: str) -> str:
        return _one_of(v, CASSANDRA_TOPOLOGIES, "a topology") if v else v

    def __post_init__(self) -> None:
        # Cassandra is asked for either way: by service name, or by naming a topology.
        if "cassandra" in self.services and not self.cassandra:
            object.__setattr__(self, "cassandra", "single")
        if self.cassandra and "cassandra" not in self.services:
            object.__setattr__(self, "services", (*self.services, "cassandra"))

    # -- public API --------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.lab_dir / "state.json"

    @classmethod
    def load(cls, toml_path: str | os.PathLike | None = None,
             environ: Mapping[str, str] | None = None, **overrides: Any) -> "LabConfig":
        """Build the config: ``overrides`` > ``LABKIT_*`` environment > ``lab.toml`` > defaults.

        ``lab.toml`` is read from ``toml_path``, else ``$LABKIT_CONFIG`` (both must exist), else
        ``./lab.toml`` if there is one. Its keys are the field names, at top level or under a
        ``[lab]`` table.
        """
        environ = os.environ if environ is None else environ
        known = [f.name for f in fields(cls)]
        values: dict[str, Any] = {}
        origins: dict[str, str] = {}
        path = _toml_path(toml_path, environ)
        if path is not None:
            for name, value in _read_toml(path).items():
                if name not in known:
                    raise ConfigError(f"unknown setting {name!r} in {path}{_did_you_mean(name, known)}; "
                                      f"known settings: {', '.join(sorted(known))}")
                values[name], origins[name] = value, str(path)
        for var, value in environ.items():
            if not var.startswith(ENV_PREFIX):
                continue
            name = var[len(ENV_PREFIX):].lower()
            if name in known:
                if value != "":
                    values[name], origins[name] = value, var
            elif not LAB_VARIABLES.fullmatch(var):
                warnings.warn(
                    f"environment variable {var} is not a labkit setting and is ignored"
                    f"{_did_you_mean(name, known, prefix=ENV_PREFIX)}; settings are "
                    f"{ENV_PREFIX}<NAME> for NAME in {', '.join(n.upper() for n in known)}",
                    ConfigWarning, stacklevel=2)
        for name, value in overrides.items():
            if value is None:
                continue
            if name not in known:
                raise ConfigError(f"unknown setting {name!r} (argument)"
                                  f"{_did_you_mean(name, known)}; known settings: "
                                  f"{', '.join(sorted(known))}")
            values[name], origins[name] = value, "argument"
        return cls._validated(values, origins)

    @classmethod
    def _validated(cls, values: dict[str, Any], origins: dict[str, str]) -> "LabConfig":
        try:
            cfg = cls(**values)
        except ValidationError as e:
            raise ConfigError(_explain(cls, e, values, origins)) from None
        _check_external(cfg, origins)
        object.__setattr__(cfg, "_origins", dict(origins))  # frozen: set once, here
        return cfg

    def origin(self, name: str) -> str:
        """Where setting ``name`` came from: "default", a lab.toml path, a variable, "argument"."""
        return getattr(self, "_origins", {}).get(name, "default")

    def replace(self, **changes: Any) -> "LabConfig":
        """A copy with ``changes`` applied (checked like arguments to ``load``)."""
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        unknown = sorted(set(changes) - set(current))
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)} (argument to replace); "
                              f"known settings: {', '.join(sorted(current))}")
        return self._validated({**current, **changes},
                               {**getattr(self, "_origins", {}),
                                **{name: "argument to replace()" for name in changes}})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (str(v) if isinstance(v, Path) else asdict(v) if is_dataclass(v) else v)
                for f in fields(self) for v in [getattr(self, f.name)]}


def _one_of(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise ValueError(f"{value!r}: choose {what} from {', '.join(choices)}")
    return value


def _check_external(cfg: LabConfig, origins: dict[str, str]) -> None:
    """With provider = "external", lab.toml's [external] must name every server asked for."""
    if cfg.provider != "external":
        return

    def said(name: str) -> str:
        return f"{name} = {getattr(cfg, name)!r} ({origins.get(name, 'default')})"

    ext = cfg.external
    if ext is None:
        raise ConfigError(
            f"{said('provider')} needs the servers it points at: add an [external] table to "
            "lab.toml naming leader, followers, memcached, broker_url and [external.cassandra] "
            "(see the README's external provider section), or choose provider = \"native\"")
    problems = []
    if "postgres" in cfg.services:
        if not ext.leader:
            problems.append("services has postgres, but [external] names no leader: add "
                            "leader = \"postgresql://user:password@host:5432/postgres\", or "
                            "leave postgres out of services")
        if cfg.followers > len(ext.followers):
            problems.append(f"{said('followers')}, but [external] names {len(ext.followers)} "
                            "follower(s): add their DSNs to followers = [...] in [external], "
                            f"or ask for {len(ext.followers)}")
    if "memcached" in cfg.services and cfg.memcached_instances > len(ext.memcached):
        problems.append(f"{said('memcached_instances')}, but [external] names "
                        f"{len(ext.memcached)} memcached server(s): add them to memcached = "
                        "[\"host:11211\", ...] in [external], or ask for fewer")
    if "rabbitmq" in cfg.services and not ext.broker_url:
        problems.append("services has rabbitmq, but [external] names no broker_url: add "
                        "broker_url = \"amqp://user:password@host:5672/vhost\", or leave "
                        "rabbitmq out of services")
    if cfg.cassandra and (ext.cassandra is None or ext.cassandra.topology(cfg.cassandra) is None):
        problems.append(f"{said('cassandra')}, but lab.toml names no {cfg.cassandra} under "
                        "[external.cassandra]: add user, password and "
                        f"{cfg.cassandra} = {{ us = [\"host:9042\"] }} there")
    if problems:
        raise ConfigError("the external provider lacks servers:\n  " + "\n  ".join(problems))


# ------------------------------------------------------------------------------- loading

def _toml_path(toml_path: str | os.PathLike | None, environ: Mapping[str, str]) -> Path | None:
    """The TOML file to read: an explicit path or $LABKIT_CONFIG must exist; ./lab.toml may."""
    if toml_path is not None:
        path, source = Path(toml_path), "the toml_path argument"
    elif environ.get("LABKIT_CONFIG"):
        path, source = Path(environ["LABKIT_CONFIG"]).expanduser(), "LABKIT_CONFIG"
    else:
        path = Path("lab.toml")
        return path if path.is_file() else None
    if not path.is_file():
        raise ConfigError(
            f"{source} names {path}, which is not a file; create it, fix the path, or "
            f"{'unset LABKIT_CONFIG' if source == 'LABKIT_CONFIG' else 'pass None'} "
            "to use ./lab.toml and the defaults")
    return path


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}; fix that line "
                          "(syntax: https://toml.io)") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}; fix its permissions or "
                          "point LABKIT_CONFIG elsewhere") from None
    table = data.get("lab", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: `lab` must be a table ([lab]) of settings")
    if table is not data:
        # [external] may stand beside [lab] (or within it, as [lab.external]).
        extra = set(data) - {"lab", "external"}
        if extra:
            raise ConfigError(f"unknown setting(s) {', '.join(sorted(extra))} in {path}, outside "
                              "[lab]; put every setting under [lab] (or none)")
        if "external" in data:
            table = {**table, "external": data["external"]}
    return table


def _did_you_mean(name: str, known: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {prefix}{close[0].upper() if prefix else close[0]}?)" if close else ""


def _hint_at(cls: Any, loc: tuple[Any, ...]) -> str:
    """The description of the field at ``loc`` (or of the nearest table holding it)."""
    hint = ""
    for part in loc:
        field_info = getattr(cls, "__pydantic_fields__", {}).get(str(part))
        if field_info is None:
            break
        hint = field_info.description or hint
        tables = [t for t in (field_info.annotation, *get_args(field_info.annotation))
                  if hasattr(t, "__pydantic_fields__")]
        cls = tables[0] if tables else None
    return hint


def _explain(cls: type, error: ValidationError, values: dict[str, Any],
             origins: dict[str, str]) -> str:
    """One line per bad value: the key and value, where it came from, what is wrong, the fix."""
    lines = []
    for err in error.errors():
        name = str(err["loc"][0]) if err["loc"] else ""
        value = values.get(name, err.get("input"))
        origin = origins.get(name, "default")
        if len(err["loc"]) > 1:  # within a table: [external] leader, [external.cassandra] ...
            value = err.get("input")
            name = ".".join(str(part) for part in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        msg = msg[:1].lower() + msg[1:]
        if origin.startswith(ENV_PREFIX):
            where, fix = f"{origin}={value!r} (environment variable)", f"set or unset {origin}"
        elif origin in ("argument", "argument to replace()", "default"):
            where, fix = f"{name}={value!r} ({origin})", "pass another value"
        else:
            where, fix = f"{name} = {value!r} in {origin}", f"edit {origin}"
        if err["type"] == "missing":  # a table without a key it must have
            where, msg = f"{name} (in {origin})", "missing"
        lines.append(f"{where}: {msg}. {name}: {_hint_at(cls, err['loc'])}; {fix}.")
    return "bad setting" + ("s:\n  " if len(lines) > 1 else ": ") + "\n  ".join(lines)
