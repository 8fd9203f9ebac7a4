"""The reader process's loop on a clock the test holds: delete holds, settling, bursts.

`Reader.step(now)` waits for inotify and the worker pool in real time, but every timed
decision (when a held delete is confirmed, when a file still being written is read anyway,
when a burst is read again) follows the `now` it is given. So the hold and settle periods here
are long, and only the test's clock ends them. Real tree, real inotify, a real worker pool; no
Valkey (the reader never writes to it; scans then hash every file).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from multiprocessing import Pipe
from pathlib import Path

import pytest

from assetmgr import config
from assetmgr.messages import Accepted, Delete, Rejected, SyncPoint
from assetmgr.pipeline import schemas
from assetmgr.pipeline.reader import Reader, ReaderOptions
from assetmgr.pipeline.schedule import BURST_QUIET
from conftest import SCHEMAS, sha256, wait_for

HOLD = 300.0  # seconds: far longer than any test runs, so real time never ends a hold
SETTLE = 300.0
COST = "weights/cost.json"


class Harness:
    """A started reader, its output to the writer collected by the test."""

    def __init__(self, root: Path) -> None:
        cfg = config.load("daemon", {"root": str(root), "schemas": str(SCHEMAS)}, environ={})
        # No periodic reconcile: a clock this far ahead would start one.
        cfg = cfg.replace(delete_hold=HOLD, settle=SETTLE, workers=1, reconcile_interval=0)
        opts = dataclasses.replace(ReaderOptions.from_config(cfg), endpoint=None)
        self.from_reader, to_writer = Pipe(duplex=False)
        registry = schemas.load(opts.schemas, opts.rules, opts.validators)
        self.reader = Reader(opts, registry, to_writer)
        self.sent: list[object] = []
        self.reader.start()
        self.step_until(lambda: any(isinstance(m, SyncPoint) for m in self.sent), time.monotonic())
        self.sent.clear()

    def step(self, now: float) -> None:
        self.reader.step(now)
        while self.from_reader.poll(0):
            message = self.from_reader.recv()
            self.sent.extend(message if isinstance(message, list) else [message])

    def step_until(self, condition: Callable[[], object], now: float, what: str = "") -> None:
        wait_for(lambda: self.step(now) or condition(), 30, interval=0, what=what)

    def results(self, path: str) -> list[object]:
        return [m for m in self.sent if getattr(m, "path", None) == path]

    def deletes(self) -> list[Delete]:
        return [m for m in self.sent if isinstance(m, Delete)]

    def idle(self) -> bool:
        """No read in flight and none queued: nothing can come out without the clock."""
        return self.reader.pool.pending == 0 and not self.reader.schedule.has_tasks

    def close(self) -> None:
        self.reader.pool.close()
        if self.reader.watches is not None:
            self.reader.watches.close()


@pytest.fixture
def harness(root: Path) -> Iterator[Harness]:
    h = Harness(root)
    yield h
    h.close()


def test_a_delete_is_sent_only_once_the_hold_is_over_on_the_readers_clock(root, harness):
    (root / COST).unlink()
    t = time.monotonic()
    harness.step_until(lambda: harness.reader.schedule.waiting == 1, t, what="the delete held")
    harness.step(t + HOLD - 0.01)
    assert harness.deletes() == [] and harness.idle()
    harness.step(t + HOLD)
    [delete] = harness.deletes()
    assert delete.path == COST


def test_a_file_recreated_during_the_hold_is_read_again_and_never_deleted(root, harness):
    data = (root / COST).read_bytes()
    (root / COST).unlink()
    t = time.monotonic()
    harness.step_until(lambda: harness.reader.schedule.waiting == 1, t, what="the delete held")
    (root / COST).write_bytes(data)  # vim, rsync, git checkout: remove, then write anew
    harness.step_until(lambda: harness.results(COST), t + 1, what="the re-read")
    harness.step_until(harness.idle, t + 1, what="the reads done")
    harness.step(t + HOLD)
    harness.step(t + 2 * HOLD)
    assert harness.deletes() == []
    assert [type(r) for r in harness.results(COST)] == [Accepted]


def test_a_file_still_being_written_is_read_after_the_settle_period_then_at_its_close(
    root, harness
):
    final = (root / COST).read_bytes()
    t = time.monotonic()
    with (root / COST).open("wb") as f:
        f.write(final[:20])
        f.flush()  # written, not closed: a slow copy in progress
        harness.step_until(lambda: harness.reader.schedule.waiting == 1, t, what="settling")
        harness.step(t + SETTLE - 0.01)
        assert harness.results(COST) == [] and harness.idle()
        harness.step_until(lambda: harness.results(COST), t + SETTLE, what="the settled read")
        [partial] = harness.results(COST)
        assert isinstance(partial, Rejected)  # half a document, read anyway, never written
        f.write(final[20:])
    harness.step_until(lambda: len(harness.results(COST)) == 2, t + SETTLE, what="the close")
    done = harness.results(COST)[-1]
    assert isinstance(done, Accepted) and done.hash == sha256(final)


def test_a_burst_of_rewrites_makes_two_reads_the_second_once_the_burst_is_quiet(root, harness):
    original, final = (root / COST).read_bytes(), b""
    for i in range(10):  # before the reader looks: every event waits in one inotify read
        final = original.replace(b'"default": 0.5', f'"default": 0.{i}'.encode())
        (root / COST).write_bytes(final)
    assert final != original
    t = time.monotonic()
    harness.step_until(lambda: harness.results(COST), t, what="the first read")
    harness.step_until(harness.idle, t, what="the first read done")
    for _ in range(3):
        harness.step(t + BURST_QUIET / 2)  # cooling down: the re-read waits for the clock
    assert len(harness.results(COST)) == 1 and harness.idle()
    harness.step_until(lambda: len(harness.results(COST)) == 2, t + BURST_QUIET, what="re-read")
    reads = harness.results(COST)
    assert all(isinstance(r, Accepted) for r in reads)
    assert reads[-1].hash == sha256(final)
    assert reads[0].seq < reads[1].seq
