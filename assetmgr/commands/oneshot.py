"""`verify` and `hydrate`: the tree evaluated once in the worker pool, for hydrate committed
by the writer.

The same pipeline as the daemon's, run once: the calling process plays the reader
(walk the tree, feed the pool), the pool validates, a forked writer process commits.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait

from assetmgr.limits import Limits
from assetmgr.messages import (
    Accepted,
    Finish,
    Missing,
    Outcome,
    Plan,
    Rejected,
    Report,
    Result,
    Stored,
    SyncPoint,
    UnchangedPaths,
)
from assetmgr.pipeline import tree
from assetmgr.pipeline.pool import Pool
from assetmgr.pipeline.schemas import Registry
from assetmgr.pipeline.worker import unchanged_on_disk
from assetmgr.store.writer import WriterOptions
from assetmgr.store.writer_loop import serve

log = logging.getLogger("assetmgr")

# Where a scan hands its results: each batch of the pool's, and the files the stat shortcut
# found unchanged, as one message per chunk.
Sink = Callable[[Sequence[Result] | UnchangedPaths], None]


@dataclass
class Evaluation:
    """What one pass over the tree found."""

    paths: set[str] = field(default_factory=set)
    valid: int = 0
    rejected: dict[str, Rejected] = field(default_factory=dict)
    seconds: float = 0.0
    unlisted: int = 0  # directories that could not be listed: what they hold is unknown


class Progress:
    """`done/total files, rate/s` on a terminal; silent otherwise (a summary is logged)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.started = time.monotonic()
        self._last = 0.0

    def update(self, done: int, total: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self._last < 0.2):
            return
        self._last = now
        rate = done / max(now - self.started, 1e-6)
        sys.stderr.write(f"\r{done}/{total} files, {rate:,.0f}/s ")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


class ColdAware:
    """A lookup that stops asking once MISSES chunks in a row had nothing stored: the
    tree is being loaded cold, and the round trips would only cost. A hint either way."""

    MISSES = 4

    def __init__(self, lookup: tree.Lookup) -> None:
        self.lookup = lookup
        self.empty_chunks = 0

    def __call__(self, paths: Sequence[str]) -> dict[str, Stored]:
        if self.empty_chunks >= self.MISSES:
            return {}
        known = self.lookup(paths)
        self.empty_chunks = 0 if known else self.empty_chunks + 1
        return known


def evaluate_tree(
    root: str,
    registry: Registry,
    limits: Limits,
    workers: int,
    sink: Sink,
    progress: Progress,
    lookup: tree.Lookup = tree.no_lookup,
) -> Evaluation:
    """Walk `root`, evaluate every candidate in the pool, hand each batch of results to `sink`.

    `lookup` gives, per chunk of paths, what Valkey already holds: a file whose stat signature
    is the stored one is Unchanged here, without a worker; one whose bytes hash to the stored
    hash is only hashed (see worker.inspect).
    """
    found = Evaluation()
    started = time.monotonic()
    seq = time.monotonic_ns()
    pool = Pool(workers, root, registry, limits, batch=64)
    pool.start()
    done = 0

    def problem(rejected: Rejected) -> None:
        found.paths.add(rejected.path)
        found.rejected[rejected.path] = rejected
        found.unlisted += rejected.code == "unreadable"
        sink([rejected])

    try:
        for chunk, stored in tree.chunks(root, lookup=lookup, on_problem=problem):
            found.paths.update(chunk)
            same = [
                path
                for path in chunk
                if path in stored and unchanged_on_disk(root, path, stored[path], limits)
            ]
            if same:
                sink(UnchangedPaths(same, [stored[p][0] for p in same], seq))
                done += len(same)
            skip = set(same)
            pool.submit([(p, seq, stored.get(p)) for p in chunk if p not in skip])
            done += _collect(pool, found, sink, 0)
        while pool.pending:
            done += _collect(pool, found, sink, 1.0)
            progress.update(done, len(found.paths))
    finally:
        pool.close()
    progress.update(done, len(found.paths), final=True)
    found.seconds = time.monotonic() - started
    return found


def _collect(pool: Pool, found: Evaluation, sink: Sink, timeout: float) -> int:
    results = pool.collect(wait(pool.waitables(), timeout))  # type: ignore[arg-type]
    for r in results:
        if isinstance(r, Rejected):
            found.rejected[r.path] = r
        elif isinstance(r, Accepted):
            found.valid += 1
        elif isinstance(r, Missing):
            found.paths.discard(r.path)  # vanished since listed: not on disk
    sink([r for r in results if not isinstance(r, Missing)])
    return len(results)


@dataclass
class HydrateResult:
    evaluation: Evaluation
    report: Report


def hydrate(
    root: str,
    registry: Registry,
    limits: Limits,
    workers: int,
    opts: WriterOptions,
    prune: bool,
    progress: Progress,
    lookup: tree.Lookup = tree.no_lookup,
) -> HydrateResult:
    """Evaluate the tree, commit through a writer process, prune; the writer's report says
    how it went."""
    # Forked: this process is single-threaded here, and a fork skips a fresh interpreter's
    # imports (a quarter second of CPU, a third of an unchanged re-hydrate).
    ctx = mp.get_context("fork")
    inbox, writer_in = ctx.Pipe(duplex=False)  # (receiving end, sending end)
    from_writer, outbox = ctx.Pipe(duplex=False)
    writer = ctx.Process(target=serve, args=(inbox, outbox, opts), name="assetmgr-writer")
    writer.start()
    inbox.close()
    outbox.close()
    started_seq = time.monotonic_ns()
    report: Report | None = None

    def sink(results: Sequence[Result] | UnchangedPaths) -> None:
        if results and writer.is_alive():
            writer_in.send(results)  # a list, or one UnchangedPaths: the writer iterates both

    try:
        found = evaluate_tree(root, registry, limits, workers, sink, progress, lookup)
        if prune and found.unlisted:
            log.warning(
                "not pruning: %d directories could not be listed, what they hold is unknown",
                found.unlisted,
            )
        if writer.is_alive():
            prune = prune and not found.unlisted
            writer_in.send(SyncPoint(started_seq, frozenset(found.paths), prune=prune))
            writer_in.send(Finish())
    except BrokenPipeError:
        found = Evaluation()
    finally:
        writer_in.close()
    try:
        report = from_writer.recv()
    except EOFError:
        writer.join(10)  # the exit code is known only once the process is reaped
        error = f"writer process exited with code {writer.exitcode}"
        report = Report(Plan(), Outcome.VALKEY_FAILED, error)
    writer.join(10)
    return HydrateResult(found, report)
