"""The writer process: reads results from the reader, commits them with `Writer`, reports.

It owns the only writing Valkey connection of the daemon, opened here after the process started
(STYLE §6). While Valkey is unreachable it keeps the newest result per path (memory bounded by
the number of paths) and retries with capped, jittered backoff; a one-shot run gives up after
`connect_timeout` instead.
"""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import redis

from . import logs, metrics
from .connection import connect, redact
from .keyspace import Keyspace
from .worker import Accepted, Rejected
from .writer import Delete, Fenced, Finish, Guard, Plan, SyncPoint, Writer

log = logging.getLogger("assetmgr.writer")

EXIT_OK, EXIT_VALKEY, EXIT_REFUSED = 0, 3, 4
BACKOFF_MAX = 5.0


@dataclass(frozen=True)
class WriterOptions:
    url: str
    password: str | None
    prefix: str = ""
    connect_timeout: float = 5.0
    guard: Guard = field(default_factory=Guard)
    dry_run: bool = False
    batch_size: int = 256
    oneshot: bool = True
    log_format: str = "text"
    log_level: str = "INFO"


@dataclass
class Report:
    """Sent to the supervisor: the plan so far, and why the writer stopped, if it did."""

    plan: Plan
    exit_code: int = EXIT_OK
    error: str | None = None
    kind: str = "summary"  # at the end; in a daemon also "synced" (full sync) and "status"
    rejected: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


