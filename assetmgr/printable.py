"""Paths fit for a one-line report: a leaf every layer that logs or prints a path uses."""

from __future__ import annotations

import os


def shown(path: str) -> str:
    """`path` fit for a one-line report: bytes that are not UTF-8 as `\\xNN`, characters that
    do not print (newline, escape, U+2028) as their Python escapes."""
    if path.isprintable():
        return path
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
