"""When to read each path again, and when a delete is true: the reader's per-path state.

Per path: a sequence number (the CLOCK_MONOTONIC ns at which it was marked dirty, so it
doubles as the event time for the propagation metric), at most one read in flight (marks that
arrive meanwhile coalesce into one re-read), a burst cool-down, a settle deadline for files
still being written, and a hold for deletes, which are confirmed against the disk before they
are sent. Pure: no processes, no inotify, no Valkey; every call takes the caller's `now`
and keeps no clock of its own, so tests drive it with any clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from assetmgr.messages import Delete, Stored, Task
from assetmgr.pipeline import tree

# A path rewritten while it was being read is in a burst (a shell loop, a log-style writer):
# read it again once it has been quiet this long, or at the latest BURST_MAX after the burst
# was noticed, so a burst makes a few writes instead of one per worker round trip.
BURST_QUIET = 0.05
BURST_MAX = 1.0


class Schedule:
    def __init__(self, delete_hold: float, settle: float) -> None:
        self.delete_hold = delete_hold
        self.settle_after = settle
        self.seq: dict[str, int] = {}
        self.in_flight: set[str] = set()
        self.dirty: dict[str, int] = {}  # marked again while in flight or cooling
        self.cooling: dict[str, tuple[float, float]] = {}  # burst: (re-read at, at latest)
        self.settling: dict[str, float] = {}  # path -> when to read it anyway
        self.holding: dict[str, float] = {}  # path -> when to confirm its delete
        self.known: set[str] = set()  # every asset path seen and not confirmed gone
        self._tasks: list[Task] = []

    def _next_seq(self, path: str, now: float) -> int:
        seq = max(int(now * 1e9), self.seq.get(path, 0) + 1)
        self.seq[path] = seq
        return seq

    def mark_dirty(self, path: str, now: float, expect: Stored | None = None) -> None:
        """Read `path` again: now, or once its read in flight or its burst cool-down ends.
        `expect` is the hash Valkey holds for it, so an unchanged file is only hashed."""
        self.settling.pop(path, None)
        self.holding.pop(path, None)
        self.known.add(path)
        seq = self._next_seq(path, now)
        if path in self.in_flight:
            self.dirty[path] = seq
        elif path in self.cooling:
            self.dirty[path] = seq
            latest = self.cooling[path][1]
            self.cooling[path] = (min(now + BURST_QUIET, latest), latest)
        else:
            self.in_flight.add(path)
            self._tasks.append((path, seq, expect))

    def mark_gone(self, path: str, now: float) -> None:
        """Maybe deleted: confirm against the disk once the hold is over."""
        if tree.is_asset_name(path):
            self.settling.pop(path, None)
            self.holding[path] = now + self.delete_hold

    def settle(self, path: str, now: float) -> None:
        """Being written: read it when closed, or after the settle period at the latest."""
        self.settling[path] = now + self.settle_after

    def done(self, path: str, now: float, missing: bool = False) -> None:
        """The read of `path` came back (`missing`: the file was not there)."""
        self.in_flight.discard(path)
        if missing:
            self.mark_gone(path, now)
        if path in self.dirty:
            self.cooling[path] = (now + BURST_QUIET, now + BURST_MAX)

    def due(self, now: float) -> list[str]:
        """Start the reads whose settle or cool-down time came; return the paths whose delete
        hold is over, for the caller to `confirm` against the disk."""
        for path, at in list(self.settling.items()):
            if at <= now:
                self.mark_dirty(path, now)
        for path, (at, _) in list(self.cooling.items()):
            if at <= now:
                del self.cooling[path]
                self.in_flight.add(path)
                self._tasks.append((path, self.dirty.pop(path, self.seq.get(path, 0)), None))
        return [path for path, at in self.holding.items() if at <= now]

    def confirm(
        self, paths: Iterable[str], now: float, exists: Callable[[str], bool]
    ) -> list[Delete]:
        """The deletes of `paths` that the disk confirms. A path that is back is read again
        (vim, rsync, git recreate files); one still being read is held again."""
        deletes: list[Delete] = []
        for path in paths:
            del self.holding[path]
            if exists(path):
                self.mark_dirty(path, now)
            elif path in self.in_flight or path in self.cooling:
                self.holding[path] = now + self.delete_hold
            else:
                self.known.discard(path)
                deletes.append(Delete(path, self._next_seq(path, now)))
        return deletes

    def forget_waits(self) -> None:
        """The root is gone: no settle or delete is worth doing until it is back."""
        self.holding.clear()
        self.settling.clear()

    def hurry(self, now: float) -> None:
        """Stopping: read what settles now, and make every hold and cool-down due."""
        for path in list(self.settling):
            self.mark_dirty(path, now)
        for path in self.holding:
            self.holding[path] = now
        for path in self.cooling:
            self.cooling[path] = (now, now)

    def take_tasks(self) -> list[Task]:
        """The reads to submit, in the order they were decided; forgets them."""
        tasks, self._tasks = self._tasks, []
        return tasks

    @property
    def has_tasks(self) -> bool:
        return bool(self._tasks)

    @property
    def busy(self) -> bool:
        """A delete or a burst re-read is still to come (a drain waits for them)."""
        return bool(self.holding or self.cooling)

    @property
    def waiting(self) -> int:
        """Paths waiting on a timer: to settle, for a burst to cool down, or for their delete
        to be confirmed. Zero, with no read in flight, means nothing seen is left to do."""
        return len(self.settling) + len(self.cooling) + len(self.holding)

    def next_due(self) -> float | None:
        """The earliest time `due` has something to do, None when nothing is timed."""
        pending = [*self.settling.values(), *self.holding.values()]
        pending += [at for at, _ in self.cooling.values()]
        return min(pending) if pending else None
