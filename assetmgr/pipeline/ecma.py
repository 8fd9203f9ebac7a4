"""ECMA-262 regular expressions on Python's `re`, for the schemas fastjsonschema compiles.

JSON Schema regexes are ECMA-262 (what JavaScript runs). Python's `re` reads the same text
differently in ways that open holes in a schema: `$` also matches before a final newline, `\\d`
and `\\w` match any Unicode digit or letter, `.` matches `\\r` and U+2028. `translate` rewrites a
pattern into the Python regex that matches the same strings, or raises `Unsupported` naming the
construct it cannot carry over (the schema is then refused, never checked more loosely).
"""

from __future__ import annotations

import functools
import re

from assetmgr.printable import shown

# ECMA-262 WhiteSpace and LineTerminator: what `\s` matches (Python's adds \x1c-\x1f, not \ufeff).
SPACES = "\\t\\n\\v\\f\\r \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
DOT = "[^\\n\\r\\u2028\\u2029]"  # `.` without the s flag
ANY = "[\\s\\S]"  # `[^]`; with (?a) \s|\S is still every character
QUANTIFIER = re.compile(r"\{(\d+)(,(\d*))?\}")
GROUP_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
CONTROL = "tnrvf"  # `\t` ... `\f`: the same in both
CLASS_ESCAPES = "dDwWbB"  # ASCII under (?a), as ECMA-262 defines them
SYNTAX = "^$\\.*+?()[]{}|/-"


class Unsupported(ValueError):
    """A pattern whose ECMA-262 meaning Python's `re` cannot reproduce."""


def translate(pattern: str) -> str:
    """The Python regex (for `re.search`) that matches what `pattern` matches in ECMA-262."""
    out = ["(?a)"]  # \d \w \b ASCII, as in ECMA-262 (the u flag does not change them)
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            text, i = _escape(pattern, i, in_class=False)
            out.append(text)
        elif c == "[":
            text, i = _class(pattern, i)
            out.append(text)
        elif c == "(":
            text, i = _group(pattern, i)
            out.append(text)
        elif c == "{":
            match = QUANTIFIER.match(pattern, i)
            if not match or not out[-1:] or out[-1] in ("(?a)", "|", "("):
                raise Unsupported(_say(pattern, "a '{' that is not a quantifier"))
            out.append(match.group(0))
            i = match.end()
            i = _after_quantifier(pattern, i, out)
        elif c in "*+?":
            out.append(c)
            i = _after_quantifier(pattern, i + 1, out)
        elif c == ".":
            out.append(DOT)
            i += 1
        elif c == "$":
            out.append("\\Z")  # end of input only, never before a final newline
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def compile(pattern: str) -> re.Pattern[str]:
    """`translate`d and compiled once per pattern text."""
    translated = translate(pattern)
    try:
        return re.compile(translated)
    except re.error as e:  # e.g. a look-behind of variable length, which ECMA-262 allows
        raise Unsupported(_say(pattern, f"what Python's re rejects: {e}")) from None


def _after_quantifier(pattern: str, i: int, out: list[str]) -> int:
    """A lazy `?` is common to both; a possessive `+` is Python's alone (an ECMA syntax error)."""
    if i < len(pattern) and pattern[i] == "?":
        out.append("?")
        return i + 1
    if i < len(pattern) and pattern[i] in "*+{":
        raise Unsupported(_say(pattern, "a quantifier on a quantifier"))
    return i


def _group(pattern: str, i: int) -> tuple[str, int]:
    if not pattern.startswith("(?", i):
        return "(", i + 1
    for opener in ("(?:", "(?=", "(?!", "(?<=", "(?<!"):
        if pattern.startswith(opener, i):
            return opener, i + len(opener)
    if pattern.startswith("(?<", i):
        name = GROUP_NAME.match(pattern, i + 3)
        if name and pattern.startswith(">", name.end()) and "$" not in name.group(0):
            return f"(?P<{name.group(0)}>", name.end() + 1
    raise Unsupported(_say(pattern, f"the group syntax {pattern[i : i + 4]!r}"))


