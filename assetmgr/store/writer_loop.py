"""The writer process: reads results from the reader, commits them with `Writer`, reports.

It owns the only writing Valkey connection of the daemon, opened here after the process started
and writes only while it holds the lease; otherwise it is a hot standby that keeps
the view of the disk (rejections, sync state) and discards writes, asking for a full rescan
when it takes over. While Valkey is unreachable it keeps the newest result per path, up to a
bound beyond which it drops them and rescans once Valkey is back; it retries with capped,
jittered backoff. A one-shot run gives up after `connect_timeout` instead (exit 3).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import redis
from redis.exceptions import ClusterError, RedisClusterException

from assetmgr import logs, metrics
from assetmgr.exitcodes import ExitCode
from assetmgr.memory import Ceiling
from assetmgr.messages import (
    Finish,
    Outcome,
    Plan,
    Report,
    ReportKind,
    SyncPoint,
)
from assetmgr.store.connection import Client, Link, ValkeyMisconfigured, ValkeyUnavailable, one_line
from assetmgr.store.lease import Lease, Turn
from assetmgr.store.writer import Pending, Writer, WriterOptions, log_plan

log = logging.getLogger("assetmgr.writer")

MARKER_CHECK = 2.0  # seconds between checks that Valkey still holds our last sync
PENDING_MAX_BYTES = 128 * 1024**2
DENIED_PAUSE = 1.0  # seconds before a write Valkey denied (OOM, ACL) is tried again
# Errors after which the batch is retried on a fresh connection.
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, ClusterError, RedisClusterException)
UNACKED_PAUSE = 0.2  # seconds before a batch too few replicas acknowledged is sent again


class WriterLoop:
    def __init__(self, inbox: Connection, outbox: Connection, opts: WriterOptions) -> None:
        self.inbox = inbox
        self.outbox = outbox
        self.opts = opts
        self.plan = Plan()
        self.pending = Pending()
        self.syncs: list[SyncPoint] = []
        self.writer = Writer.configured(opts)
        self.link = Link(opts.endpoint, opts.connect_timeout, log)
        self.counts: dict[str, int] = {}
        self.live: set[str] = set()  # paths whose valid content Valkey holds
        self.finished = False
        self.stopped: Report | None = None  # why a run that cannot stand by must end now
        self.locked_out = False  # Valkey will not let us in: credentials, TLS
        self.needs_rescan = False
        self.synced_run_id: str | None = None
        self.next_marker_check = 0.0
        self.ceiling = Ceiling()
        self.hydrated = False  # per-path lines are debug until the first full sync is done
        self.paused_until = 0.0  # after Valkey denied a write: retry then
        self.unacked_since: float | None = None  # replicas have not acknowledged since then
        self.failing_since: float | None = None  # no batch has committed since then

    @property
    def lease(self) -> Lease:
        """The writer's lease, which keeps its own state: this loop only asks it."""
        return self.writer.lease

    @property
    def leader(self) -> bool:
        return self.lease.held

    # -- connection and lease ---------------------------------------------------------------

    def _online(self, client: Client, now: float) -> None:
        self.writer.bind(client)  # the same writer and lease token, reconnected
        self.next_marker_check = 0.0
        if self.leader and not self.lease.renew(now):
            self._step_down("the lease expired while Valkey was unreachable")

    def tick_lease(self, now: float) -> None:
        """Renew the lease when due, or (a standby) try to take it; report a change of role.
        A run that cannot stand by took the lease at start, or stopped when it lost it."""
        turn = self.lease.step(now, take=self.opts.policy.standby)
        if turn is Turn.LOST:
            self._step_down("lease lost")
        elif turn is Turn.TOOK and self._took_lease() and self.needs_rescan:
            self._request_rescan("took over the writer lease")

    def _took_lease(self) -> bool:
        """Fence out older writers before the first commit; False when a newer one has."""
        try:
            newer = self.writer.raise_fences()
        except BaseException:
            self.lease.drop()  # not a leader until the fences are up: the next try redoes it
            raise
        if newer:
            self._step_down(f"a newer writer holds the fences: {newer}")
            return False
        metrics.LEADER.set(1)
        log.log(
            logging.DEBUG if self.opts.policy.quiet else logging.INFO,
            "holding the writer lease",
            extra={"holder": self.lease.identity, "epoch": self.lease.epoch},
        )
        self._report(ReportKind.ROLE)
        return True

    def _step_down(self, why: str) -> None:
        holder = self.lease.holder()
        log.warning("standing by: %s", why, extra={"holder": str(holder) if holder else "-"})
        self.lease.drop()
        metrics.LEADER.set(0)
        if not self.opts.policy.standby:
            self._stop(Outcome.REFUSED, f"lost the writer lease during the run: {why}")
            return
        self._drop_pending()
        self._report(ReportKind.ROLE)

    def _stop(self, outcome: Outcome, error: str) -> None:
        self.stopped = Report(self.plan, outcome, error)

    def _drop_pending(self) -> None:
        """Forget buffered writes (standby, or over the memory bound); a rescan will redo them."""
        if self.pending.drop_writes():
            self.needs_rescan = True

    def _request_rescan(self, why: str) -> None:
        log.warning("requesting a full rescan: %s", why)
        self.needs_rescan = False
        self._report(ReportKind.RESCAN)

    def check_marker(self, now: float) -> None:
        """Detect a Valkey that lost our keyspace (FLUSHALL, restart, empty failover)."""
        if now < self.next_marker_check or self.synced_run_id is None:
            return
        self.next_marker_check = now + MARKER_CHECK
        lost = self.writer.keyspace_lost()
        if lost:
            self.synced_run_id = None
            self._request_rescan(lost)

    # -- input and commits ------------------------------------------------------------------

    def receive(self, timeout: float) -> None:
        """Take what waits on the inbox (up to a batch) into the pending set."""
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
                self.pending.add(item)
                taken += 1
        # Over the bound, a run that reports can drop the writes: a rescan it asks for redoes them.
        if self.pending.bytes > PENDING_MAX_BYTES and self.opts.policy.reports:
            log.error(
                "write buffer over %d MiB; dropping it until Valkey is back",
                PENDING_MAX_BYTES >> 20,
            )
            self._drop_pending()
        metrics.QUEUE_DEPTH.labels("write").set(len(self.pending))

    def flush(self, now: float) -> None:
        if not self.leader and not self.opts.dry_run:
            self._standby_flush()
            return
        items = list(self.pending.items.values())
        rejected_before = self.writer.rejected_paths()
        for i in range(0, len(items), self.opts.batch_size):
            chunk = items[i : i + self.opts.batch_size]
            done = self.writer.apply(chunk)
            if self._not_committed(done, now):
                return
            self.pending.remove(chunk)
            self.failing_since = None
            self._record(done, rejected_before)
        self.unacked_since = None
        while self.syncs:
            sync = self.syncs[0]  # dropped once recorded: a cut connection retries it whole
            pruned = self.writer.prune(sync, self.opts.batch_size) if sync.prune else Plan()
            if self._not_committed(pruned, now):
                return
            if pruned.refused:
                log.error("prune refused: %s", pruned.refused)
            self._record(pruned)
            self.writer.forget_rejected(sync)
            self.live.intersection_update(sync.paths)
            self.writer.mark_synced()
            self.synced_run_id = self.writer.run_id()
            self.syncs.pop(0)
            self.hydrated = True
            self._report(ReportKind.SYNCED)
        self._after_flush(rejected_before)

    def _not_committed(self, done: Plan, now: float) -> bool:
        """A fenced commit steps down; an unacknowledged one is retried. Both stay pending."""
        if done.fenced:
            self._step_down(f"commit fenced: {done.fenced}")
        elif done.unacked:
            self._unacked(done.unacked, now)
        return bool(done.fenced or done.unacked)

    def _unacked(self, count: int, now: float) -> None:
        """Too few replicas acknowledged: the batch stays pending and is sent again soon; a
        run that does not retry gives up after connect_timeout."""
        if self.unacked_since is None:
            self.unacked_since = now
            log.warning(
                "%d writes not acknowledged by %d replicas; retrying",
                count,
                self.opts.min_replicas_ack,
            )
        if not self.opts.policy.retries and now - self.unacked_since > self.opts.connect_timeout:
            self._stop(
                Outcome.VALKEY_FAILED,
                f"fewer than {self.opts.min_replicas_ack} replicas acknowledged the writes",
            )
        self.paused_until = now + UNACKED_PAUSE

    def _standby_flush(self) -> None:
        """Not the leader: keep the view of the disk, write nothing."""
        rejected_before = self.writer.rejected_paths()
        if self.writer.observe(self.pending.take()):
            self.needs_rescan = True
        while self.syncs:
            self.syncs.pop(0)
            self.hydrated = True
            self._report(ReportKind.SYNCED)
        self._after_flush(rejected_before)

    def _after_flush(self, rejected_before: dict[str, str]) -> None:
        rejected = self.writer.rejected_paths()
        if rejected != rejected_before:
            self._report(ReportKind.STATUS)
        metrics.QUEUE_DEPTH.labels("write").set(len(self.pending))
        metrics.ASSETS.labels("valid").set(len(self.live))
        metrics.ASSETS.labels("invalid").set(len(rejected))

    def _record(self, done: Plan, was_rejected: dict[str, str] | None = None) -> None:
        """A run that reports as it goes keeps counts only; one that does not keeps the whole
        plan for its final report."""
        log_plan(done, self.opts.policy.quiet, was_rejected or {}, bulk=not self.hydrated)
        for key, value in done.counts().items():
            self.counts[key] = self.counts.get(key, 0) + value
        self.live.update(done.added + done.updated + done.unchanged)
        self.live.difference_update(done.deleted)
        if self.opts.policy.reports:
            self.plan.refused = done.refused or self.plan.refused
        else:
            self.plan.merge(done)

    def _report(self, kind: ReportKind) -> None:
        if not self.opts.policy.reports:
            return
        rejected = self.writer.rejected
        # The plan's counts are cumulative; "valid" and "invalid" are what holds now.
        counts = {**self.counts, "valid": len(self.live), "invalid": len(rejected)}
        role = "leader" if self.leader else "standby"
        report = Report(Plan(), kind=kind, rejected=rejected, counts=counts, role=role)
        _send(self.outbox.send, report)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> Report:
        try:
            if not self.opts.policy.standby:
                self._take_lease_first(time.monotonic() + self.opts.connect_timeout)
            while self.stopped is None and not (
                self.finished and not self.pending and not self.syncs
            ):
                self.step()
        except ValkeyUnavailable as e:
            self.locked_out = True
            return Report(self.plan, Outcome.VALKEY_FAILED, str(e))
        except ValkeyMisconfigured as e:
            return Report(self.plan, Outcome.MISCONFIGURED, str(e))
        except redis.RedisError as e:  # refused outside a batch (the lease under OOM, …)
            return Report(
                self.plan, Outcome.VALKEY_FAILED, f"Valkey refused a command: {one_line(e)}"
            )
        finally:
            self._release()
            self.link.close()
        if self.stopped is not None:
            return self.stopped
        refused = bool(self.plan.refused and not self.opts.policy.reports)
        outcome = Outcome.REFUSED if refused else Outcome.DONE
        return Report(self.plan, outcome, self.plan.refused, rejected=self.writer.rejected)

    def _take_lease_first(self, deadline: float) -> None:
        """Connect and take the lease, through cut connections, until `deadline`: a run
        that cannot stand by holds the lease before it reads its input, or refuses."""
        while True:
            try:
                self._online(self.link.wait_online(deadline), time.monotonic())
                if not self.opts.dry_run:
                    self._wait_lease()
                return
            except TRANSIENT as e:
                self.link.lost(f"lost the Valkey connection: {one_line(e)}")
                if time.monotonic() > deadline:
                    raise ValkeyUnavailable(f"cannot reach Valkey: {one_line(e)}") from None

    def _wait_lease(self) -> None:
        if self.lease.wait(self.opts.policy.wait_lease):
            self._took_lease()
            return
        holder = self.lease.holder()
        self._stop(
            Outcome.REFUSED, f"another writer holds the lease ({holder}); try --wait-lease SECONDS"
        )

    def step(self, now: float | None = None) -> None:
        """One iteration: take input (waiting a moment for it), then act as of `now`."""
        self.receive(0.05 if self.pending else 0.2)
        now = time.monotonic() if now is None else now
        try:
            if not self.link.online:
                client = self.link.retry(now)
                if client is None:
                    metrics.QUEUE_DEPTH.labels("write").set(len(self.pending))
                    return
                self._online(client, now)
            if not self.opts.dry_run:
                self.tick_lease(now)
            if self.leader:
                self.check_marker(now)
            if (self.pending or self.syncs) and now >= self.paused_until:
                self.flush(now)
                self.ceiling.check()
        except redis.ResponseError as e:
            # Valkey refused a command (an ACL without a needed command, OOM): the writes
            # stay pending; a run that does not retry reports it, one that does pauses.
            if not self.opts.policy.retries:
                raise ValkeyUnavailable(f"Valkey refused the write: {one_line(e)}") from None
            log.error("Valkey refused the write, retrying: %s", one_line(e))
            self.paused_until = now + DENIED_PAUSE
        except TRANSIENT as e:
            # The cut batch stays pending and is sent again whole on a new connection (the
            # commit scripts are idempotent). In a cluster, a failover or a slot migration
            # that outlasts redis-py's own retries ("TTL exhausted") is the same: reconnect,
            # which re-reads the slot map. A run that does not retry gives up once nothing
            # committed for connect_timeout, even while reconnecting works (a slot stuck
            # half migrated).
            reason = f"lost the Valkey connection: {one_line(e)}"
            self.link.lost(reason, now)
            if not self.opts.policy.retries:
                self.failing_since = self.failing_since or now
                if now - self.failing_since > self.opts.connect_timeout:
                    raise ValkeyUnavailable(reason) from None
                client = self.link.wait_online(time.monotonic() + self.opts.connect_timeout)
                self._online(client, time.monotonic())

    def _release(self) -> None:
        if self.leader:
            with contextlib.suppress(redis.RedisError):
                self.lease.release()


def serve(inbox: Connection, outbox: Connection, opts: WriterOptions) -> None:
    """Process entry point (spawned)."""
    logs.setup(opts.log_format, opts.log_level)
    logs.name_process("writer")
    metrics.prime("writer")
    # The reader ends the input; SIGINT/SIGTERM to the whole group must not cut a batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    loop = WriterLoop(inbox, outbox, opts)
    report = loop.run()
    _send(outbox.send, report)
    code = opts.policy.exit_code(report.outcome, loop.locked_out)
    if code is not None:  # a boot error: the supervisor stops instead of restarting it
        log.error("configuration error: %s" if code is ExitCode.USAGE else "%s", report.error)
        raise SystemExit(code)


def _send(send: Callable[[Any], None], report: Report) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):
        send(report)
