"""Every Valkey key and channel name, and the manifest record layout, in one place.

Other services read this keyspace; the names are a contract (DESIGN §1). The only knob is one
prefix, prepended to every key and channel, so several trees can share one Valkey.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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

    def manifest_paths(self, client: Any) -> set[str]:
        """Paths that have a manifest in Valkey (SCAN: for reading, never to delete by)."""
        return {
            self.path_of_manifest(k.decode())
            for k in client.scan_iter(match=self.manifest_pattern, count=1000)
        }

    def blob_paths(self, client: Any) -> set[str]:
        """Paths that have a blob in Valkey (SCAN: for reading, never to delete by)."""
        return {
            self.path_of_blob(k.decode())
            for k in client.scan_iter(match=self.blob_pattern, count=1000)
        }

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
    vfp: str = ""  # fingerprint of the rules that validated it (see worker.fingerprint)

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
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


# Fenced, idempotent commit of a batch of assets. For each asset, blob + manifest + PUBLISH
# happen together (the whole script is atomic); content equal to what is stored is neither
# rewritten nor published, so a replayed batch is a no-op. The lease token is checked in the
# same atomic step (fencing): a writer that lost the lease commits nothing.
# KEYS: lease, then blob_i, manifest_i for each asset.
# ARGV: token ('' = no lease), channel, n, n manifest field names (besides hash and gen),
#       then for each asset: path, blob, hash, n field values.
# Returns per asset: 0 unchanged, 1 updated, 2 added. `gen` counts an asset's versions.
# "Unchanged" needs the stored blob to have the manifest's zsize too: a blob that was lost,
# truncated or replaced by hand is rewritten.
UPSERT_SCRIPT = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED lease not held')
end
local n = tonumber(ARGV[3])
local stride = 3 + n
local out = {}
for a = 0, (#KEYS - 1) / 2 - 1 do
  local blob_key, manifest_key = KEYS[2 + 2 * a], KEYS[3 + 2 * a]
  local o = 4 + n + a * stride
  local old = redis.call('HMGET', manifest_key, 'hash', 'gen', 'zsize')
  if old[1] == ARGV[o + 2] and redis.call('STRLEN', blob_key) == tonumber(old[3]) then
    out[a + 1] = 0
  else
    redis.call('SET', blob_key, ARGV[o + 1])
    local fields = {'hash', ARGV[o + 2], 'gen', tonumber(old[2] or '0') + 1}
    for i = 1, n do
      fields[#fields + 1] = ARGV[3 + i]
      fields[#fields + 1] = ARGV[o + 2 + i]
    end
    redis.call('HSET', manifest_key, unpack(fields))
    redis.call('PUBLISH', ARGV[2], ARGV[o])
    out[a + 1] = old[1] and 1 or 2
  end
end
return out
"""

# KEYS: lease, then blob_i, manifest_i. ARGV: token, channel, then path_i.
# Returns per asset the number of keys deleted; publishes only when something went.
DELETE_SCRIPT = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED lease not held')
end
local out = {}
for a = 0, (#KEYS - 1) / 2 - 1 do
  local gone = redis.call('DEL', KEYS[2 + 2 * a], KEYS[3 + 2 * a])
  if gone > 0 then
    redis.call('PUBLISH', ARGV[2], ARGV[3 + a])
  end
  out[a + 1] = gone
end
return out
"""

# Read-only, for a scan: per asset, the stored hash when its manifest was validated under the
# fingerprint ARGV[1] and its blob has the manifest's size, else ''. One command per chunk
# instead of two per asset. KEYS: manifest_i, blob_i.
LOOKUP_SCRIPT = """#!lua flags=no-writes
local out = {}
for i = 1, #KEYS, 2 do
  local m = redis.call('HMGET', KEYS[i], 'hash', 'vfp', 'zsize')
  if m[1] and m[2] == ARGV[1] and tonumber(m[3]) == redis.call('STRLEN', KEYS[i + 1]) then
    out[#out + 1] = m[1]
  else
    out[#out + 1] = ''
  end
end
return out
"""

MANIFEST_FIELDS = ("size", "zsize", "codec", "schema", "mtime_ns", "updated_ms", "writer", "vfp")


def upsert_call(
    token: str, channel: str, ks: Keyspace, assets: list[tuple[str, bytes, Manifest]]
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of UPSERT_SCRIPT for a batch of (path, blob, manifest)."""
    keys: list[str] = [ks.lease]
    args: list[Any] = [token, channel, len(MANIFEST_FIELDS), *MANIFEST_FIELDS]
    for path, blob, manifest in assets:
        keys += [ks.blob(path), ks.manifest(path)]
        fields = manifest.fields()
        args += [path, blob, manifest.hash, *(fields[name] for name in MANIFEST_FIELDS)]
    return keys, args


def delete_call(
    token: str, channel: str, ks: Keyspace, paths: Sequence[str]
) -> tuple[list[str], list[Any]]:
    keys: list[str] = [ks.lease]
    for path in paths:
        keys += [ks.blob(path), ks.manifest(path)]
    return keys, [token, channel, *paths]


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