def _class(pattern: str, i: int) -> tuple[str, int]:
    """`[...]`: its items, with `\\s`/`\\S` spelled out and Python's set operators escaped."""
    start = i
    i += 1
    negated = pattern.startswith("^", i)
    i += negated
    if pattern.startswith("]", i):  # `[]` matches nothing, `[^]` anything
        return (ANY if negated else "(?!)"), i + 1
    items: list[str] = []
    not_space = False
    while i < len(pattern) and pattern[i] != "]":
        c = pattern[i]
        if c == "\\":
            if pattern.startswith("\\S", i):
                not_space = True
                i += 2
                continue
            text, i = _escape(pattern, i, in_class=True)
            items.append(text)
        else:
            items.append("\\" + c if c in "[&~|" else c)
            i += 1
    if i >= len(pattern):
        raise Unsupported(_say(pattern[start:], "an unterminated character class"))
    body = "".join(items)
    if not not_space:
        return f"[{'^' if negated else ''}{body}]", i + 1
    if negated:  # neither an item nor a non-space: a space that is not an item
        return (f"(?![{body}])[{SPACES}]" if body else f"[{SPACES}]"), i + 1
    return (f"(?:[{body}]|[^{SPACES}])" if body else f"[^{SPACES}]"), i + 1


def _escape(pattern: str, i: int, in_class: bool) -> tuple[str, int]:
    """One `\\x` escape at `i`: its Python spelling and the index after it."""
    if i + 1 >= len(pattern):
        raise Unsupported(_say(pattern, "a trailing backslash"))
    c = pattern[i + 1]
    if c in CLASS_ESCAPES and not (in_class and c in "bB"):
        return "\\" + c, i + 2
    if in_class and c == "b":
        return "\\x08", i + 2
    if c == "s":
        return (SPACES if in_class else f"[{SPACES}]"), i + 2
    if c == "S":
        return f"[^{SPACES}]", i + 2
    if c in CONTROL or c in SYNTAX:
        return "\\" + c, i + 2
    if c == "0" and not pattern[i + 2 : i + 3].isdigit():
        return "\\x00", i + 2
    if c.isdigit() and c != "0" and not in_class:
        digits = re.match(r"\d{1,2}", pattern[i + 1 :])
        assert digits is not None
        return "(?:\\" + digits.group(0) + ")", i + 1 + len(digits.group(0))
    if c == "c" and pattern[i + 2 : i + 3].isascii() and pattern[i + 2 : i + 3].isalpha():
        return f"\\x{ord(pattern[i + 2]) % 32:02x}", i + 3
    if c == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", pattern[i + 2 : i + 4]):
        return "\\x" + pattern[i + 2 : i + 4], i + 4
    if c == "u":
        return _unicode_escape(pattern, i)
    if c == "k" and not in_class:
        name = re.match(r"<([A-Za-z_][A-Za-z0-9_]*)>", pattern[i + 2 :])
        if name:
            return f"(?P={name.group(1)})", i + 2 + name.end()
    raise Unsupported(_say(pattern, f"the escape '\\{c}'"))


def _unicode_escape(pattern: str, i: int) -> tuple[str, int]:
    """`\\uHHHH`, a surrogate pair of them (one code point, as with the u flag), `\\u{H...}`."""
    braced = re.match(r"\\u\{([0-9A-Fa-f]{1,6})\}", pattern[i:])
    if braced and int(braced.group(1), 16) <= 0x10FFFF:
        return f"\\U{int(braced.group(1), 16):08x}", i + braced.end()
    pair = re.match(r"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})", pattern[i:], re.I)
    if pair:
        high, low = int(pair.group(1), 16), int(pair.group(2), 16)
        return f"\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08x}", i + 12
    single = re.match(r"\\u([0-9A-Fa-f]{4})", pattern[i:])
    if single:
        return "\\u" + single.group(1), i + 6
    raise Unsupported(_say(pattern, "a malformed '\\u' escape"))


def _say(pattern: str, construct: str) -> str:
    text = pattern if len(pattern) <= 60 else pattern[:57] + "..."
    return f"pattern {shown(text)!r} uses {construct}, which Python's re cannot match as ECMA-262"
