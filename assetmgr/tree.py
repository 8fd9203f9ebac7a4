"""Which files under the root are assets, and walking the tree to find them (DESIGN §3).

An asset is a `*.json` entry below the root. A path component starting with `.` or `#`, or
ending with `~`, hides itself and everything under it: editor swap and backup files, rsync
temporaries, `.git`, Kubernetes `..data`. Directory symlinks are followed only when they resolve
inside the root; what the non-directory entries are (FIFO, symlink out) is the worker's to judge.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import PurePosixPath

from .messages import Stored

SUFFIX = ".json"

# Per chunk of paths, what Valkey holds for them (a hint: only stat or hash what is unchanged).
Lookup = Callable[[Sequence[str]], dict[str, Stored]]


def is_ignored(path: str) -> bool:
    """True when any component of the relative POSIX `path` hides it."""
    return any(hidden(part) for part in path.split("/"))


def hidden(name: str) -> bool:
    """Does this one path component hide itself and everything under it?"""
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
    first = os.path.realpath(os.path.join(root, start))
    if not inside(root_real, first):
        return
    # (relative path, real path, real paths of its ancestors). Only the ancestors guard
    # against symlink loops: two symlinks to one directory (a Capistrano `current ->
    # releases/7`) are two sets of assets. Only a symlink can leave the root or loop, so
    # only symlinks are resolved.
    stack: list[tuple[str, str, frozenset[str]]] = [(start, first, frozenset((first,)))]
    while stack:
        rel, real, ancestors = stack.pop()
        if on_dir is not None:
            on_dir(rel)
        try:
            with os.scandir(os.path.join(root, rel)) as listing:
                entries = list(listing)
        except OSError:
            continue  # vanished or unreadable directory: its watch/rescan will tell
        prefix = rel + "/" if rel else ""
        for entry in entries:
            name = entry.name
            if hidden(name):
                continue
            if _is_dir(entry):
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if target in ancestors or not inside(root_real, target):
                        continue
                else:
                    target = f"{real}/{name}"
                stack.append((prefix + name, target, ancestors | {target}))
            elif name.endswith(SUFFIX):
                yield prefix + name


def no_lookup(paths: Sequence[str]) -> dict[str, Stored]:
    return {}


def chunks(
    root: str,
    start: str = "",
    on_dir: Callable[[str], object] | None = None,
    lookup: Lookup = no_lookup,
    size: int = 512,
) -> Iterator[tuple[list[str], dict[str, Stored]]]:
    """The one scan driver (daemon and one-shot): `walk` in chunks of `size` paths, each with
    what `lookup` says Valkey holds for them, so lookups overlap the walk and the reads."""
    chunk: list[str] = []
    for path in walk(root, start, on_dir):
        chunk.append(path)
        if len(chunk) >= size:
            yield chunk, lookup(chunk)
            chunk = []
    if chunk:
        yield chunk, lookup(chunk)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def parent(path: str) -> str:
    parent_path = str(PurePosixPath(path).parent)
    return "" if parent_path == "." else parent_path


def root_problem(
    root: str, identity: tuple[int, int] | None = None, allow_empty: bool = False
) -> str | None:
    """Why the root cannot be trusted as the truth: missing, not a directory, unreadable,
    empty (an unmounted mount point looks like that), or not the directory it was
    (`identity` = (st_dev, st_ino) when it was first seen)."""
    try:
        st = os.stat(root)
    except FileNotFoundError:
        return f"root {root} does not exist"
    except OSError as e:
        return f"root {root} is unavailable: {e.strerror}"
    if not os.path.isdir(root):
        return f"root {root} is not a directory"
    if identity is not None and (st.st_dev, st.st_ino) != identity:
        return f"root {root} was replaced"
    try:
        with os.scandir(root) as entries:
            if not allow_empty and not any(True for _ in entries):
                return f"root {root} is empty (unmounted?)"
    except OSError as e:
        return f"root {root} cannot be read: {e.strerror}"
    return None
