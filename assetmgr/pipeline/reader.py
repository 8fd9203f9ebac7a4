"""The reader process: turns file events and scans into tasks, and results into writes.

The per-path decisions (sequence numbers, one read in flight, bursts, settling, delete holds)
are `schedule.Schedule`'s; the walks are `watcher.Watches.walk`. This is the shell around them:
it waits on inotify and the pool, feeds both to the schedule, and sends what it decided.
`step(now)` is one loop iteration with an injectable clock: tests need not sleep.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

import redis
from redis.exceptions import RedisClusterException

from assetmgr import metrics
from assetmgr.limits import Limits
from assetmgr.memory import Ceiling
from assetmgr.messages import Finish, Missing, Rejected, Result, SyncPoint
from assetmgr.pipeline import schemas, tree, watcher
from assetmgr.pipeline.pool import Pool
from assetmgr.pipeline.schedule import Schedule
from assetmgr.pipeline.schemas import Options, Registry, SchemaError
from assetmgr.pipeline.watcher import Change, Kind, Watches
from assetmgr.pipeline.worker import fingerprint
from assetmgr.store.connection import Endpoint, ValkeyMisconfigured
from assetmgr.store.keyspace import Keyspace
from assetmgr.store.lookups import StoredHashes

log = logging.getLogger("assetmgr.reader")

LIMITED_RESCAN = 30.0  # seconds between full rescans while the watch limit is hit
ROOT_POLL = 1.0
SCHEMAS_QUIET = 0.2  # seconds without schema events before a reload


@dataclass(frozen=True)
class ReaderOptions:
    """What the reader process is told; every value comes from the settings (`from_config`)."""

    root: str
    schemas: str
    rules: tuple[tuple[str, str], ...]
    validators: dict[str, list[str]]
    schema_options: Options
    limits: Limits
    workers: int
    delete_hold: float
    settle: float
    reconcile_interval: float
    shutdown_timeout: float
    allow_empty_root: bool
    endpoint: Endpoint | None  # read-only use: which files a scan may skip as unchanged
    keyspace: Keyspace
    log_format: str
    log_level: str

    @classmethod
    def from_config(cls, cfg: Any) -> ReaderOptions:
        """The options the resolved settings ask for (`cfg`: an `assetmgr.config.Config`)."""
        return cls(
            root=cfg.root,
            schemas=cfg.schemas,
            rules=tuple(cfg.schema_rules),
            validators=dict(cfg.validators),
            schema_options=Options.from_config(cfg),
            limits=Limits.from_config(cfg),
            workers=cfg.workers,
            delete_hold=cfg.delete_hold,
            settle=cfg.settle,
            reconcile_interval=cfg.reconcile_interval,
            shutdown_timeout=cfg.shutdown_timeout,
            allow_empty_root=cfg.allow_mass_delete,
            endpoint=cfg.endpoint,
            keyspace=cfg.keyspace,
            log_format=cfg.log_format,
            log_level=cfg.log_level,
        )

    def load_schemas(self) -> Registry:
        return schemas.load(self.schemas, self.rules, self.validators, self.schema_options)


@dataclass
class FullScan:
    started: int
    found: set[str] = field(default_factory=set)  # what the writer must not prune
    awaiting: set[str] = field(default_factory=set)
    reason: str = "start"


class Reader:
    def __init__(
        self,
        opts: ReaderOptions,
        registry: Registry,
        to_writer: Connection,
        control: Connection | None = None,  # to tell the supervisor about alarms
    ) -> None:
        self.opts = opts
        self.root = opts.root
        self.registry = registry
        self.to_writer = to_writer
        self.control = control
        self.pool = Pool(opts.workers, opts.root, registry, opts.limits)
        self.watches: Watches | None = None
        self.schedule = Schedule(opts.delete_hold, opts.settle)
        self.scan: FullScan | None = None
        self.root_ino: tuple[int, int] | None = None
        self.root_lost: str | None = None  # the alarm while the root cannot be trusted
        self.next_reconcile = 0.0
        self.schemas_changed_at: float | None = None
        self.stopping = False
        self.vfp = fingerprint(registry, opts.limits)
        self._outbox: list[object] = []
        self._told: dict[str, object] = {}
        self._on: dict[Kind, Callable[[str, float], None]] = {
            Kind.DIRTY: self.schedule.mark_dirty,
            Kind.SETTLE: self.schedule.settle,
            Kind.GONE: self.schedule.mark_gone,
            Kind.DIR_IN: self.scan_dir,
            Kind.DIR_OUT: self.drop_dir,
            Kind.RESCAN_DIR: self.scan_dir,
            Kind.OVERFLOW: self._overflow,
            Kind.ROOT_LOST: lambda path, now: self._lose_root(now),
            Kind.SCHEMAS: self._schemas_changed,
        }

    # -- scans ------------------------------------------------------------------------------

    def full_scan(self, reason: str, now: float) -> None:
        """Watch and list the whole tree; when every result is in, let the writer prune."""
        if self._root_problem():
            self._lose_root(now)
            return
        metrics.RESCANS.labels(reason).inc()
        log.info("full scan", extra={"reason": reason})
        scan = FullScan(time.monotonic_ns(), reason=reason)
        with self._lookup() as lookup:
            listed, kept = self._list("", now, lookup)
        scan.found = listed | kept
        scan.awaiting = listed
        self.scan = scan
        assert self.watches is not None
        self.next_reconcile = now + (
            min(LIMITED_RESCAN, self.opts.reconcile_interval or LIMITED_RESCAN)
            if self.watches.limit_hit
            else self.opts.reconcile_interval or 1e12
        )

    @contextlib.contextmanager
    def _lookup(self) -> Iterator[tree.Lookup]:
        """A read-only client for one scan's lookups of the stored hashes, so a reconcile only
        hashes unchanged files. The reader never writes to Valkey."""
        if self.opts.endpoint is None:
            yield tree.no_lookup
            return
        try:
            reads = StoredHashes.connect(self.opts.endpoint, self.opts.keyspace, self.vfp)
        except (redis.RedisError, RedisClusterException, ValkeyMisconfigured):
            yield tree.no_lookup  # the writer reports what is wrong with Valkey
            return
        try:
            yield reads
        finally:
            reads.close()

    def _list(
        self, rel: str, now: float, lookup: tree.Lookup = tree.no_lookup
    ) -> tuple[set[str], set[str]]:
        """Watch and list `rel`: what is there is read, what is known but not there may be gone.

        Returns the paths listed (each now being read) and those to keep without a read: a
        directory the walk could not follow, reported, and what was known under one that could
        not be listed (unknown is not gone).
        """
        assert self.watches is not None
        listed: set[str] = set()
        problems: list[Rejected] = []
        for chunk, stored in self.watches.walk(rel, lookup, problems.append):
            listed.update(chunk)
            for path in chunk:
                self.schedule.mark_dirty(path, now, stored.get(path))
        kept = {p.path for p in problems}
        for problem in problems:
            if problem.code == "unreadable":
                kept.update(watcher.below(self.schedule.known, problem.path))
        for path in watcher.gone(self.schedule.known, listed | kept, rel):
            self.schedule.mark_gone(path, now)
        self._outbox += problems
        return listed, kept

    def scan_dir(self, rel: str, now: float) -> None:
        """A directory appeared (or was swapped): watch it, list it, forget what is not there."""
        listed, kept = self._list(rel, now)
        if self.scan is not None:  # a full scan is running: it must not prune what this found
            self.scan.found |= listed | kept

    def drop_dir(self, rel: str, now: float) -> None:
        assert self.watches is not None
        self.watches.drop(rel)
        for path in watcher.below(self.schedule.known, rel):
            self.schedule.mark_gone(path, now)

    # -- root -------------------------------------------------------------------------------

    def _root_problem(self) -> str | None:
        return tree.root_problem(self.root, self.root_ino, self.opts.allow_empty_root)

    def _lose_root(self, now: float, problem: str | None = None) -> None:
        """Stop trusting the root; the alarm (log line and /readyz) says what is wrong with it."""
        problem = problem or self._root_problem() or f"root {self.root} was moved or unmounted"
        alarm = f"{problem}; keeping every key until it is back"
        if alarm != self.root_lost:
            log.error(alarm, extra={"root": self.root})
            if self.root_lost is None:
                metrics.RESCANS.labels("root_lost").inc()
        self.root_lost = alarm
        self.next_reconcile = now + ROOT_POLL
        self.scan = None
        self.schedule.forget_waits()
        if self.watches is not None:
            self.watches.drop("")

    def _check_root_back(self, now: float) -> None:
        self.root_ino = None
        problem = self._root_problem()
        if problem is not None:
            self._lose_root(now, problem)  # still lost; the alarm follows what is true now
            return
        st = os.stat(self.root)
        self.root_ino = (st.st_dev, st.st_ino)
        self.root_lost = None
        log.warning("asset root is back; reconciling", extra={"root": self.root})
        self.full_scan("root_back", now)

    def _exists(self, path: str) -> bool:
        """Is `path` still in the tree? A directory on the way that cannot be searched (chmod
        000) says nothing about the file: kept. One reached through a directory symlink out
        of the root is not in the tree, as a walk would not find it."""
        full = os.path.join(self.root, path)
        try:
            os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError:
            return True
        return tree.inside(os.path.realpath(self.root), os.path.realpath(os.path.dirname(full)))

    # -- events and results -----------------------------------------------------------------

    def handle(self, changes: Iterable[Change], now: float) -> None:
        for change in changes:
            if self.root_lost and change.kind is not Kind.ROOT_LOST:
                continue
            self._on[change.kind](change.path, now)

    def _overflow(self, path: str, now: float) -> None:
        log.warning("inotify queue overflow; rescanning everything")
        self.full_scan("overflow", now)

    def _schemas_changed(self, path: str, now: float) -> None:
        self.schemas_changed_at = now

    def take_results(self, results: Iterable[Result], now: float) -> None:
        for result in results:
            path = result.path
            missing = isinstance(result, Missing)
            if self.scan is not None:
                self.scan.awaiting.discard(path)
                if missing:
                    self.scan.found.discard(path)
            if not missing:
                self._outbox.append(result)
            self.schedule.done(path, now, missing)
        if self.scan is not None and not self.scan.awaiting:
            self._outbox.append(SyncPoint(self.scan.started, frozenset(self.scan.found)))
            self.scan = None

    def timers(self, now: float) -> None:
        due_deletes = self.schedule.due(now)
        if due_deletes and self._root_problem():
            self._lose_root(now)  # a vanished root is no reason to delete anything
        else:
            self._outbox += self.schedule.confirm(due_deletes, now, self._exists)
        if self.root_lost:
            if now >= self.next_reconcile:
                self.next_reconcile = now + ROOT_POLL
                self._check_root_back(now)
        elif now >= self.next_reconcile and self.scan is None:
            self.full_scan(
                "watch_limit" if self.watches and self.watches.limit_hit else "reconcile", now
            )
        if self.schemas_changed_at is not None and now - self.schemas_changed_at > SCHEMAS_QUIET:
            self.schemas_changed_at = None
            self.reload_schemas(now)

    def reload_schemas(self, now: float) -> None:
        try:
            new = self.opts.load_schemas()
        except SchemaError as e:
            log.error("schema reload failed; keeping the previous schemas: %s", e)
            return
        kinds = self.registry.kinds_differing(new)
        self.registry = new
        self.vfp = fingerprint(new, self.opts.limits)
        self.pool.reload(new)
        log.info("schemas reloaded", extra={"changed": ",".join(sorted(kinds)) or "-"})
        every = schemas.DEFAULT in kinds
        for path in list(self.schedule.known):
            kind, sep, _ = path.partition("/")
            if every or (sep and kind in kinds):
                self.schedule.mark_dirty(path, now)

    def flush(self) -> None:
        """Send queued tasks to the pool and results to the writer."""
        if self.schedule.has_tasks:
            self.pool.submit(self.schedule.take_tasks())
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
        metrics.QUEUE_DEPTH.labels("settle").set(self.schedule.waiting)

    @property
    def problem(self) -> str | None:
        """Why this reader cannot vouch for the tree right now (readiness follows it)."""
        if self.root_lost:
            return self.root_lost
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
        if self.schedule.has_tasks or self._outbox:
            return 0.0
        due = self.schedule.next_due()
        if due is None:
            return 0.5 if not self.pool.pending else default
        return max(0.0, min(due - time.monotonic(), 0.5))

    def drain(self, deadline: float) -> None:
        """SIGTERM: what was seen is read now (settling and held paths too), then committed."""
        self.stopping = True
        now = time.monotonic()
        if self.watches is not None:  # events the kernel queued before the signal count too
            self.handle(self.watches.read(), now)
        self.schedule.hurry(now)
        self.timers(now)
        self.flush()
        while (self.pool.pending or self.schedule.busy) and time.monotonic() < deadline:
            self.step()
        self.to_writer.send(Finish())
        self.pool.close()


def serve(opts: ReaderOptions, to_writer: Connection, control: Connection) -> None:
    """Process entry point (spawned by the supervisor)."""
    from assetmgr import logs

    logs.setup(opts.log_format, opts.log_level)
    logs.name_process("reader")
    metrics.prime("reader")
    stop = {"requested": False}

    def request_stop(signum: int, frame: object) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    registry = opts.load_schemas()
    reader = Reader(opts, registry, to_writer, control)
    reader.start()
    ceiling = Ceiling()
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
        ceiling.check()
    reader.drain(time.monotonic() + opts.shutdown_timeout * 0.8)
