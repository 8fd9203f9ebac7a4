"""Strict JSON: what assetmgr refuses that a lenient parser lets through, named exactly.

UTF-8 only, no byte order mark, no duplicate object key, no NaN/Infinity and no number a
double cannot hold (what orjson, the shipped client, and JavaScript read), no half surrogate
pair, bounded size, depth and value count. `parse_strict` is the fast path (orjson plus
C-speed proofs) falling back to `parse_exact` (the stdlib parser with hooks); the two agree on
every input (tests/test_parse_fastpath.py, tests/test_fuzz_worker.py).
"""

from __future__ import annotations

import codecs
import json
import math
import re
import sys
from typing import Any

import orjson

from assetmgr.limits import Limits


class Invalid(Exception):
    """Why bytes are not a strict JSON document: a REASONS code and a one-line reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def parse_strict(data: bytes, limits: Limits) -> Any:
    """Parse JSON refusing what a lenient parser lets through; raise Invalid with a reason.

    The fast path is orjson (strict UTF-8, no NaN, no BOM) plus C-speed proofs of what orjson
    does not check; errors and anything the proofs cannot settle take the exact slow path.
    """
    _check_values(data, limits)
    if data and len(data) <= limits.max_size and not _escaped_quote(data):
        document = _parse_fast(data, limits)
        if document is not _UNPROVEN:
            return document
    return parse_exact(data, limits)


_UNPROVEN = object()


def _check_values(data: bytes, limits: Limits) -> None:
    """Bound the memory a parse takes before parsing: every value or key but the first is
    preceded by `,` or `:` or opens with `[`/`{` (counted in strings too: an upper bound)."""
    if len(data) <= limits.max_values:
        return  # each mark is a byte: most files need no count
    if len(data) - len(data.translate(None, b",:[{")) > limits.max_values:
        raise Invalid("too_large", f"more than {limits.max_values} JSON values (max_values)")


def _parse_fast(data: bytes, limits: Limits) -> Any:
    """orjson's document when the proofs hold, else _UNPROVEN (freed before the slow path).

    With no escaped quote in the bytes, every `"` delimits a string, so the quotes count the
    strings, keys included. orjson's output of the document holds each string it kept once:
    a repeated key, which orjson silently collapses, drops at least one, so equal quote counts
    prove no key was repeated. A run of 19 or more digits outside strings may be an integer
    beyond 64 bits, which orjson reads as a float.
    """
    try:
        document = orjson.loads(data)
        output = orjson.dumps(document)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return _UNPROVEN  # the slow path says precisely what is wrong
    if (
        not _escaped_quote(output)
        and data.count(b'"') == output.count(b'"')
        and _depth_within(_brackets(data), limits.max_depth)
        and not _long_digits_outside_strings(data)
    ):
        return document
    return _UNPROVEN


def _escaped_quote(data: bytes) -> bool:
    """Does `\\"` occur? Most files hold no backslash at all: one byte is found far faster."""
    return b"\\" in data and b'\\"' in data


def _brackets(data: bytes) -> bytes:
    """The brackets outside strings, in order (valid only when no quote is escaped).

    Kept with the quotes, a string without brackets is `""`. One left-to-right pass removing
    `""` pairs the quotes 0-1, 2-3, ... only while each string is empty of brackets; a quote
    left over means one is not, and the strings are cut out the slow way.
    """
    marks = data.translate(None, _NOT_BRACKETS_OR_QUOTES).replace(b'""', b"")
    if b'"' in marks:
        marks = _outside_strings(data).translate(None, _NOT_BRACKETS_OR_QUOTES)
    return marks


def _long_digits_outside_strings(data: bytes) -> bool:
    """A run of 19 digits outside strings (valid only when no quote is escaped)? Most files
    have none anywhere, which settles it without finding the strings."""
    if _LONG_DIGITS not in data.translate(_DIGITS_ONLY):
        return False
    return _LONG_DIGITS in _outside_strings(data).translate(_DIGITS_ONLY)


def _outside_strings(data: bytes) -> bytes:
    """The JSON text between its strings (valid only when no quote is escaped)."""
    return b"".join(data.split(b'"')[0::2])


# Digits as "0", everything else as " ": a run of 19 digits is then a plain substring search.
_DIGITS_ONLY = bytes(48 if 48 <= c <= 57 else 32 for c in range(256))
_LONG_DIGITS = b"0" * 19
_NOT_BRACKETS_OR_QUOTES = bytes(c for c in range(256) if c not in b'[]{}"')


def _depth_within(brackets: bytes, limit: int) -> bool:
    """Is the nesting of these structural brackets at most `limit`? Each pass strips the
    innermost pairs, so the passes needed to empty the string are the depth. A pair becomes
    a placeholder first, so one pass cannot strip the pair it uncovers (`{[]}`), and no pass
    builds an object per match (a regex substitution did: 150 MB for two million pairs)."""
    if len(brackets) // 2 <= limit:
        return True
    for _ in range(limit):
        brackets = brackets.replace(b"[]", b".").replace(b"{}", b".").replace(b".", b"")
        if not brackets:
            return True
    return False


def parse_exact(data: bytes, limits: Limits) -> Any:
    """The stdlib parser with hooks: slower, but names every problem exactly."""
    if not data:
        raise Invalid("empty", "empty file")
    if len(data) > limits.max_size:
        raise Invalid("too_large", f"{len(data)} bytes is over the {limits.max_size}-byte limit")
    if data.startswith(codecs.BOM_UTF8):
        raise Invalid("encoding", "starts with a UTF-8 byte order mark")
    _check_values(data, limits)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Invalid("encoding", f"not UTF-8: invalid byte at offset {e.start}") from None
    try:
        document = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_float=_finite_float,
            parse_int=_finite_int,
        )
    except json.JSONDecodeError as e:
        raise Invalid(
            "syntax", f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except RecursionError:
        deepest = min(limits.max_depth, sys.getrecursionlimit())
        raise Invalid("depth", f"nesting deeper than {deepest}") from None
    # Counting brackets is C-speed and bounds the depth; walk only when it might be exceeded.
    if (
        data.count(b"[") + data.count(b"{") > limits.max_depth
        and _depth(document) > limits.max_depth
    ):
        raise Invalid("depth", f"nesting deeper than {limits.max_depth}")
    if _SURROGATE_ESCAPE.search(data) and _has_lone_surrogate(document):
        raise Invalid("encoding", "a \\u escape is half of a surrogate pair: not Unicode text")
    return document


# A double's largest finite value has 309 digits; beyond, every JSON reader that uses doubles
# (orjson, JavaScript) reads infinity or fails.
_INT_DIGITS = 309
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise Invalid("non_finite", f"number {_clip(text)} is out of range (infinite as a double)")
    return value


def _finite_int(text: str) -> int:
    digits = len(text) - text.startswith("-")
    if digits >= _INT_DIGITS and (digits > _INT_DIGITS or abs(int(text)) > sys.float_info.max):
        raise Invalid("non_finite", f"integer of {digits} digits is out of range of a double")
    return int(text)


def _clip(text: str, width: int = 24) -> str:
    return text if len(text) <= width else f"{text[:width]}... ({len(text)} characters)"


def _has_lone_surrogate(document: Any) -> bool:
    """Does a string or key hold half a surrogate pair (from a `\\ud800` escape)? orjson and
    most readers refuse such text."""
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if not node.isascii():
                try:
                    node.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif isinstance(node, dict):
            stack.extend(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise Invalid("duplicate_key", f"duplicate object key {key!r}")
            seen.add(key)
    return result


def _no_constant(name: str) -> Any:
    raise Invalid("non_finite", f"{name} is not valid JSON")


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
