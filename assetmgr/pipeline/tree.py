"""Which files under the root are assets, and walking the tree to find them.

An asset is a `*.json` entry below the root. A path component starting with `.` or `#`, or
ending with `~`, hides itself and everything under it: editor swap and backup files, rsync
temporaries, `.git`, Kubernetes `..data`. Directory symlinks are followed only when they resolve
inside the root; what the non-directory entries are (FIFO, symlink out) is the worker's to judge.
A directory the walk cannot follow (unreadable, or a symlink out of the root) is reported as a
`Rejected` for its path, so no scan silently misses part of the tree.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import PurePosixPath

from assetmgr.messages import Rejected, Stored

SUFFIX = ".json"
DIR_OUTSIDE = "directory symlink points outside the root (not followed)"
# Paths per chunk of every scan (daemon and one-shot): one stored-hash lookup and one submission
# to the pool each. An unchanged 20,000-file re-hydrate took 0.46 s with 512 and 0.41 s with
# 2,048 (40 vs 10 round trips and hand-offs with the lookup thread); 4,096 gained nothing more.
SCAN_CHUNK = 2048

# Told of each directory a walk could not follow.
Problem = Callable[[Rejected], object]

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


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def name_problem(path: str) -> str | None:
    """Why `path` cannot be a key: Valkey readers get UTF-8 text, and a control character (a
    newline) would split the lines of every log, report and line-based consumer."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8"
    if _CONTROL.search(path):
        return "file name has a control character"
    return None


def join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


def inside(root_real: str, target: str) -> bool:
    """Does `target` (already resolved) lie inside the resolved root?"""
    return target == root_real or target.startswith(root_real.rstrip("/") + "/")


def walk(
    root: str,
    start: str = "",
    on_dir: Callable[[str], object] | None = None,
    on_problem: Problem | None = None,
) -> Iterator[str]:
    """Relative paths of asset candidates under `root/start`, depth first.

    `on_dir(rel)` runs for each directory before it is listed, so a watcher can put its
    inotify watch in place first and miss nothing created during the listing. `on_problem`
    gets a rejection for each directory that could not be listed or leads out of the root.
    """
    tell = on_problem or _ignore
    root_real = os.path.realpath(root)
    first = os.path.realpath(os.path.join(root, start))
    if not inside(root_real, first):
        if start:
            tell(Rejected(start, "symlink_outside", DIR_OUTSIDE))
        return
    # (relative path, real path, real paths of its ancestors). Only the ancestors guard
    # against symlink loops: two symlinks to one directory (a Capistrano `current ->
    # releases/7`) are two sets of assets. Only a symlink can leave the root or loop, so
    # only symlinks are resolved.
    above = _ancestors(root, start)
    if first in above:
        return  # `start` is a symlink to a directory above it: a cycle, walked once already
    stack = [(start, first, above | {first})]
    while stack:
        rel, real, ancestors = stack.pop()
        if on_dir is not None:
            on_dir(rel)
        prefix = rel + "/" if rel else ""
        for entry in _listing(root, rel, tell):
            name = entry.name
            if hidden(name):
                continue
            is_dir = _is_dir(entry)
            if isinstance(is_dir, str):
                tell(Rejected(prefix + name, "unreadable", f"cannot stat: {is_dir}"))
            elif is_dir:
                target = _target(entry, real, root_real, ancestors, tell, prefix + name)
                if target:
                    stack.append((prefix + name, target, ancestors | {target}))
            elif name.endswith(SUFFIX):
                yield prefix + name


def _listing(root: str, rel: str, tell: Problem) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(os.path.join(root, rel)) as listing:
            return list(listing)
    except (FileNotFoundError, NotADirectoryError):
        return []  # vanished: its watch/rescan will tell
    except OSError as e:
        tell(Rejected(rel or ".", "unreadable", f"cannot list directory: {e.strerror}"))
        return []


def _target(
    entry: os.DirEntry[str],
    real: str,
    root_real: str,
    ancestors: frozenset[str],
    tell: Problem,
    rel: str,
) -> str | None:
    """The real path of a directory to walk next, or None: a symlink out of the root (told)
    or back to a directory above it (a cycle, `loop -> ..`, walked once, not forever)."""
    if not entry.is_symlink():
        return f"{real}/{entry.name}"
    target = os.path.realpath(entry.path)
    if not inside(root_real, target):
        tell(Rejected(rel, "symlink_outside", DIR_OUTSIDE))
        return None
    return None if target in ancestors else target


def _ignore(problem: Rejected) -> None:
    pass


def _ancestors(root: str, start: str) -> frozenset[str]:
    """Real paths of the root and of every directory above `start`: a scan that starts below
    the root (a new symlink `weights/loop -> ..`) knows the cycles a full walk would."""
    parts = start.split("/") if start else []
    return frozenset(os.path.realpath(os.path.join(root, *parts[:i])) for i in range(len(parts)))


def no_lookup(paths: Sequence[str]) -> dict[str, Stored]:
    return {}


def chunks(
    root: str,
    start: str = "",
    on_dir: Callable[[str], object] | None = None,
    lookup: Lookup = no_lookup,
    size: int = SCAN_CHUNK,
    on_problem: Problem | None = None,
) -> Iterator[tuple[list[str], dict[str, Stored]]]:
    """The one scan driver (daemon and one-shot): `walk` in chunks of `size` paths, each with
    what `lookup` says Valkey holds for them.

    The lookups overlap the walk and the caller's work: a helper thread asks for chunk N+1
    while chunk N is handled (the wait on the socket releases the GIL, and Valkey runs on
    its own core). The thread only ever calls `lookup`, one call at a time, in order.
    """
    if lookup is no_lookup:
        for chunk in _batched(walk(root, start, on_dir, on_problem), size):
            yield chunk, {}
        return
    with ThreadPoolExecutor(1, thread_name_prefix="assetmgr-lookup") as helper:
        ahead: tuple[list[str], Future[dict[str, Stored]]] | None = None
        for chunk in _batched(walk(root, start, on_dir, on_problem), size):
            asked = helper.submit(lookup, chunk)
            if ahead is not None:
                yield ahead[0], ahead[1].result()
            ahead = (chunk, asked)
        if ahead is not None:
            yield ahead[0], ahead[1].result()


def _batched(paths: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for path in paths:
        chunk.append(path)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _is_dir(entry: os.DirEntry[str]) -> bool | str:
    """Is the entry a directory (following a symlink)? A reason when that cannot be told (a
    directory it might be would be missed); a symlink loop is just not a directory."""
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError as e:
        return False if e.errno == errno.ELOOP else (e.strerror or str(e))


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
    # Emptiness first: after an unmount the path names the (empty) mount point, which is
    # also "another directory", but "empty (unmounted?)" is what the operator needs to read.
    try:
        with os.scandir(root) as entries:
            if not allow_empty and not any(True for _ in entries):
                return f"root {root} is empty (unmounted?)"
    except OSError as e:
        return f"root {root} cannot be read: {e.strerror}"
    if identity is not None and (st.st_dev, st.st_ino) != identity:
        return f"root {root} was replaced"
    return None