class WriterLoop:
    def __init__(self, inbox: Connection, outbox: Connection, opts: WriterOptions) -> None:
        self.inbox = inbox
        self.outbox = outbox
        self.opts = opts
        self.plan = Plan()
        self.pending: dict[str, Accepted | Rejected | Delete] = {}
        self.syncs: list[SyncPoint] = []
        self.writer: Writer | None = None
        self.counts: dict[str, int] = {}
        self.live: set[str] = set()  # paths whose valid content Valkey holds
        self.finished = False
        self._down_logged = False

    def connect(self, deadline: float | None) -> Writer:
        """Connect, retrying with backoff until `deadline` (None = forever)."""
        delay = 0.1
        while True:
            try:
                client = connect(
                    self.opts.url, password=self.opts.password, timeout=self.opts.connect_timeout
                )
                client.ping()
                metrics.VALKEY_UP.set(1)
                if self._down_logged:
                    log.info("valkey reachable again", extra={"url": redact(self.opts.url)})
                self._down_logged = False
                return Writer(
                    client, Keyspace(self.opts.prefix), self.opts.guard, dry_run=self.opts.dry_run
                )
            except redis.AuthenticationError as e:
                raise ValkeyFailure(f"Valkey refused the credentials: {_clean(e)}") from None
            except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                metrics.VALKEY_UP.set(0)
                reason = f"cannot reach Valkey at {redact(self.opts.url)}: {_clean(e)}"
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise ValkeyFailure(reason) from None
                if not self._down_logged:
                    log.error(reason + "; retrying")
                    self._down_logged = True
                time.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, BACKOFF_MAX)

    def receive(self, timeout: float) -> None:
        """Take everything waiting on the inbox (up to a batch) into the pending set."""
        if not self.inbox.poll(timeout):
            return
        taken = 0
        while taken < self.opts.batch_size and self.inbox.poll(0):
            try:
                message = self.inbox.recv()
            except EOFError:
                self.finished = True
                return
            if isinstance(message, Finish):
                self.finished = True
                return
            if isinstance(message, SyncPoint):
                self.syncs.append(message)
                return  # commit what came before it, then prune
            for item in message:
                previous = self.pending.get(item.path)
                if previous is None or item.seq >= previous.seq:
                    self.pending[item.path] = item
                taken += 1
        metrics.QUEUE_DEPTH.labels("write").set(len(self.pending))

    def _record(self, done: Plan) -> None:
        """A one-shot run keeps the whole plan for its report; a daemon keeps counts only."""
        _log_plan(done, self.opts.oneshot)
        for key, value in done.counts().items():
            self.counts[key] = self.counts.get(key, 0) + value
        self.live.update(done.added + done.updated + done.unchanged)
        self.live.difference_update(done.deleted)
        if self.opts.oneshot:
            self.plan.merge(done)
        else:
            self.plan.refused = done.refused or self.plan.refused

    def flush(self, writer: Writer) -> None:
        items = list(self.pending.values())
        rejected_before = dict(writer.rejected)
        for i in range(0, len(items), self.opts.batch_size):
            chunk = items[i : i + self.opts.batch_size]
            done = writer.apply(chunk)
            for item in chunk:
                self.pending.pop(item.path, None)
            self._record(done)
        metrics.QUEUE_DEPTH.labels("write").set(len(self.pending))
        while self.syncs:
            sync = self.syncs.pop(0)
            pruned = writer.prune(sync, self.opts.batch_size) if sync.prune else Plan()
            if pruned.refused:
                log.error("prune refused: %s", pruned.refused)
            self._record(pruned)
            self.live.intersection_update(sync.paths)
            writer.mark_synced()
            self._report(writer, "synced")
        if writer.rejected != rejected_before:
            self._report(writer, "status")
        metrics.ASSETS.labels("valid").set(len(self.live))
        metrics.ASSETS.labels("invalid").set(len(writer.rejected))

    def _report(self, writer: Writer, kind: str) -> None:
        if not self.opts.oneshot:
            counts = {"valid": len(self.live), "invalid": len(writer.rejected), **self.counts}
            report = Report(Plan(), kind=kind, rejected=dict(writer.rejected), counts=counts)
            _send(self.outbox.send, report)

    def run(self) -> Report:
        deadline = time.monotonic() + self.opts.connect_timeout if self.opts.oneshot else None
        try:
            writer = self.connect(deadline)
            while True:
                self.receive(0.05 if self.pending else 0.5)
                if self.pending or self.syncs:
                    try:
                        self.flush(writer)
                    except (redis.ConnectionError, redis.TimeoutError) as e:
                        if self.opts.oneshot:
                            raise ValkeyFailure(f"write failed: {_clean(e)}") from None
                        log.error("lost Valkey connection: %s", _clean(e))
                        metrics.VALKEY_UP.set(0)
                        self._down_logged = True
                        writer = self.connect(None)
                if self.finished and not self.pending and not self.syncs:
                    break
        except ValkeyFailure as e:
            return Report(self.plan, EXIT_VALKEY, str(e))
        except Fenced as e:
            return Report(self.plan, EXIT_REFUSED, f"lost the writer lease: {e}")
        code = EXIT_REFUSED if self.plan.refused and self.opts.oneshot else EXIT_OK
        return Report(self.plan, code, self.plan.refused, rejected=dict(writer.rejected))


class ValkeyFailure(Exception):
    pass


def _clean(error: BaseException) -> str:
    return " ".join(str(error).split())


def _log_plan(plan: Plan, oneshot: bool) -> None:
    """One line per committed change; a one-shot run logs them at debug and sums up instead."""
    level = logging.DEBUG if oneshot else logging.INFO
    for outcome, paths in (
        ("added", plan.added),
        ("updated", plan.updated),
        ("deleted", plan.deleted),
    ):
        for path in paths:
            log.log(level, outcome, extra={"path": path, "outcome": outcome})


def serve(inbox: Connection, outbox: Connection, opts: WriterOptions) -> None:
    """Process entry point (spawned)."""
    logs.setup(opts.log_format, opts.log_level)
    logs.name_process("writer")
    metrics.prime("writer")
    # The reader ends the input; SIGINT/SIGTERM to the whole group must not cut a batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    report = WriterLoop(inbox, outbox, opts).run()
    _send(outbox.send, report)


def _send(send: Callable[[Any], None], report: Report) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):
        send(report)
