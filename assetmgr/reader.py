"""The reader process: turns file events and scans into tasks, and results into writes.

Per path it keeps a sequence number (the CLOCK_MONOTONIC ns at which it was marked dirty, so
it doubles as the event time for the propagation metric), at most one task in flight (events
that arrive meanwhile coalesce into one re-read), a settle deadline for files still being
written, and a hold for deletes, which are confirmed against the disk before they are sent.
`step(now)` is one loop iteration with an injectable clock (STYLE §7).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

from . import metrics, schemas, tree
from .client import AssetClient
from .connection import Endpoint
from .messages import Delete, Finish, Missing, Result, SyncPoint
from .pool import Pool
from .schemas import Registry, SchemaError
from .watcher import (
    DIR_IN,
    DIR_OUT,
    DIRTY,
    GONE,
    OVERFLOW,
    RESCAN_DIR,
    ROOT_LOST,
    SCHEMAS,
    SETTLE,
    Change,
    Watches,
)
from .worker import Limits, fingerprint

log = logging.getLogger("assetmgr.reader")

LIMITED_RESCAN = 30.0  # seconds between full rescans while the watch limit is hit
ROOT_POLL = 1.0
# A path rewritten while it was being read is in a burst (a shell loop, a log-style writer):
# read it again once it has been quiet this long, or at the latest BURST_MAX after the burst
# was noticed, so a burst makes a few writes instead of one per worker round trip.
BURST_QUIET = 0.05
BURST_MAX = 1.0
LOOKUP_CHUNK = 1000


@dataclass(frozen=True)
class ReaderOptions:
    root: str
    schemas: str
    rules: tuple[tuple[str, str], ...] = ()
    validators: dict[str, list[str]] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    workers: int = 2
    delete_hold: float = 0.3
    settle: float = 2.0
    reconcile_interval: float = 300.0
    shutdown_timeout: float = 10.0
    allow_empty_root: bool = False
    endpoint: Endpoint | None = None  # read-only use: which files a scan may skip as unchanged
    prefix: str = ""
    log_format: str = "text"
    log_level: str = "INFO"


@dataclass
class FullScan:
    started: int
    found: set[str] = field(default_factory=set)
    awaiting: set[str] = field(default_factory=set)
    reason: str = "start"


class Reader:
    def __init__(self, opts: ReaderOptions, registry: Registry, to_writer: Connection) -> None:
        self.opts = opts
        self.root = opts.root
        self.registry = registry
        self.to_writer = to_writer
        self.pool = Pool(opts.workers, opts.root, registry, opts.limits)
        self.watches: Watches | None = None
        self.seq: dict[str, int] = {}
        self.in_flight: set[str] = set()
        self.dirty: dict[str, int] = {}  # marked again while in flight or cooling
        self.cooling: dict[str, tuple[float, float]] = {}  # burst: (re-read at, at latest)
        self.settling: dict[str, float] = {}  # path -> when to read it anyway
        self.holding: dict[str, float] = {}  # path -> when to confirm its delete
        self.known: set[str] = set()
        self.scan: FullScan | None = None
        self.root_ino: tuple[int, int] | None = None
        self.root_lost = False
        self.next_reconcile = 0.0
        self.schemas_changed_at: float | None = None
        self.stopping = False
        self._submit: list[tuple[str, int, str | None]] = []
        self.vfp = fingerprint(registry, opts.limits)
        self._outbox: list[object] = []
        self.control: Connection | None = None  # to tell the supervisor about alarms
        self._told: dict[str, object] = {}

    # -- sequence and marking -------------------------------------------------------------

    def _next_seq(self, path: str) -> int:
        seq = max(time.monotonic_ns(), self.seq.get(path, 0) + 1)
        self.seq[path] = seq
        return seq

    def mark_dirty(self, path: str, expect: str | None = None) -> None:
        self.settling.pop(path, None)
        self.holding.pop(path, None)
        self.known.add(path)
        seq = self._next_seq(path)
        if path in self.in_flight:
            self.dirty[path] = seq
        elif path in self.cooling:
            self.dirty[path] = seq
            latest = self.cooling[path][1]
            self.cooling[path] = (min(seq / 1e9 + BURST_QUIET, latest), latest)
        else:
            self.in_flight.add(path)
            self._submit.append((path, seq, expect))

    def mark_gone(self, path: str, now: float) -> None:
        if tree.is_asset_name(path):
            self.settling.pop(path, None)
            self.holding[path] = now + self.opts.delete_hold

    # -- scans ------------------------------------------------------------------------------

    def full_scan(self, reason: str, now: float) -> None:
        """Watch and list the whole tree; when every result is in, let the writer prune."""
        if self._root_problem():
            self._lose_root(now)
            return
        metrics.RESCANS.labels(reason).inc()
        log.info("full scan", extra={"reason": reason})
        scan = FullScan(time.monotonic_ns(), reason=reason)
        self.scan = scan
        assert self.watches is not None
        found = list(tree.walk(self.root, on_dir=self.watches.add))
        scan.found.update(found)
        scan.awaiting.update(found)
        reads = self._reads()
        for i in range(0, len(found), LOOKUP_CHUNK):
            chunk = found[i : i + LOOKUP_CHUNK]
            known = reads.expectations(chunk, self.vfp) if reads else {}
            for path in chunk:
                self.mark_dirty(path, known.get(path))
        if reads is not None:
            reads.client.close()
        for path in self.known - scan.found:
            self.mark_gone(path, now)
        self.next_reconcile = now + (
            min(LIMITED_RESCAN, self.opts.reconcile_interval or LIMITED_RESCAN)
            if self.watches.limit_hit
            else self.opts.reconcile_interval or 1e12
        )

    def _reads(self) -> AssetClient | None:
        """A read-only client for one scan's lookups of the stored hashes, so a reconcile only
        hashes unchanged files. The reader never writes to Valkey."""
        if self.opts.endpoint is None:
            return None
        return AssetClient.from_url(self.opts.endpoint, prefix=self.opts.prefix)

    def scan_dir(self, rel: str, now: float) -> None:
        """A directory appeared (or was swapped): watch it, list it, forget what is not there."""
        assert self.watches is not None
        found = set(tree.walk(self.root, rel, on_dir=self.watches.add))
        for path in found:
            self.mark_dirty(path)
        prefix = rel + "/" if rel else ""
        for path in [p for p in self.known if p.startswith(prefix) and p not in found]:
            self.mark_gone(path, now)

    def drop_dir(self, rel: str, now: float) -> None:
        assert self.watches is not None
        self.watches.drop(rel)
        prefix = rel + "/"
        for path in [p for p in self.known if p.startswith(prefix)]:
            self.mark_gone(path, now)

    # -- root -------------------------------------------------------------------------------

    def _root_problem(self) -> str | None:
        return tree.root_problem(self.root, self.root_ino, self.opts.allow_empty_root)

    def _lose_root(self, now: float) -> None:
        if not self.root_lost:
            log.error(
                "asset root is gone; keeping every key until it is back", extra={"root": self.root}
            )
            metrics.RESCANS.labels("root_lost").inc()
        self.root_lost = True
        self.next_reconcile = now + ROOT_POLL
        self.scan = None
        self.holding.clear()
        self.settling.clear()
        if self.watches is not None:
            self.watches.drop("")

    def _check_root_back(self, now: float) -> None:
        self.root_ino = None
        if self._root_problem() is None:
            st = os.stat(self.root)
            self.root_ino = (st.st_dev, st.st_ino)
            self.root_lost = False
            log.warning("asset root is back; reconciling", extra={"root": self.root})
            self.full_scan("root_back", now)

    # -- events and results -----------------------------------------------------------------

    def handle(self, changes: Iterable[Change], now: float) -> None:
        for change in changes:
            kind, path = change.kind, change.path
            if kind == ROOT_LOST:
                self._lose_root(now)
            elif self.root_lost:
                continue
            elif kind == OVERFLOW:
                log.warning("inotify queue overflow; rescanning everything")
                self.full_scan("overflow", now)
            elif kind == DIRTY:
                self.mark_dirty(path)
            elif kind == SETTLE:
                self.settling[path] = now + self.opts.settle
            elif kind == GONE:
                self.mark_gone(path, now)
            elif kind == DIR_IN:
                self.scan_dir(path, now)
            elif kind == DIR_OUT:
                self.drop_dir(path, now)
            elif kind == RESCAN_DIR:
                self.scan_dir(path, now)
            elif kind == SCHEMAS:
                self.schemas_changed_at = now

    def take_results(self, results: Iterable[Result], now: float) -> None:
        for result in results:
            path = result.path
            self.in_flight.discard(path)
            if self.scan is not None:
                self.scan.awaiting.discard(path)
            if isinstance(result, Missing):
                if self.scan is not None:
                    self.scan.found.discard(path)
                self.mark_gone(path, now)
            else:
                self._outbox.append(result)
            if path in self.dirty:
                self.cooling[path] = (now + BURST_QUIET, now + BURST_MAX)
        if self.scan is not None and not self.scan.awaiting:
            self._outbox.append(SyncPoint(self.scan.started, frozenset(self.scan.found)))
            self.scan = None

    def timers(self, now: float) -> None:
        for path, due in list(self.settling.items()):
            if due <= now:
                self.mark_dirty(path)
        for path, (due, _) in list(self.cooling.items()):
            if due <= now:
                del self.cooling[path]
                self.in_flight.add(path)
                self._submit.append((path, self.dirty.pop(path, self.seq.get(path, 0)), None))
        due_deletes = [path for path, due in self.holding.items() if due <= now]
        if due_deletes and self._root_problem():
            self._lose_root(now)  # a vanished root is no reason to delete anything
            due_deletes = []
        for path in due_deletes:
            del self.holding[path]
            if os.path.lexists(os.path.join(self.root, path)):
                self.mark_dirty(path)  # recreated (vim, rsync, git): not a delete
            elif path in self.in_flight or path in self.cooling:
                self.holding[path] = now + self.opts.delete_hold
            else:
                self.known.discard(path)
                self._outbox.append(Delete(path, self._next_seq(path)))
        if self.root_lost:
            if now >= self.next_reconcile:
                self.next_reconcile = now + ROOT_POLL
                self._check_root_back(now)
        elif now >= self.next_reconcile and self.scan is None:
            self.full_scan(
                "watch_limit" if self.watches and self.watches.limit_hit else "reconcile", now
            )
        if self.schemas_changed_at is not None and now - self.schemas_changed_at > 0.2:
            self.schemas_changed_at = None
            self.reload_schemas(now)

    def reload_schemas(self, now: float) -> None:
        try:
            new = schemas.load(self.opts.schemas, self.opts.rules, self.opts.validators)
        except SchemaError as e:
            log.error("schema reload failed; keeping the previous schemas: %s", e)
            return
        kinds = self.registry.kinds_differing(new)
        self.registry = new
        self.vfp = fingerprint(new, self.opts.limits)
        self.pool.reload(new)
        log.info("schemas reloaded", extra={"changed": ",".join(sorted(kinds)) or "-"})
        every = schemas.DEFAULT in kinds
        for path in list(self.known):
            kind, sep, _ = path.partition("/")
            if every or (sep and kind in kinds):
                self.mark_dirty(path)

    def flush(self) -> None:
        """Send queued tasks to the pool and results to the writer."""
        if self._submit:
            self.pool.submit(self._submit)
            self._submit = []
        if self._outbox:
            batch: list[object] = []
            for item in self._outbox:
                if isinstance(item, SyncPoint):
                    if batch:
                        self.to_writer.send(batch)
                        batch = []
                    self.to_writer.send(item)
                else:
                    batch.append(item)
            if batch:
                self.to_writer.send(batch)
            self._outbox = []
        self._tell("problem", self.problem)
        self._tell("workers", self.pool.pids())
        metrics.QUEUE_DEPTH.labels("validate").set(self.pool.pending)
        metrics.QUEUE_DEPTH.labels("settle").set(len(self.settling) + len(self.holding))

    @property
    def problem(self) -> str | None:
        """Why this reader cannot vouch for the tree right now (readiness follows it)."""
        if self.root_lost:
            return f"asset root {self.root} is gone; keys are kept"
        if self.watches is not None and self.watches.limit_hit:
            return "inotify watch limit reached (fs.inotify.max_user_watches); rescanning"
        return None

    def _tell(self, kind: str, value: object) -> None:
        if self.control is None or self._told.get(kind, ()) == value:
            return
        self._told[kind] = value
        with contextlib.suppress(BrokenPipeError, OSError):
            self.control.send((kind, value))

    # -- the loop ---------------------------------------------------------------------------

    def start(self) -> None:
        self.pool.start()
        self.watches = Watches(self.root, self.opts.schemas)
        st = os.stat(self.root) if os.path.isdir(self.root) else None
        self.root_ino = (st.st_dev, st.st_ino) if st else None
        self.full_scan("start", time.monotonic())
        self.flush()

    def step(
        self, now: float | None = None, timeout: float = 0.05, also: Iterable[object] = ()
    ) -> None:
        assert self.watches is not None
        waitables: list[object] = [*self.pool.waitables(), *also]
        if not self.stopping:
            waitables.append(self.watches)
        ready = wait(waitables, self._timeout(timeout))  # type: ignore[arg-type]
        now = time.monotonic() if now is None else now
        if self.watches in ready:
            self.handle(self.watches.read(), now)
        self.take_results(self.pool.collect(ready), now)
        self.timers(now)
        self.flush()

    def _timeout(self, default: float) -> float:
        if self._submit or self._outbox:
            return 0.0
        pending = [*self.settling.values(), *self.holding.values()]
        pending += [due for due, _ in self.cooling.values()]
        if not pending:
            return 0.5 if not self.pool.pending else default
        return max(0.0, min(min(pending) - time.monotonic(), 0.5))

    def drain(self, deadline: float) -> None:
        """SIGTERM: what was seen is read now (settling and held paths too), then committed."""
        self.stopping = True
        now = time.monotonic()
        if self.watches is not None:  # events the kernel queued before the signal count too
            self.handle(self.watches.read(), now)
        for path in list(self.settling):
            self.mark_dirty(path)
        for path in self.holding:
            self.holding[path] = now
        for path in self.cooling:
            self.cooling[path] = (now, now)
        self.timers(now)
        self.flush()
        while (self.pool.pending or self.holding or self.cooling) and time.monotonic() < deadline:
            self.step()
        self.to_writer.send(Finish())
        self.pool.close()


def serve(opts: ReaderOptions, to_writer: Connection, control: Connection) -> None:
    """Process entry point (spawned by the supervisor)."""
    from . import logs

    logs.setup(opts.log_format, opts.log_level)
    logs.name_process("reader")
    metrics.prime("reader")
    stop = {"requested": False}

    def request_stop(signum: int, frame: object) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    registry = schemas.load(opts.schemas, opts.rules, opts.validators)
    reader = Reader(opts, registry, to_writer)
    reader.control = control
    reader.start()
    while not stop["requested"]:
        if control.poll(0):
            try:
                message = control.recv()
            except (EOFError, OSError):
                break  # the supervisor is gone: drain and stop
            if message == "stop":
                break
            if message == "rescan":
                reader.full_scan("requested", time.monotonic())
        reader.step(also=[control])
    reader.drain(time.monotonic() + opts.shutdown_timeout * 0.8)
