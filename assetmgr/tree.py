"""Which files under the root are assets, and walking the tree to find them (DESIGN §3).

An asset is a `*.json` entry below the root. A path component starting with `.` or `#`, or
ending with `~`, hides itself and everything under it: editor swap and backup files, rsync
temporaries, `.git`, Kubernetes `..data`. Directory symlinks are followed only when they resolve
inside the root; what the non-directory entries are (FIFO, symlink out) is the worker's to judge.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import PurePosixPath

SUFFIX = ".json"


def is_ignored(path: str) -> bool:
    """True when any component of the relative POSIX `path` hides it."""
    return any(_hidden(part) for part in path.split("/"))


def _hidden(name: str) -> bool:
    return name.startswith((".", "#")) or name.endswith("~")


def is_asset_name(path: str) -> bool:
    return path.endswith(SUFFIX) and not is_ignored(path)


def join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


def inside(root_real: str, target: str) -> bool:
    """Does `target` (already resolved) lie inside the resolved root?"""
    return target == root_real or target.startswith(root_real.rstrip("/") + "/")


def walk(
    root: str,
    start: str = "",
    on_dir: Callable[[str], object] | None = None,
) -> Iterator[str]:
    """Relative paths of asset candidates under `root/start`, depth first.

    `on_dir(rel)` runs for each directory before it is listed, so a watcher can put its
    inotify watch in place first and miss nothing created during the listing.
    """
    root_real = os.path.realpath(root)
    # Only the chain of ancestors guards against symlink loops: two symlinks to one directory
    # (a Capistrano `current -> releases/7`) are two sets of assets.
    stack: list[tuple[str, frozenset[str]]] = [(start, frozenset())]
    while stack:
        rel, ancestors = stack.pop()
        real = os.path.realpath(os.path.join(root, rel))
        if real in ancestors or not inside(root_real, real):
            continue
        ancestors = ancestors | {real}
        if on_dir is not None:
            on_dir(rel)
        try:
            entries = list(os.scandir(os.path.join(root, rel)))
        except OSError:
            continue  # vanished or unreadable directory: its watch/rescan will tell
        for entry in entries:
            if _hidden(entry.name):
                continue
            child = join(rel, entry.name)
            if _is_dir(entry):
                stack.append((child, ancestors))
            elif entry.name.endswith(SUFFIX):
                yield child


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def parent(path: str) -> str:
    parent_path = str(PurePosixPath(path).parent)
    return "" if parent_path == "." else parent_path
