"""Handing freed memory back to the kernel, so a process' RSS follows what it holds.

CPython frees a large document's objects as soon as a file is done, but glibc keeps the pages:
after the first large buffer is freed its mmap threshold grows, later large buffers come from
the heap, and free chunks inside the heap are not returned. One 10 MB asset left a worker at
~110 MB for good. `malloc_trim(0)` returns every free page; it is called when the RSS has
grown by `slack` since the last call, which a process checks after a unit of work.
"""

from __future__ import annotations

import os
from collections.abc import Callable

SLACK = 4 * 1024**2
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    """This process' resident set, in bytes (one read of /proc/self/statm)."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


class Ceiling:
    """Trim the C heap when the RSS has grown by more than `slack` since the last trim."""

    def __init__(self, slack: int = SLACK) -> None:
        self.slack = slack
        self._trim = _malloc_trim()
        self._base = rss() if self._trim else 0

    def check(self) -> None:
        if self._trim and rss() > self._base + self.slack:
            self._trim(0)
            self._base = rss()


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl)."""
    import ctypes  # only here: most commands never trim, and ctypes costs an import

    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    return trim
