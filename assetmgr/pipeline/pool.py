"""The worker pool: N processes that run `worker.inspect` on batches of paths.

Each worker has its own duplex pipe, so killing one (OOM killer, kill -9) corrupts no shared
queue: its in-flight batches go back to the front of the queue and a replacement is forked.
Workers are forked from the reader and inherit its compiled schemas. A replacement can be
forked during a scan, while `tree.chunks`' lookup thread waits on Valkey: that thread holds no
lock a worker takes (it only uses its own read client; logging's locks are reset in a forked
child), so the child starts clean.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import zstandard

from assetmgr import logs, metrics
from assetmgr.limits import Limits
from assetmgr.memory import Ceiling
from assetmgr.messages import Result, Task
from assetmgr.pipeline.schemas import Registry
from assetmgr.pipeline.worker import ZSTD_LEVEL, fingerprint, inspect

log = logging.getLogger("assetmgr.pool")

IN_FLIGHT_PER_WORKER = 2
# A worker that dies this soon after start, this many times in a row, cannot start at all.
BOOT_WINDOW = 2.0
BOOT_FAILURES = 5


class PoolError(Exception):
    """Workers keep dying at start: a daemon failure, not an asset problem."""


@dataclass
class _Slot:
    process: BaseProcess
    conn: Connection
    started: float
    in_flight: deque[list[Task]] = field(default_factory=deque)


def _serve(
    conn: Connection, inherited: list[Connection], root: str, registry: Registry, limits: Limits
) -> None:
    # A forked child holds copies of the parent's ends of every pipe: close them, or closing
    # the parent's end would never reach any worker as EOF.
    for other in inherited:
        other.close()
    # The reader decides when work stops: a terminal's Ctrl-C or systemd's SIGTERM to the
    # whole group must not kill a worker mid-batch. End of input (EOF) is the stop signal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logs.name_process("worker")
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    vfp = fingerprint(registry, limits)
    ceiling = Ceiling()
    while True:
        try:
            batch: list[Task] = conn.recv()
        except (EOFError, OSError):
            return
        results = [
            inspect(root, p, registry, limits, compressor, seq=s, expect=e, vfp=vfp)
            for p, s, e in batch
        ]
        metrics.observe_results(results)
        try:
            conn.send(results)
        except (BrokenPipeError, OSError):
            return
        ceiling.check()  # after the send: a large file's result is not held up


class Pool:
    def __init__(
        self, size: int, root: str, registry: Registry, limits: Limits, batch: int = 32
    ) -> None:
        self.size = size
        self.root = root
        self.registry = registry
        self.limits = limits
        self.batch = batch
        self._ctx = mp.get_context("fork")
        self._slots: list[_Slot] = []
        self._queue: deque[list[Task]] = deque()
        self._boot_failures = 0
        self.restarts = 0

    def start(self) -> None:
        for _ in range(self.size):
            self._slots.append(self._spawn())

    def _spawn(self) -> _Slot:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_serve,
            args=(
                child,
                [parent, *(s.conn for s in self._slots)],
                self.root,
                self.registry,
                self.limits,
            ),
            name="assetmgr-worker",
            daemon=True,
        )
        process.start()
        child.close()
        return _Slot(process, parent, time.monotonic())

    def submit(self, tasks: Sequence[Task]) -> None:
        for i in range(0, len(tasks), self.batch):
            self._queue.append(list(tasks[i : i + self.batch]))
        self._dispatch()

    @property
    def pending(self) -> int:
        """Tasks queued or in flight."""
        queued = sum(len(b) for b in self._queue)
        return queued + sum(len(b) for s in self._slots for b in s.in_flight)

    def waitables(self) -> list[object]:
        return [s.conn for s in self._slots] + [s.process.sentinel for s in self._slots]

    def collect(self, ready: Sequence[object]) -> list[Result]:
        """Results from the workers whose pipe or sentinel is in `ready`; restarts dead ones."""
        results: list[Result] = []
        ready_set = set(map(id, ready))
        for index, slot in enumerate(self._slots):
            if id(slot.conn) in ready_set or id(slot.process.sentinel) in ready_set:
                results.extend(self._drain(slot))
                if not slot.process.is_alive():
                    self._replace(index)
        self._dispatch()
        return results

    def _drain(self, slot: _Slot) -> list[Result]:
        results: list[Result] = []
        try:
            while slot.in_flight and slot.conn.poll():
                results.extend(slot.conn.recv())
                slot.in_flight.popleft()
        except (EOFError, OSError):
            pass
        return results

    def _replace(self, index: int) -> None:
        slot = self._slots[index]
        slot.process.join(0.1)
        self._queue.extendleft(reversed(slot.in_flight))
        slot.conn.close()
        if time.monotonic() - slot.started < BOOT_WINDOW:
            self._boot_failures += 1
            if self._boot_failures >= BOOT_FAILURES:
                raise PoolError(f"workers exit at start (last exit code {slot.process.exitcode})")
        else:
            self._boot_failures = 0
        log.warning(
            "worker died, restarting",
            extra={"pid": slot.process.pid, "exitcode": slot.process.exitcode},
        )
        self.restarts += 1
        metrics.WORKER_RESTARTS.inc()
        self._slots[index] = self._spawn()

    def _dispatch(self) -> None:
        while self._queue:
            slot = min(self._slots, key=lambda s: len(s.in_flight), default=None)
            if slot is None or len(slot.in_flight) >= IN_FLIGHT_PER_WORKER:
                return
            batch = self._queue.popleft()
            try:
                slot.conn.send(batch)
            except (BrokenPipeError, OSError):
                self._queue.appendleft(batch)
                return  # its sentinel will fire and the slot gets replaced
            slot.in_flight.append(batch)

    def reload(self, registry: Registry) -> None:
        """Replace every worker with one forked holding the new schemas; requeue their work."""
        self.registry = registry
        for index, slot in enumerate(self._slots):
            self._queue.extendleft(reversed(slot.in_flight))
            slot.in_flight.clear()
            slot.conn.close()
            slot.process.kill()
            slot.process.join(1.0)
            self._slots[index] = self._spawn()
        self._dispatch()

    def pids(self) -> list[int]:
        return [s.process.pid for s in self._slots if s.process.pid]

    def close(self, timeout: float = 5.0) -> None:
        """Close the pipes (workers exit at EOF), then reap; kill what lingers."""
        for slot in self._slots:
            slot.conn.close()
        deadline = time.monotonic() + timeout
        for slot in self._slots:
            slot.process.join(max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                os.kill(slot.process.pid or 0, signal.SIGKILL)
                slot.process.join(1.0)
        self._slots = []
