"""How large and how deep one asset may be: the strict checks every file passes before its schema.

A leaf: the parser, the worker and the settings all read these, so it imports nothing of the
project. The numbers here are also the settings' defaults (`max_size`, `max_depth`, `max_values`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_SIZE = 16 * 1024**2
MAX_DEPTH = 64
# Parsed, a JSON value costs ~100 bytes: 16 MB of `[],` would take 530 MB in one worker.
MAX_VALUES = 1_000_000
PROTECTED_HARDLINKS = "/proc/sys/fs/protected_hardlinks"


def hard_links_protected() -> bool:
    """Does the kernel let a user hard-link only files they own or can read and write?
    Then a hard link in the tree shows nothing its maker could not read anyway."""
    try:
        with open(PROTECTED_HARDLINKS) as f:
            return f.read().strip() not in ("", "0")
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class Limits:
    max_size: int = MAX_SIZE
    max_depth: int = MAX_DEPTH
    max_values: int = MAX_VALUES
    # Accept regular files with more than one name (docs/security.md: hard links).
    hard_links: bool = field(default_factory=hard_links_protected)

    @classmethod
    def from_config(cls, cfg: Any) -> Limits:
        """The limits the resolved settings ask for (`cfg`: an `assetmgr.config.Config`)."""
        return cls(max_size=cfg.max_size, max_depth=cfg.max_depth, max_values=cfg.max_values)
