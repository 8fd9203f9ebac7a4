"""inotify watches on every directory of the tree, raw events turned into changes, and scans.

A watch is on an inode, so one watch can stand for several paths (a directory and the symlinks
to it inside the root); events on it are fanned out to every alias. Events are hints: each
becomes a `Change` naming a path whose disk state the reader must look at again. A scan puts
each directory's watch in place before listing it, so nothing created meanwhile is missed;
`gone` and `below` say which known paths a scan or a vanished directory leaves behind.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass

from inotify_simple import INotify
from inotify_simple import flags as F

from assetmgr import metrics
from assetmgr.messages import Stored
from assetmgr.pipeline import tree

log = logging.getLogger("assetmgr.watcher")


MASK = (
    F.CREATE
    | F.DELETE
    | F.MODIFY
    | F.CLOSE_WRITE
    | F.MOVED_FROM
    | F.MOVED_TO
    | F.ATTRIB
    | F.DELETE_SELF
    | F.MOVE_SELF
    | F.ONLYDIR
    | F.EXCL_UNLINK
)


class Kind(enum.Enum):
    """What a change asks of the reader."""

    DIRTY = "dirty"  # complete content on disk now: read it
    SETTLE = "settle"  # being written: read once closed, or after a quiet period
    GONE = "gone"  # maybe deleted: confirm against the disk after the hold
    DIR_IN = "dir_in"  # a directory (or a symlink to one) appeared: watch it, then scan it
    DIR_OUT = "dir_out"  # a directory went away: drop its watches and its assets
    RESCAN_DIR = "rescan_dir"  # a hidden entry was swapped (Kubernetes ..data): rescan the dir
    OVERFLOW = "overflow"  # the kernel queue overflowed: full rescan
    ROOT_LOST = "root_lost"  # the root itself was deleted, moved or unmounted
    SCHEMAS = "schemas"  # something changed in the schemas directory


@dataclass(frozen=True, slots=True)
class Change:
    kind: Kind
    path: str = ""


class Watches:
    def __init__(self, root: str, schemas_dir: str | None = None) -> None:
        self.root = root
        self.inotify = INotify()
        self.by_wd: dict[int, set[str]] = {}
        self.by_dir: dict[str, int] = {}
        self.limit_hit = False
        self.schemas_wd: int | None = None
        if schemas_dir:
            self.schemas_wd = self.inotify.add_watch(
                schemas_dir, F.CLOSE_WRITE | F.MOVED_TO | F.MOVED_FROM | F.DELETE | F.CREATE
            )

    def fileno(self) -> int:
        return self.inotify.fileno()

    def close(self) -> None:
        self.inotify.close()

    def add(self, rel: str) -> bool:
        """Watch directory `rel`; False when it vanished or the watch limit is reached."""
        try:
            wd = self.inotify.add_watch(os.path.join(self.root, rel), MASK)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EMFILE):
                if not self.limit_hit:
                    log.error(
                        "inotify watch limit reached; raise fs.inotify.max_user_watches "
                        "(sysctl) — falling back to periodic full rescans",
                        extra={"dir": rel},
                    )
                self.limit_hit = True
            return False
        old = self.by_dir.get(rel)
        if old is not None and old != wd:
            self._unalias(old, rel)
        self.by_dir[rel] = wd
        self.by_wd.setdefault(wd, set()).add(rel)
        return True

    def _unalias(self, wd: int, rel: str) -> None:
        aliases = self.by_wd.get(wd)
        if aliases is None:
            return
        aliases.discard(rel)
        if not aliases:
            del self.by_wd[wd]
            with contextlib.suppress(OSError):  # already gone with its directory
                self.inotify.rm_watch(wd)

    def drop(self, rel: str) -> None:
        """Forget the watches of directory `rel` and everything below it."""
        prefix = rel + "/"
        for name in [d for d in self.by_dir if d == rel or d.startswith(prefix) or rel == ""]:
            self._unalias(self.by_dir.pop(name), name)

    def walk(
        self,
        start: str = "",
        lookup: tree.Lookup = tree.no_lookup,
        on_problem: tree.Problem | None = None,
    ) -> Iterator[tuple[list[str], dict[str, Stored]]]:
        """Walk `start` with every directory watched before it is listed, in chunks of paths
        with what Valkey holds for them (`tree.chunks`, the driver `hydrate` uses too)."""
        return tree.chunks(self.root, start, self.add, lookup, on_problem=on_problem)

    def read(self) -> list[Change]:
        changes: list[Change] = []
        for event in self.inotify.read(timeout=0):
            changes.extend(self._decode(event.wd, event.mask, event.name))
        return changes

    def _decode(self, wd: int, mask: int, name: str) -> list[Change]:
        if mask & F.Q_OVERFLOW:
            metrics.EVENTS.labels("overflow").inc()
            return [Change(Kind.OVERFLOW)]
        if wd == self.schemas_wd and wd != -1:
            # Any JSON file: a schema, or a document a schema refers to.
            return [Change(Kind.SCHEMAS)] if name.endswith(tree.SUFFIX) else []
        if mask & F.IGNORED:
            for rel in self.by_wd.pop(wd, set()):
                if self.by_dir.get(rel) == wd:
                    del self.by_dir[rel]
            return []
        dirs = self.by_wd.get(wd, set())
        if not name:  # the watched directory itself
            if mask & (F.DELETE_SELF | F.MOVE_SELF | F.UNMOUNT) and "" in dirs:
                return [Change(Kind.ROOT_LOST)]
            return []
        metrics.EVENTS.labels(_kind(mask)).inc()
        return [c for d in dirs for c in _changes(self.root, tree.join(d, name), name, mask)]


def below(paths: Iterable[str], rel: str) -> list[str]:
    """The `paths` inside directory `rel`; all of them for the root ("")."""
    if not rel:
        return list(paths)
    prefix = rel + "/"
    return [p for p in paths if p.startswith(prefix)]


def gone(known: Iterable[str], found: Container[str], rel: str = "") -> list[str]:
    """The `known` paths inside `rel` that a scan of `rel` did not find."""
    return [p for p in below(known, rel) if p not in found]


def _changes(root: str, path: str, name: str, mask: int) -> list[Change]:
    if tree.hidden(name):
        # Hidden itself, but a swapped hidden directory or symlink (Kubernetes `..data`,
        # an atomic symlink flip) changes what the visible symlinks next to it resolve to.
        # A dangling one (an emacs `.#name` lock) changes nothing: no rescan for it.
        full = os.path.join(root, path)
        if mask & (F.MOVED_TO | F.CREATE) and (
            mask & F.ISDIR or (os.path.islink(full) and os.path.exists(full))
        ):
            return [Change(Kind.RESCAN_DIR, tree.parent(path))]
        return []
    if mask & F.ISDIR:
        if mask & (F.CREATE | F.MOVED_TO):
            return [Change(Kind.DIR_IN, path)]
        if mask & (F.DELETE | F.MOVED_FROM):
            return [Change(Kind.DIR_OUT, path)]
        return []
    full = os.path.join(root, path)
    if mask & (F.CREATE | F.MOVED_TO) and os.path.islink(full) and os.path.isdir(full):
        return [Change(Kind.DIR_IN, path)]  # `ln -sfn releases/8 current`
    if mask & (F.DELETE | F.MOVED_FROM):
        # Could have been a symlink to a directory: dropping a subtree that is not there is free.
        return (
            [Change(Kind.DIR_OUT, path), Change(Kind.GONE, path)]
            if not path.endswith(tree.SUFFIX)
            else [Change(Kind.GONE, path)]
        )
    if not path.endswith(tree.SUFFIX):
        return []
    if mask & (F.CLOSE_WRITE | F.MOVED_TO | F.ATTRIB):
        return [Change(Kind.DIRTY, path)]
    if mask & F.CREATE:
        return [Change(Kind.DIRTY if os.path.islink(full) else Kind.SETTLE, path)]
    if mask & F.MODIFY:
        return [Change(Kind.SETTLE, path)]
    return []


def _kind(mask: int) -> str:
    for flag, label in (
        (F.CLOSE_WRITE, "close_write"),
        (F.MOVED_TO, "moved_to"),
        (F.MOVED_FROM, "moved_from"),
        (F.CREATE, "create"),
        (F.DELETE, "delete"),
        (F.MODIFY, "modify"),
        (F.ATTRIB, "attrib"),
    ):
        if mask & flag:
            return label
    return "other"
