"""The writer process: reads results from the reader, commits them with `Writer`, reports.

It owns the only writing Valkey connection of the daemon, opened here after the process started
(STYLE §6), and writes only while it holds the lease; otherwise it is a hot standby that keeps
the view of the disk (rejections, sync state) and discards writes, asking for a full rescan
when it takes over. While Valkey is unreachable it keeps the newest result per path, up to a
bound beyond which it drops them and rescans once Valkey is back; it retries with capped,
jittered backoff. A one-shot run gives up after `connect_timeout` instead (exit 3).
"""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import redis

from . import logs, metrics
from .connection import connect, redact
from .keyspace import Keyspace
from .lease import Lease
from .worker import Accepted, Rejected
from .writer import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_VALKEY,
    Fenced,
    Finish,
    Item,
    Plan,
    Report,
    SyncPoint,
    Writer,
    WriterOptions,
)

log = logging.getLogger("assetmgr.writer")

BACKOFF_MAX = 5.0
MARKER_CHECK = 2.0  # seconds between checks that Valkey still holds our last sync
PENDING_MAX_BYTES = 128 * 1024**2
STANDBY_TOKEN = "!"  # never a lease value: a stray commit from a standby is fenced too


class ValkeyFailure(Exception):
    pass


class WriterLoop:
    def __init__(self, inbox: Connection, outbox: Connection, opts: WriterOptions) -> None:
        self.inbox = inbox
        self.outbox = outbox
        self.opts = opts
        self.plan = Plan()
        self.pending: dict[str, Item] = {}
        self.pending_bytes = 0
        self.syncs: list[SyncPoint] = []
        self.writer = Writer(None, Keyspace(opts.prefix), opts.guard, dry_run=opts.dry_run)
        if not opts.oneshot:
            self.writer.token = STANDBY_TOKEN
        self.lease: Lease | None = None
        self.counts: dict[str, int] = {}
        self.live: set[str] = set()  # paths whose valid content Valkey holds
        self.finished = False
        self.needs_rescan = False
        self.synced_run_id: str | None = None
        self.next_marker_check = 0.0
        self._down_logged = False
        self.online = False
        self.hydrated = False  # per-path lines are debug until the first full sync is done
        self.next_attempt = 0.0
        self.delay = 0.1

    @property
    def leader(self) -> bool:
        return self.lease is not None and self.lease.held

    # -- connection and lease ---------------------------------------------------------------

    def _attempt(self) -> redis.Redis | str:
        """One try: a connected client, or why not. Bad credentials are final."""
        try:
            # A probe bounded by connect_timeout, then the writing connection, whose replies
            # (a large batch) may take longer.
            probe = connect(
                self.opts.url, password=self.opts.password, timeout=self.opts.connect_timeout
            )
            probe.ping()
            probe.close()
            client = connect(
                self.opts.url,
                password=self.opts.password,
                timeout=self.opts.connect_timeout,
                reply_timeout=max(self.opts.connect_timeout, 30.0),
            )
            client.ping()
            return client
        except redis.AuthenticationError as e:
            raise ValkeyFailure(f"Valkey refused the credentials: {_clean(e)}") from None
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            return f"cannot reach Valkey at {redact(self.opts.url)}: {_clean(e)}"

    def connect(self, deadline: float) -> None:
        """Connect, retrying with backoff until `deadline` (a one-shot run), else fail."""
        delay = 0.1
        while isinstance(outcome := self._attempt(), str):
            self._offline(outcome)
            if time.monotonic() + delay > deadline:
                raise ValkeyFailure(outcome)
            time.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, BACKOFF_MAX)
        self._online(outcome)

    def reconnect(self, now: float) -> bool:
        """A daemon's non-blocking retry: input keeps being read while Valkey is away."""
        if now < self.next_attempt:
            return False
        outcome = self._attempt()
        if isinstance(outcome, str):
            self._offline(outcome)
            self.next_attempt = now + self.delay * random.uniform(0.5, 1.0)
            self.delay = min(self.delay * 2, BACKOFF_MAX)
            return False
        self._online(outcome)
        return True

    def _offline(self, reason: str) -> None:
        self.online = False
        metrics.VALKEY_UP.set(0)
        if not self._down_logged:
            log.error(reason + "; retrying")
            self._down_logged = True

    def _online(self, client: redis.Redis) -> None:
        self.online = True
        self.delay = 0.1
        metrics.VALKEY_UP.set(1)
        if self._down_logged:
            log.warning("Valkey reachable again", extra={"url": redact(self.opts.url)})
        self._down_logged = False
        self.writer.rebind(client)
        self.next_marker_check = 0.0
        if self.lease is None:
            self.lease = Lease(client, self.writer.ks.lease, self.opts.lease_ttl)
            return
        self.lease.rebind(client)  # the same writer and token, reconnected
        if self.leader and not self.lease.renew():
            self._step_down("the lease expired while Valkey was unreachable")

    def tick_lease(self, now: float) -> None:
        """Renew the lease when due, or try to take it; report a change of role."""
        assert self.lease is not None
        if self.leader:
            if now >= self.lease.next_renew and not self.lease.renew(now):
                self._step_down("lease lost")
            return
        if now < self.lease.next_renew:
            return
        if not self.lease.acquire(now):
            self.lease.next_renew = now + min(self.lease.renew_every, 0.5)
            return
        self.writer.token = self.lease.token
        metrics.LEADER.set(1)
        log.info("holding the writer lease", extra={"holder": self.lease.token.rsplit(":", 1)[0]})
        self._report("role")
        if self.needs_rescan:
            self._request_rescan("took over the writer lease")

    def _step_down(self, why: str) -> None:
        assert self.lease is not None
        holder = self.lease.holder()
        log.warning("standing by: %s", why, extra={"holder": str(holder) if holder else "-"})
        self.lease.held = False
        self.writer.token = STANDBY_TOKEN
        metrics.LEADER.set(0)
        self._drop_pending()
        self._report("role")

    def _drop_pending(self) -> None:
        """Forget buffered writes (standby, or over the memory bound); a rescan will redo them."""
        kept: dict[str, Item] = {p: r for p, r in self.pending.items() if isinstance(r, Rejected)}
        if len(kept) != len(self.pending):
            self.needs_rescan = True
        self.pending = kept
        self.pending_bytes = 0

    def _request_rescan(self, why: str) -> None:
        log.warning("requesting a full rescan: %s", why)
        self.needs_rescan = False
        self._report("rescan")

    def check_marker(self, now: float) -> None:
        """Detect a Valkey that lost our keyspace (FLUSHALL, restart, empty failover)."""
        if now < self.next_marker_check or self.synced_run_id is None:
            return
        self.next_marker_check = now + MARKER_CHECK
        marker = self.writer.marker_run_id()
        if marker is None:
            metrics.DATA_LOSS.inc()
            log.error("Valkey lost the asset keyspace (sync marker gone); re-hydrating")
            self.synced_run_id = None
            self._request_rescan("data loss in Valkey")
        elif marker != self.writer.run_id():
            log.warning("Valkey restarted (run_id changed); reconciling")
            self.synced_run_id = None
            self._request_rescan("Valkey restarted")

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
                self._buffer(item)
                taken += 1
        if self.pending_bytes > PENDING_MAX_BYTES and not self.opts.oneshot:
            log.error(
                "write buffer over %d MiB; dropping it until Valkey is back",
                PENDING_MAX_BYTES >> 20,
            )
            self._drop_pending()
        metrics.QUEUE_DEPTH.labels("write").set(len(self.pending))

    def _buffer(self, item: Item) -> None:
        previous = self.pending.get(item.path)
        if previous is not None and item.seq < previous.seq:
            return
        if isinstance(previous, Accepted):
            self.pending_bytes -= len(previous.blob)
        if isinstance(item, Accepted):
            self.pending_bytes += len(item.blob)
        self.pending[item.path] = item

    def flush(self) -> None:
        if not self.leader and not self.opts.dry_run:
            self._standby_flush()
            return
        items = list(self.pending.values())
        rejected_before = dict(self.writer.rejected)
        for i in range(0, len(items), self.opts.batch_size):
            chunk = items[i : i + self.opts.batch_size]
            done = self.writer.apply(chunk)
            for item in chunk:
                self.pending.pop(item.path, None)
            self._record(done, rejected_before)
        self.pending_bytes = 0
        while self.syncs:
            sync = self.syncs[0]  # dropped once recorded: a cut connection retries it whole
            pruned = self.writer.prune(sync, self.opts.batch_size) if sync.prune else Plan()
            if pruned.refused:
                log.error("prune refused: %s", pruned.refused)
            self._record(pruned)
            self.live.intersection_update(sync.paths)
            self.writer.mark_synced()
            self.synced_run_id = self.writer.run_id()
            self.syncs.pop(0)
            self.hydrated = True
            self._report("synced")
        self._after_flush(rejected_before)

    def _standby_flush(self) -> None:
        """Not the leader: keep the view of the disk, write nothing."""
        rejected_before = dict(self.writer.rejected)
        for item in self.pending.values():
            if isinstance(item, Rejected):
                self.writer.rejected[item.path] = item.reason
            else:
                self.writer.rejected.pop(item.path, None)
                self.needs_rescan = True
        self.pending.clear()
        self.pending_bytes = 0
        while self.syncs:
            self.syncs.pop(0)
            self.hydrated = True
            self._report("synced")
        self._after_flush(rejected_before)

    def _after_flush(self, rejected_before: dict[str, str]) -> None:
        if self.writer.rejected != rejected_before:
            self._report("status")
        metrics.QUEUE_DEPTH.labels("write").set(len(self.pending))
        metrics.ASSETS.labels("valid").set(len(self.live))
        metrics.ASSETS.labels("invalid").set(len(self.writer.rejected))

    def _record(self, done: Plan, was_rejected: dict[str, str] | None = None) -> None:
        """A one-shot run keeps the whole plan for its report; a daemon keeps counts only."""
        done.log(self.opts.oneshot, was_rejected or {}, bulk=not self.hydrated)
        for key, value in done.counts().items():
            self.counts[key] = self.counts.get(key, 0) + value
        self.live.update(done.added + done.updated + done.unchanged)
        self.live.difference_update(done.deleted)
        if self.opts.oneshot:
            self.plan.merge(done)
        else:
            self.plan.refused = done.refused or self.plan.refused

    def _report(self, kind: str) -> None:
        if self.opts.oneshot:
            return
        # The plan's counts are cumulative; "valid" and "invalid" are what holds now.
        counts = {**self.counts, "valid": len(self.live), "invalid": len(self.writer.rejected)}
        role = "leader" if self.leader else "standby"
        report = Report(
            Plan(), kind=kind, rejected=dict(self.writer.rejected), counts=counts, role=role
        )
        _send(self.outbox.send, report)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> Report:
        try:
            if self.opts.oneshot:
                self.connect(time.monotonic() + self.opts.connect_timeout)
                if not self.opts.dry_run:
                    self._oneshot_lease()
            while not (self.finished and not self.pending and not self.syncs):
                self.step()
        except ValkeyFailure as e:
            return Report(self.plan, EXIT_VALKEY, str(e))
        except redis.RedisError as e:  # refused outside a batch (the lease under OOM, …)
            return Report(self.plan, EXIT_VALKEY, f"Valkey refused a command: {_clean(e)}")
        except (Fenced, LeaseBusy) as e:
            return Report(self.plan, EXIT_REFUSED, str(e))
        finally:
            self._release()
        code = EXIT_REFUSED if self.plan.refused and self.opts.oneshot else EXIT_OK
        return Report(self.plan, code, self.plan.refused, rejected=dict(self.writer.rejected))

    def _oneshot_lease(self) -> None:
        assert self.lease is not None
        if not self.lease.wait(self.opts.wait_lease):
            holder = self.lease.holder()
            raise LeaseBusy(f"another writer holds the lease ({holder}); try --wait-lease SECONDS")
        self.writer.token = self.lease.token

    def step(self) -> None:
        self.receive(0.05 if self.pending else 0.2)
        now = time.monotonic()
        if not self.online and not self.reconnect(now):
            metrics.QUEUE_DEPTH.labels("write").set(len(self.pending))
            return
        try:
            if not self.opts.dry_run:
                self.tick_lease(now)
                if self.opts.oneshot and not self.leader:
                    raise Fenced("lost the writer lease during the run")
            if self.leader:
                self.check_marker(now)
            if self.pending or self.syncs:
                self.flush()
        except Fenced as e:
            if self.opts.oneshot:
                raise
            self._step_down(f"commit fenced: {e}")
        except redis.ResponseError as e:
            # Valkey refused a command (an ACL without a needed command, OOM): the writes
            # stay pending; a one-shot run reports it, a daemon retries after a pause.
            if self.opts.oneshot:
                raise ValkeyFailure(f"Valkey refused the write: {_clean(e)}") from None
            log.error("Valkey refused the write, retrying: %s", _clean(e))
            time.sleep(1.0)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            # The cut batch stays pending and is sent again whole on a new connection (the
            # commit scripts are idempotent); a one-shot run gives up after connect_timeout.
            self._offline(f"lost the Valkey connection: {_clean(e)}")
            if self.opts.oneshot:
                self.connect(time.monotonic() + self.opts.connect_timeout)
            else:
                self.next_attempt = now

    def _release(self) -> None:
        if self.leader and self.lease is not None:
            with contextlib.suppress(redis.RedisError):
                self.lease.release()


class LeaseBusy(Exception):
    pass


def _clean(error: BaseException) -> str:
    return " ".join(str(error).split())


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
