"""The per-file work: bytes in → verdict, blob and hash out (DESIGN §3).

`evaluate` is a pure function of a path and its bytes; `inspect` adds the one careful read of a
file from disk. Both return values, never raise, for anything a file can be: a rejection is a
result with a one-line reason and a low-cardinality code for the metrics.
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import json
import os
import re
import stat
import time
from dataclasses import dataclass, replace
from typing import Any

import fastjsonschema
import orjson
import zstandard

from .messages import Accepted, Missing, Rejected, Result, Stored, Unchanged, Verdict
from .schemas import Registry
from .tree import inside

ZSTD_LEVEL = 3


@dataclass(frozen=True, slots=True)
class Limits:
    max_size: int = 16 * 1024**2
    max_depth: int = 64


class _Invalid(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


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
                raise _Invalid("logic", f"{_name(logic)}: {_one_line(problem)}")
    except _Invalid as e:
        return Rejected(path, e.code, e.reason)
    except fastjsonschema.JsonSchemaValueException as e:
        return Rejected(path, "schema", f"schema {schema.name}: {_one_line(e.message)}")
    except Exception as e:  # a logic validator's own bug must not take the worker down
        return Rejected(path, "logic", f"validator failed: {type(e).__name__}: {_one_line(str(e))}")
    blob = (compressor or zstandard.ZstdCompressor(level=ZSTD_LEVEL)).compress(data)
    return Accepted(path, blob, hashlib.sha256(data).hexdigest(), len(data), schema.id)


def _misnamed(path: str) -> Rejected | None:
    """A file name that is not UTF-8 cannot be a key (Valkey readers get text paths).

    The rejection names the path with the bad bytes escaped (`\\xff`), so reports stay printable.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        return Rejected(shown, "encoding", "file name is not valid UTF-8")
    return None


def parse_strict(data: bytes, limits: Limits) -> Any:
    """Parse JSON refusing what a lenient parser lets through; raise _Invalid with a reason.

    The fast path is orjson (strict UTF-8, no NaN, no BOM) plus a proof that no object key is
    repeated, which orjson would silently collapse. When the bytes hold no escaped quote, every
    `"` delimits a string, so splitting on it leaves the text outside strings at even places;
    there each `:` separates one key from its value. Counted the same way in orjson's compact
    output, they are the keys it kept: equal counts mean no key was repeated. Errors and
    escaped quotes (in the input or, from a \\u0022, the output) take the exact slow path.
    """
    if data and len(data) <= limits.max_size and b'\\"' not in data:
        try:
            document = orjson.loads(data)
            output = orjson.dumps(document)
        except (orjson.JSONDecodeError, orjson.JSONEncodeError):
            pass  # the slow path says precisely what is wrong
        else:
            outside = _outside_strings(data)
            if (
                b'\\"' not in output
                and outside.count(b":") == _outside_strings(output).count(b":")
                and _depth_within(outside, limits.max_depth)
            ):
                return document
    return _parse_exact(data, limits)


def _outside_strings(data: bytes) -> bytes:
    """The JSON text between its strings (valid only when no quote is escaped)."""
    return b"".join(data.split(b'"')[0::2])


_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_INNERMOST = re.compile(rb"\{\}|\[\]")


def _depth_within(outside: bytes, limit: int) -> bool:
    """Is the nesting of these structural brackets at most `limit`? Each pass strips the
    innermost pairs, so the passes needed to empty the string are the depth."""
    brackets = outside.translate(None, _NOT_BRACKETS)
    if len(brackets) // 2 <= limit:
        return True
    for _ in range(limit):
        brackets = _INNERMOST.sub(b"", brackets)
        if not brackets:
            return True
    return False


def _parse_exact(data: bytes, limits: Limits) -> Any:
    """The stdlib parser with hooks: slower, but names every problem exactly."""
    if not data:
        raise _Invalid("empty", "empty file")
    if len(data) > limits.max_size:
        raise _Invalid("too_large", f"{len(data)} bytes is over the {limits.max_size}-byte limit")
    if data.startswith(codecs.BOM_UTF8):
        raise _Invalid("encoding", "starts with a UTF-8 byte order mark")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Invalid("encoding", f"not UTF-8: invalid byte at offset {e.start}") from None
    try:
        document = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise _Invalid(
            "syntax", f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except RecursionError:
        raise _Invalid("depth", f"nesting deeper than {limits.max_depth}") from None
    # Counting brackets is C-speed and bounds the depth; walk only when it might be exceeded.
    if (
        data.count(b"[") + data.count(b"{") > limits.max_depth
        and _depth(document) > limits.max_depth
    ):
        raise _Invalid("depth", f"nesting deeper than {limits.max_depth}")
    return document


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Invalid("duplicate_key", f"duplicate object key {key!r}")
            seen.add(key)
    return result


def _no_constant(name: str) -> Any:
    raise _Invalid("non_finite", f"{name} is not valid JSON")


def _depth(document: Any) -> int:
    deepest = 0
    stack = [(document, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in node)
    return deepest


def fingerprint(registry: Registry, limits: Limits) -> str:
    """What a verdict depends on besides the bytes; equal fingerprints give equal verdicts."""
    digest = hashlib.sha256(registry.fingerprint().encode())
    digest.update(f"{limits.max_size}:{limits.max_depth}".encode())
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
        st = _stat(root, full, limits)
        if expect is not None and expect[1] and expect[1] == signature(st):
            return Unchanged(path, expect[0], seq)
        data, sig, mtime_ns = _read(full, limits)
    except FileNotFoundError:
        return Missing(path, seq)
    except _Invalid as e:
        return Rejected(path, e.code, e.reason, seq)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return Missing(path, seq)
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
        return signature(_stat(root, os.path.join(root, path), limits)) == stored[1]
    except (OSError, _Invalid, ValueError):
        return False


def _stat(root: str, full: str, limits: Limits) -> os.stat_result:
    """The file's status, following a symlink only when it stays inside the root."""
    st = os.lstat(full)
    if stat.S_ISLNK(st.st_mode):
        target = os.path.realpath(full)
        if not inside(os.path.realpath(root), target):
            raise _Invalid("symlink_outside", "symlink points outside the root")
        st = os.stat(full)
    _check_regular(st, limits)
    return st


def _read(full: str, limits: Limits) -> tuple[bytes, str, int]:
    """The bytes, the signature to store ('' when the file changed while being read or too
    recently to be vouched for), and the mtime."""
    started = time.time_ns()
    # O_NONBLOCK: if a FIFO is swapped in between stat and open, open must not hang.
    fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        _check_regular(st, limits)
        chunks = []
        remaining = limits.max_size + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limits.max_size:
        raise _Invalid("too_large", f"over the {limits.max_size}-byte limit")
    sig = signature(st)
    if sig != signature(after) or st.st_ctime_ns > started - RACY_NS:
        sig = ""
    return data, sig, st.st_mtime_ns


def _check_regular(st: os.stat_result, limits: Limits) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise _Invalid("not_regular", f"not a regular file ({_kind(st.st_mode)})")
    if st.st_size > limits.max_size:
        raise _Invalid("too_large", f"{st.st_size} bytes is over the {limits.max_size}-byte limit")


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
    return " ".join(str(text).split())
