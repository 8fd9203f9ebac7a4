"""Every Valkey key and channel name, and the manifest record layout, in one place.

Other services read this keyspace; the names are a contract (DESIGN §1). The only knob is one
prefix, prepended to every key and channel, so several trees can share one Valkey.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BLOB = "asset:blob:"
MANIFEST = "v4:manifest:"
CHANNEL = "asset_updates"
# Bookkeeping keys of the manager itself (lease, sync marker) live under this part.
BOOKKEEPING = "assetmgr:"
CODEC = "zstd"


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Key names for one prefix. `Keyspace()` is the documented default layout."""

    prefix: str = ""

    def blob(self, path: str) -> str:
        return f"{self.prefix}{BLOB}{path}"

    def manifest(self, path: str) -> str:
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

    def path_of_blob(self, key: str) -> str:
        return key[len(self.prefix) + len(BLOB) :]

    def path_of_manifest(self, key: str) -> str:
        return key[len(self.prefix) + len(MANIFEST) :]

    @property
    def lease(self) -> str:
        return f"{self.prefix}{BOOKKEEPING}lease"

    @property
    def sync_marker(self) -> str:
        return f"{self.prefix}{BOOKKEEPING}synced"


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
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


# Fenced, idempotent commit of one asset: blob, manifest and publish in one atomic step.
# KEYS: lease, blob, manifest. ARGV: token ('' = no lease), channel, path, blob, hash, then the
# manifest's field/value pairs except `gen`, which counts this asset's committed versions.
# Content equal to what is stored is neither rewritten nor published, so a replay is a no-op.
UPSERT_SCRIPT = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED lease not held')
end
if redis.call('HGET', KEYS[3], 'hash') == ARGV[5] and redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
local gen = tonumber(redis.call('HGET', KEYS[3], 'gen') or '0') + 1
redis.call('SET', KEYS[2], ARGV[4])
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'hash', ARGV[5], 'gen', gen, unpack(ARGV, 6))
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""

# KEYS: lease, blob, manifest. ARGV: token, channel, path. Publishes only if something went.
DELETE_SCRIPT = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED lease not held')
end
local n = redis.call('DEL', KEYS[2], KEYS[3])
if n > 0 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return n
"""


def upsert_args(token: str, channel: str, path: str, blob: bytes, manifest: Manifest) -> list[Any]:
    """ARGV of UPSERT_SCRIPT for one asset."""
    fields = manifest.fields()
    del fields["hash"], fields["gen"]
    pairs = [item for kv in fields.items() for item in kv]
    return [token, channel, path, blob, manifest.hash, *pairs]


# Lease renewal and release: only by the holder of the token (Valkey 8.1's SET IFEQ and 9.0's
# DELIFEQ do the same; a script also works on older servers). KEYS: lease. ARGV: token, ttl_ms.
RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
