"""The per-file work: bytes in → verdict, blob and hash out.

`evaluate` is a pure function of a path and its bytes; `inspect` adds the one careful read of a
file from disk. Both return values, never raise, for anything a file can be: a rejection is a
result with a one-line reason and a low-cardinality code for the metrics.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from dataclasses import replace
from typing import Any

import zstandard

from assetmgr.limits import MAX_VALUES, Limits
from assetmgr.messages import Accepted, Missing, Rejected, Result, Stored, Unchanged, Verdict
from assetmgr.pipeline.jsonparse import Invalid, parse_strict
from assetmgr.pipeline.rejections import Violation
from assetmgr.pipeline.schemas import Registry
from assetmgr.pipeline.tree import inside, name_problem
from assetmgr.printable import shown

ZSTD_LEVEL = 3
READ_TRIES = 3  # reads of a file that keeps changing under the reader before it is rejected


def evaluate(
    path: str,
    data: bytes,
    registry: Registry,
    limits: Limits,
    compressor: zstandard.ZstdCompressor | None = None,
) -> Verdict:
    """Validate `data` as the asset at `path`; on success compress and hash it."""
    misnamed = _misnamed(path)
    if misnamed:
        return misnamed
    schema = registry.schema_for(path)
    if schema is None:
        return Rejected(path, "no_schema", "no schema for path")
    try:
        document = parse_strict(data, limits)
        schema.check(document)
        for logic in registry.logic_for(path):
            problem = logic(path, document)
            if problem:
                raise Invalid("logic", f"{_name(logic)}: {_one_line(problem)}")
    except Invalid as e:
        return Rejected(path, e.code, e.reason)
    except Violation as e:
        return Rejected(path, "schema", f"schema {schema.name}: {e}")
    except Exception as e:  # a logic validator's own bug must not take the worker down
        return Rejected(path, "logic", f"validator failed: {type(e).__name__}: {_one_line(str(e))}")
    blob = (compressor or zstandard.ZstdCompressor(level=ZSTD_LEVEL)).compress(data)
    return Accepted(path, blob, hashlib.sha256(data).hexdigest(), len(data), schema.id)


def _misnamed(path: str) -> Rejected | None:
    """A name that is not UTF-8 text without control characters cannot be a key.

    The rejection keeps the real path (the reader and the writer match results by it); reports
    print it with `printable.shown`, which escapes what does not print.
    """
    problem = name_problem(path)
    return Rejected(path, "encoding", problem) if problem else None


def fingerprint(registry: Registry, limits: Limits) -> str:
    """What a verdict depends on besides the bytes; equal fingerprints give equal verdicts."""
    digest = hashlib.sha256(registry.fingerprint().encode())
    digest.update(f"{limits.max_size}:{limits.max_depth}".encode())
    if limits.max_values != MAX_VALUES:  # the default leaves fingerprints as they were
        digest.update(f":{limits.max_values}".encode())
    return digest.hexdigest()[:16]


def inspect(
    root: str,
    path: str,
    registry: Registry,
    limits: Limits,
    compressor: zstandard.ZstdCompressor | None = None,
    *,
    seq: int = 0,
    expect: Stored | None = None,
    vfp: str = "",
) -> Result:
    """Read `root/path` safely and evaluate it. Never opens a FIFO, device or socket.

    With `expect` (the hash and stat signature Valkey holds, validated under the current
    fingerprint), a file whose signature is unchanged is Unchanged without being opened, and
    bytes that hash to the stored hash are Unchanged without being parsed, validated or
    compressed again.
    """
    misnamed = _misnamed(path)
    if misnamed:
        return replace(misnamed, seq=seq)
    full = os.path.join(root, path)
    try:
        if expect is not None and unchanged_on_disk(root, path, expect, limits):
            return Unchanged(path, expect[0], seq)
        data, sig, mtime_ns = _read_settled(root, full, limits)
    except FileNotFoundError:
        return Missing(path, seq)
    except Invalid as e:
        return Rejected(path, e.code, e.reason, seq)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return Missing(path, seq)
        if e.errno == errno.ELOOP:
            return Rejected(path, "unreadable", "symlink loop (too many levels of links)", seq)
        return Rejected(path, "unreadable", f"cannot read: {e.strerror or e}", seq)
    if expect is not None and hashlib.sha256(data).hexdigest() == expect[0]:
        return Unchanged(path, expect[0], seq)
    verdict = evaluate(path, data, registry, limits, compressor)
    if isinstance(verdict, Accepted):
        return Accepted(
            path, verdict.blob, verdict.hash, verdict.size, verdict.schema, mtime_ns, seq, vfp, sig
        )
    return replace(verdict, seq=seq)


# A file whose status changed less than this before it was read is not vouched for by its
# signature: a second change within the file system's timestamp granularity could leave the
# signature as it was (git's "racily clean" entries).
RACY_NS = 2_000_000_000


def signature(st: os.stat_result) -> str:
    """Identity and status of a file: device, inode, size, mtime and ctime. Any write, rename
    over it, chmod or `touch -r` changes the ctime, which no user can set back."""
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def unchanged_on_disk(root: str, path: str, stored: Stored, limits: Limits) -> bool:
    """Does the file still have the stat signature Valkey recorded with its content? (The
    scan's shortcut: no read, no worker. Anything unusual answers False: `inspect` decides.)"""
    if not stored[1]:
        return False
    try:
        return signature(_stat(root, f"{root}/{path}", limits)[0]) == stored[1]
    except (OSError, Invalid, ValueError):
        return False


def _read_settled(root: str, full: str, limits: Limits) -> tuple[bytes, str, int]:
    """The bytes of one state of the file, its signature to store ('' when it changed too
    recently to be vouched for), and its mtime. A file that grew, shrank, was replaced or
    was rewritten while it was read (its size, inode or times moved) is read again.

    One limit: a same-size rewrite in place within one tick of the file-time clock cannot be
    told from the file's metadata (docs/security.md). The daemon reads again at its close.
    """
    for _ in range(READ_TRIES):
        started = time.time_ns()
        read = _read(root, full, limits)
        if read is not None:
            data, before, after = read
            if len(data) == before.st_size and _same(before, after):
                racy = after.st_ctime_ns > started - RACY_NS
                return data, "" if racy else signature(after), after.st_mtime_ns
    raise Invalid("changing", f"kept changing while being read ({READ_TRIES} reads)")


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_size, a.st_mtime_ns, a.st_ctime_ns) == (
        b.st_ino,
        b.st_size,
        b.st_mtime_ns,
        b.st_ctime_ns,
    )


