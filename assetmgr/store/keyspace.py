"""Every Valkey key and channel name, and the manifest record layout, in one place.

Other services read this keyspace; its names are a contract (docs/keyspace.md). The only knob is one
prefix, prepended to every key and channel, so several trees can share one Valkey.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.crc import key_slot

BLOB = "asset:blob:"
MANIFEST = "v4:manifest:"
CHANNEL = "asset_updates"
# Bookkeeping keys of the manager itself (lease, epoch, sync marker, cluster fences) live
# under this part.
BOOKKEEPING = "assetmgr:"
CODEC = "zstd"
# Keys a SCAN step visits: few round trips (40,000 assets: 8 of them), each about a millisecond.
SCAN_COUNT = 5000


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Key names for one prefix and layout. `Keyspace()` is the documented default layout.

    `hashtag` (the `key_layout = "hashtag"` setting) wraps the path in braces, `asset:blob:{P}`,
    so both keys of an asset hash to one cluster slot and commit in one atomic script. Readers
    must use the same layout.
    """

    prefix: str = ""
    hashtag: bool = False

    def blob(self, path: str) -> str:
        return f"{self.prefix}{BLOB}{{{path}}}" if self.hashtag else f"{self.prefix}{BLOB}{path}"

    def manifest(self, path: str) -> str:
        if self.hashtag:
            return f"{self.prefix}{MANIFEST}{{{path}}}"
        return f"{self.prefix}{MANIFEST}{path}"

    @property
    def channel(self) -> str:
        return f"{self.prefix}{CHANNEL}"

    @property
    def blob_pattern(self) -> str:
        """SCAN pattern for reading the blob keys; never used to delete."""
        return _glob_escape(f"{self.prefix}{BLOB}") + "*"

    @property
    def manifest_pattern(self) -> str:
        """SCAN pattern for reading the manifest keys; never used to delete."""
        return _glob_escape(f"{self.prefix}{MANIFEST}") + "*"

    def manifest_paths(self, client: Any) -> set[str]:
        """Paths that have a manifest in Valkey (SCAN: for reading, never to delete by)."""
        return self._stored(client, self.manifest_pattern, MANIFEST)

    def blob_paths(self, client: Any) -> set[str]:
        """Paths that have a blob in Valkey (SCAN: for reading, never to delete by)."""
        return self._stored(client, self.blob_pattern, BLOB)

    def _stored(self, client: Any, pattern: str, head: str) -> set[str]:
        """Paths of the keys of this layout only: `asset:blob:{P}` is never a plain asset's
        key (a path ends in `.json`, not `}`), so neither layout lists, nor prunes, the
        other's assets."""
        skip = len(self.prefix) + len(head)
        rests = (key.decode()[skip:] for key in client.scan_iter(match=pattern, count=SCAN_COUNT))
        return {
            self._unwrap(r)
            for r in rests
            if (r.startswith("{") and r.endswith("}")) == self.hashtag
        }

    def path_of_blob(self, key: str) -> str:
        return self._unwrap(key[len(self.prefix) + len(BLOB) :])

    def path_of_manifest(self, key: str) -> str:
        return self._unwrap(key[len(self.prefix) + len(MANIFEST) :])

    def _unwrap(self, rest: str) -> str:
        if self.hashtag and rest.startswith("{") and rest.endswith("}"):
            return rest[1:-1]
        return rest

    @property
    def lease(self) -> str:
        return f"{self.prefix}{BOOKKEEPING}lease"

    @property
    def epoch(self) -> str:
        """How many times the lease was taken; in the lease's slot (its name as hash tag)."""
        return f"{self.prefix}{BOOKKEEPING}epoch:{{{self.lease}}}"

    @property
    def sync_marker(self) -> str:
        return f"{self.prefix}{BOOKKEEPING}synced"

    def fence(self, slot: int) -> str:
        """The cluster fence key that lives in `slot` (see scripts.py)."""
        key = f"{self.prefix}{BOOKKEEPING}fence:{{{_slot_tags()[slot]}}}"
        if key_slot(key.encode()) != slot:  # the prefix has a hash tag: every key is in its slot
            key = f"{self.prefix}{BOOKKEEPING}fence"
        return key


SLOTS = 16384


def checked_prefix(text: str) -> str:
    """`text` as the key prefix. Braces in it must form one whole hash tag, `{tag}` (every key
    then lands in the tag's cluster slot): any other brace moves the hash tag of some keys and
    not of others, so that the keys of one script call span slots (CROSSSLOT)."""
    if not re.fullmatch(r"[^{}]*(?:\{[^{}]+\}[^{}]*)?", text):
        raise ValueError(f"braces must form one whole {{tag}} (a hash tag), got {text!r}")
    return text


@functools.cache
def _slot_tags() -> tuple[str, ...]:
    """For each cluster slot, a short string that hashes to it (0.15 s once, cluster only)."""
    tags: dict[int, str] = {}
    candidate = 0
    while len(tags) < SLOTS:
        text = str(candidate)
        tags.setdefault(key_slot(text.encode()), text)
        candidate += 1
    return tuple(tags[slot] for slot in range(SLOTS))


def slot_of(key: str) -> int:
    return int(key_slot(key.encode()))


@dataclass(frozen=True, slots=True)
class Manifest:
    """The `v4:manifest:P` hash. `hash` is the hex SHA-256 of the uncompressed bytes."""

    hash: str
    size: int
    zsize: int
    schema: str
    mtime_ns: int
    updated_ms: int
    gen: int
    codec: str = CODEC
    writer: str = ""
    vfp: str = ""  # fingerprint of the rules that validated it (see worker.fingerprint)
    stat: str = ""  # the file's signature when it was read (see worker.signature)

    def fields(self) -> dict[str, str]:
        return {
            "hash": self.hash,
            "size": str(self.size),
            "zsize": str(self.zsize),
            "codec": self.codec,
            "schema": self.schema,
            "mtime_ns": str(self.mtime_ns),
            "updated_ms": str(self.updated_ms),
            "gen": str(self.gen),
            "writer": self.writer,
            "vfp": self.vfp,
            "stat": self.stat,
        }

    @classmethod
    def from_fields(cls, raw: Mapping[Any, Any]) -> Manifest:
        """Parse a manifest read with HGETALL; raises KeyError/ValueError when incomplete."""
        f = {_text(k): _text(v) for k, v in raw.items()}
        return cls(
            hash=f["hash"],
            size=int(f["size"]),
            zsize=int(f.get("zsize", "0")),
            schema=f.get("schema", ""),
            mtime_ns=int(f.get("mtime_ns", "0")),
            updated_ms=int(f.get("updated_ms", "0")),
            gen=int(f.get("gen", "0")),
            codec=f.get("codec", CODEC),
            writer=f.get("writer", ""),
            vfp=f.get("vfp", ""),
            stat=f.get("stat", ""),
        )


MANIFEST_FIELDS = (
    "size", "zsize", "codec", "schema", "mtime_ns", "updated_ms", "writer", "vfp", "stat",
)  # fmt: skip


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
