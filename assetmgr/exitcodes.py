"""What every command and every child process exits with: a leaf, so the command line, the
supervisor and the writer process share one meaning without importing each other."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    INVALID = 1  # some assets invalid (hydrate still wrote the valid ones)
    USAGE = 2  # usage or configuration error; a daemon that cannot start
    VALKEY = 3  # Valkey unreachable, or a write failed
    REFUSED = 4  # refused by a safety guard (mass delete, the writer lease)