def _stat(root: str, full: str, limits: Limits) -> tuple[os.stat_result, bool]:
    """The file's status (following a symlink only when it stays inside the root), and
    whether the path is a symlink; raises Invalid for anything that is not an asset file."""
    st = os.lstat(full)
    link = stat.S_ISLNK(st.st_mode)
    if link:
        if not _inside_root(root, os.path.realpath(full)):
            raise Invalid("symlink_outside", "symlink points outside the root")
        st = os.stat(full)
    _check_file(st, limits)
    return st, link


def _read(
    root: str, full: str, limits: Limits
) -> tuple[bytes, os.stat_result, os.stat_result] | None:
    """Read `full` if it is a regular file inside the root; None if it was swapped meanwhile.

    What it is, is decided from lstat/stat before any open, so a FIFO, device or socket, a
    symlink out or a file over the size limit is never opened. The kernel's name for what was
    opened is checked before reading: a directory on the path swapped for a symlink out after
    the walk listed it leads nowhere either.
    """
    _, link = _stat(root, full, limits)
    # O_NONBLOCK: if a FIFO is swapped in between stat and open, open must not hang.
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(full, flags if link else flags | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno == errno.ELOOP and not link:
            return None  # became a symlink since the lstat: look again
        raise
    try:
        _check_opened_inside(root, fd)
        before = os.fstat(fd)
        _check_file(before, limits)
        data = _read_fd(fd, limits.max_size)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    return data, before, after


def _read_fd(fd: int, max_size: int) -> bytes:
    chunks = []
    remaining = max_size + 1
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    data = b"".join(chunks)
    if len(data) > max_size:
        raise Invalid("too_large", f"over the {max_size}-byte limit")
    return data


def _inside_root(root: str, target: str) -> bool:
    """Is the resolved `target` in the root? The root as named first (no system call), then
    resolved (a root that is itself a symlink, `/srv/assets -> releases/7`)."""
    return inside(os.path.abspath(root), target) or inside(os.path.realpath(root), target)


def _check_opened_inside(root: str, fd: int) -> None:
    try:
        where = os.readlink(f"/proc/self/fd/{fd}")
    except OSError as e:
        raise Invalid("unreadable", f"cannot tell where the file is: {e.strerror}") from None
    if not _inside_root(root, where):
        raise Invalid(
            "symlink_outside", "path leads outside the root (a directory on it is a symlink out)"
        )


def _check_file(st: os.stat_result, limits: Limits) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise Invalid("not_regular", f"not a regular file ({_kind(st.st_mode)})")
    if st.st_size > limits.max_size:
        raise Invalid("too_large", f"{st.st_size} bytes is over the {limits.max_size}-byte limit")
    if st.st_nlink > 1 and not limits.hard_links:
        raise Invalid(
            "hard_link", f"has {st.st_nlink} hard links and fs.protected_hardlinks is off"
        )


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISDIR, "directory"),
    ):
        if test(mode):
            return name
    return "special file"


def _name(function: Any) -> str:
    return getattr(function, "__qualname__", None) or repr(function)


def _one_line(text: str) -> str:
    """One printable line: a key or a validator's text with a control character is escaped."""
    return shown(" ".join(str(text).split()))
