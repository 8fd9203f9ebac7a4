"""The one-shot commands — verify, hydrate, get, status — and how they print their results."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

import orjson
import redis
from redis.exceptions import RedisClusterException

from assetmgr.client import AssetClient, IntegrityError
from assetmgr.commands import oneshot
from assetmgr.config import Config
from assetmgr.exitcodes import ExitCode
from assetmgr.limits import Limits
from assetmgr.messages import Outcome, Plan, Rejected, Result, UnchangedPaths
from assetmgr.pipeline import engines, tree
from assetmgr.pipeline.schemas import Registry
from assetmgr.pipeline.worker import fingerprint
from assetmgr.printable import shown
from assetmgr.store.connection import ValkeyMisconfigured, checked, one_line, redact
from assetmgr.store.lookups import StoredHashes
from assetmgr.store.tls import TlsHandshakeError
from assetmgr.store.writer import WriterOptions

log = logging.getLogger("assetmgr")

EXIT_FOR = {
    Outcome.DONE: ExitCode.OK,
    Outcome.VALKEY_FAILED: ExitCode.VALKEY,
    Outcome.REFUSED: ExitCode.REFUSED,
    Outcome.MISCONFIGURED: ExitCode.USAGE,
}


def _discard(_: Sequence[Result] | UnchangedPaths) -> None:
    pass


def verify(cfg: Config, registry: Registry, limits: Limits) -> int:
    problem = tree.root_problem(cfg.root)
    if problem and "empty" not in problem:
        sys.stderr.write(f"assetmgr: configuration error: {problem}\n")
        return ExitCode.USAGE
    progress = oneshot.Progress(sys.stderr.isatty() and cfg.format == "text")
    found = oneshot.evaluate_tree(cfg.root, registry, limits, cfg.workers, _discard, progress)
    rejected = sorted(found.rejected.values(), key=lambda r: r.path)
    sys.stdout.write(_verify_text(cfg, found, rejected, registry))
    return ExitCode.INVALID if rejected else ExitCode.OK


def _verify_text(
    cfg: Config, found: oneshot.Evaluation, rejected: list[Rejected], registry: Registry
) -> str:
    if cfg.format == "json":
        doc = {
            "ok": not rejected,
            "checked": len(found.paths),
            "valid": found.valid,
            "invalid": [
                {"path": shown(r.path), "code": r.code, "reason": r.reason} for r in rejected
            ],
            "schemas": _schemas_report(registry),
        }
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"
    if cfg.format == "github":
        lines = [
            f"::error file={_gh_property(os.path.join(cfg.root, shown(r.path)))},"
            f"title=assetmgr {r.code}::{_gh_data(shown(r.path) + ': ' + r.reason)}"
            for r in rejected
        ]
        return "".join(line + "\n" for line in lines)
    lines = [f"{shown(r.path)}: {r.reason}" for r in rejected]
    lines.append(f"{len(found.paths)} checked: {found.valid} valid, {len(rejected)} invalid")
    return "\n".join(lines) + "\n"


def _schemas_report(registry: Registry) -> dict[str, dict[str, str]]:
    """Which dialect and engine (with its version) check each kind."""
    return {
        kind: {
            "file": schema.name,
            "dialect": schema.dialect,
            "engine": schema.engine,
            "engine_version": engines.version(schema.engine).rpartition(" ")[2],
        }
        for kind, schema in sorted(registry.schemas.items())
    }


def _gh_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_property(text: str) -> str:
    return _gh_data(text).replace(":", "%3A").replace(",", "%2C")


def hydrate(cfg: Config, registry: Registry, limits: Limits) -> int:
    problem = tree.root_problem(cfg.root)
    if problem and not cfg.allow_mass_delete:
        sys.stderr.write(f"assetmgr: refused: {problem} (--allow-mass-delete overrides)\n")
        return ExitCode.REFUSED
    progress = oneshot.Progress(sys.stderr.isatty())
    lookup = _stored_hashes(cfg, fingerprint(registry, limits))
    result = oneshot.hydrate(
        cfg.root,
        registry,
        limits,
        cfg.workers,
        WriterOptions.from_config(cfg, oneshot=True),
        not cfg.no_prune,
        progress,
        lookup,
    )
    plan, report = result.report.plan, result.report
    for path, reason in sorted(plan.invalid.items()):
        log.warning("rejected", extra={"path": shown(path), "reason": reason})
    if cfg.dry_run:
        sys.stdout.write(_plan_text(plan))
    counts = " ".join(f"{k}={v}" for k, v in plan.counts().items())
    seconds = result.evaluation.seconds
    rate = len(result.evaluation.paths) / seconds if seconds else 0.0
    log.info(
        f"{'dry run' if cfg.dry_run else 'hydrate'}: {len(result.evaluation.paths)} files in "
        f"{seconds:.2f}s ({rate:,.0f}/s): {counts}"
    )
    if report.outcome is not Outcome.DONE:
        prefix = {Outcome.REFUSED: "refused", Outcome.MISCONFIGURED: "configuration error"}.get(
            report.outcome, "error"
        )
        sys.stderr.write(f"assetmgr: {prefix}: {report.error}\n")
        return EXIT_FOR[report.outcome]
    return ExitCode.INVALID if plan.invalid else ExitCode.OK


def _stored_hashes(cfg: Config, vfp: str) -> tree.Lookup:
    """The scan's hint of what Valkey holds; none when Valkey cannot be asked (the writer
    reports why)."""
    try:
        reads = StoredHashes.connect(cfg.endpoint, cfg.keyspace, vfp, cfg.connect_timeout)
    except VALKEY_ERRORS:
        return oneshot.ColdAware(lambda paths: {})
    return oneshot.ColdAware(reads)


def _plan_text(plan: Plan) -> str:
    lines = []
    for title, paths in (
        ("added", plan.added),
        ("updated", plan.updated),
        ("deleted", plan.deleted),
        ("unchanged", plan.unchanged),
    ):
        lines.append(f"{title} ({len(paths)}):")
        lines += [f"  {shown(p)}" for p in sorted(paths)]
    lines.append(f"invalid ({len(plan.invalid)}):")
    lines += [f"  {shown(p)}: {reason}" for p, reason in sorted(plan.invalid.items())]
    if plan.refused:
        lines.append(f"refused: {plan.refused}")
    return "\n".join(lines) + "\n"


def get(cfg: Config, path: str) -> int:
    try:
        client = checked(cfg.endpoint, cfg.connect_timeout, "assetmgr-client")
        asset = AssetClient(client, keyspace=cfg.keyspace).get(path)
    except VALKEY_ERRORS as e:
        return _valkey_failed(cfg, e)
    except IntegrityError as e:
        sys.stderr.write(f"assetmgr: {e}\n")
        return ExitCode.VALKEY
    if asset is None:
        sys.stderr.write(f"assetmgr: {path}: no such asset in Valkey\n")
        return ExitCode.INVALID
    sys.stdout.buffer.write(asset.data)
    sys.stdout.flush()
    return ExitCode.OK


def status(cfg: Config, registry: Registry, limits: Limits) -> int:
    from assetmgr.commands.drift import compare

    try:
        drift = compare(cfg, registry, limits)
    except VALKEY_ERRORS as e:
        return _valkey_failed(cfg, e)
    if cfg.values.get("format") == "json":
        sys.stdout.write(orjson.dumps(drift.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(drift.text())
    return ExitCode.OK if drift.synced else ExitCode.INVALID


# What a read-only command can meet: unreachable, refused (a cluster that is down, an ACL),
# or not the topology the settings name.
VALKEY_ERRORS = (redis.RedisError, RedisClusterException, ValkeyMisconfigured)


def _valkey_failed(cfg: Config, error: BaseException) -> int:
    reason = one_line(error)
    if isinstance(error, ValkeyMisconfigured):
        sys.stderr.write(f"assetmgr: configuration error: {reason}\n")
        return ExitCode.USAGE
    if isinstance(error, TlsHandshakeError):
        sys.stderr.write(f"assetmgr: Valkey at {redact(cfg.valkey_url)}: {reason}\n")
        return ExitCode.VALKEY
    if isinstance(error, redis.ResponseError):
        sys.stderr.write(f"assetmgr: Valkey at {redact(cfg.valkey_url)} refused: {reason}\n")
        return ExitCode.VALKEY
    sys.stderr.write(f"assetmgr: cannot reach Valkey at {redact(cfg.valkey_url)}: {reason}\n")
    return ExitCode.VALKEY
