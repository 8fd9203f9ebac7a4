"""The Lua scripts that commit, look up and lease, and how each is fenced.

Every write script starts with a fence: KEYS[1] and ARGV[1] decide whether this writer may
commit. On one server (or Sentinel's primary) the fence is the lease itself: the stored token
must be ours, checked in the same atomic step as the write. In a cluster the lease lives on one
node and the assets on all of them, so the fence is an epoch: the lease's acquisition counter,
kept per slot in a fence key beside the asset keys. A script refuses an epoch lower than the
slot's and raises the slot's to its own, so once a new leader has touched a slot (it raises every
slot when it takes over), a paused old leader can commit nothing there.
Scripts are idempotent: content equal to what is stored is neither rewritten nor published
(only the manifest's `vfp` and `stat` follow an asset judged again under new rules).
"""

from __future__ import annotations

import re

# KEYS[1]: the lease. ARGV[1]: our token.
_BY_TOKEN = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED lease not held')
end
"""

# KEYS[1]: the slot's fence key. ARGV[1]: our epoch.
_BY_EPOCH = """
local epoch = tonumber(ARGV[1])
local seen = tonumber(redis.call('GET', KEYS[1]) or '0')
if seen > epoch then
  return redis.error_reply('FENCED epoch ' .. ARGV[1] .. ' is older than ' .. seen)
elseif seen < epoch then
  redis.call('SET', KEYS[1], ARGV[1])
end
"""

# HSET the manifest `key`: `hash`, `gen` one past `old_gen`, and the n fields named by
# ARGV[4 .. 3 + n] with their values at ARGV[at + 1 .. at + n].
_WRITE_MANIFEST = """
local n = tonumber(ARGV[3])
local function write_manifest(key, hash, old_gen, at)
  local fields = {'hash', hash, 'gen', tonumber(old_gen or '0') + 1}
  for i = 1, n do
    fields[#fields + 1] = ARGV[3 + i]
    fields[#fields + 1] = ARGV[at + i]
  end
  redis.call('HSET', key, unpack(fields))
end
-- An asset judged again with the same content (the validation rules changed): only the
-- manifest's record of how it was validated, `vfp` and `stat`, follows; no new version, no
-- publish. The next scan then finds it unchanged without reading it.
local function refresh_manifest(key, at)
  for i = 1, n do
    local name = ARGV[3 + i]
    if (name == 'vfp' or name == 'stat') and redis.call('HGET', key, name) ~= ARGV[at + i] then
      redis.call('HSET', key, name, ARGV[at + i])
    end
  end
end
"""

# One asset per pair of keys: blob + manifest + PUBLISH together.
# KEYS: fence, then blob_i, manifest_i. ARGV: fence arg, channel, n, n manifest field names
# (besides hash and gen), then per asset: path, blob, hash, n field values.
# Returns per asset: 0 unchanged, 1 updated, 2 added. `gen` counts an asset's versions.
# "Unchanged" needs the stored blob to have the manifest's zsize too: a blob that was lost,
# truncated or replaced by hand is rewritten.
_UPSERT = (
    _WRITE_MANIFEST
    + """
local stride = 3 + n
local out = {}
for a = 0, (#KEYS - 1) / 2 - 1 do
  local blob_key, manifest_key = KEYS[2 + 2 * a], KEYS[3 + 2 * a]
  local o = 4 + n + a * stride
  local old = redis.call('HMGET', manifest_key, 'hash', 'gen', 'zsize')
  if old[1] == ARGV[o + 2] and redis.call('STRLEN', blob_key) == tonumber(old[3]) then
    refresh_manifest(manifest_key, o + 2)
    out[a + 1] = 0
  else
    redis.call('SET', blob_key, ARGV[o + 1])
    write_manifest(manifest_key, ARGV[o + 2], old[2], o + 2)
    redis.call('PUBLISH', ARGV[2], ARGV[o])
    out[a + 1] = old[1] and 1 or 2
  end
end
return out
"""
)

# KEYS: fence, then blob_i, manifest_i. ARGV: fence arg, channel, then path_i.
# Returns per asset the number of keys deleted; publishes only when something went.
_DELETE = """
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

# Cluster, keys of one asset in two slots: first the blobs (grouped by slot), then manifests
# and publishes. KEYS: fence, blob_i (one slot). ARGV: epoch, blob_i.
# Returns per blob 1 when written, 0 when the stored bytes were already these.
_BLOBS = """
local out = {}
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then
    out[i - 1] = 0
  else
    redis.call('SET', KEYS[i], ARGV[i])
    out[i - 1] = 1
  end
end
return out
"""

# KEYS: fence, manifest_i (one slot). ARGV: epoch, channel, n, n field names, then per asset:
# path, hash, blob written (0/1), n field values. Returns per asset 0, 1 or 2 as _UPSERT.
_MANIFESTS = (
    _WRITE_MANIFEST
    + """
local stride = 3 + n
local out = {}
for a = 0, #KEYS - 2 do
  local key = KEYS[2 + a]
  local o = 4 + n + a * stride
  local old = redis.call('HMGET', key, 'hash', 'gen')
  if old[1] == ARGV[o + 1] and ARGV[o + 2] == '0' then
    refresh_manifest(key, o + 2)
    out[a + 1] = 0
  else
    write_manifest(key, ARGV[o + 1], old[2], o + 2)
    redis.call('PUBLISH', ARGV[2], ARGV[o])
    out[a + 1] = old[1] and 1 or 2
  end
end
return out
"""
)

# Cluster deletes, manifests first (a reader then sees no asset, or a torn pair it retries),
# then blobs and the publish. KEYS: fence, key_i (one slot). ARGV: epoch, channel, then per
# key: path, keys of this asset already deleted in the first step (publish if any went).
# Returns per key 1 when it was deleted.
_DELETE_KEYS = """
local out = {}
for i = 2, #KEYS do
  local gone = redis.call('DEL', KEYS[i])
  local o = 3 + 2 * (i - 2)
  if ARGV[2] ~= '' and gone + tonumber(ARGV[o + 1]) > 0 then
    redis.call('PUBLISH', ARGV[2], ARGV[o])
  end
  out[i - 1] = gone
end
return out
"""


def by_token(body: str) -> str:
    return _BY_TOKEN + body


def by_epoch(body: str) -> str:
    return _BY_EPOCH + body


UPSERT = by_token(_UPSERT)
DELETE = by_token(_DELETE)
UPSERT_EPOCH = by_epoch(_UPSERT)
DELETE_EPOCH = by_epoch(_DELETE)
BLOBS = by_epoch(_BLOBS)
MANIFESTS = by_epoch(_MANIFESTS)
DELETE_KEYS = by_epoch(_DELETE_KEYS)
# Raise one slot's fence to our epoch (a new leader, for every slot, before its first commit).
# KEYS: fence. ARGV: epoch.
RAISE_FENCE = by_epoch("return 0")

# Read-only, for a scan: per asset, the stored hash and stat signature when its manifest was
# validated under the fingerprint ARGV[1] and its blob has the manifest's size, else '' and ''.
# One command per chunk instead of two per asset. KEYS: manifest_i, blob_i.
LOOKUP = """#!lua flags=no-writes
local out = {}
for i = 1, #KEYS, 2 do
  local m = redis.call('HMGET', KEYS[i], 'hash', 'vfp', 'zsize', 'stat')
  if m[1] and m[2] == ARGV[1] and tonumber(m[3]) == redis.call('STRLEN', KEYS[i + 1]) then
    out[#out + 1] = m[1]
    out[#out + 1] = m[4] or ''
  else
    out[#out + 1] = ''
    out[#out + 1] = ''
  end
end
return out
"""

# The lease: taken when free, which also counts the acquisition (the epoch, in the lease's
# slot). Taking it again with our own token (a reply lost to a cut connection) only extends
# it. KEYS: lease, epoch. ARGV: token, ttl_ms. Returns our epoch, or 0 when someone holds it.
ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local epoch = tonumber(redis.call('GET', KEYS[2]) or '0')
if holder and epoch > 0 then
  return epoch
end
return redis.call('INCR', KEYS[2])
"""
# A fence above the epoch a new leader was given: the counter lost its value (its node
# restarted empty) while the fences on other nodes kept theirs. Only the holder of the lease
# may move the counter past them. KEYS: lease, epoch. ARGV: token, the fence's epoch.
# Returns the new epoch, or 0 when the lease is not ours.
ADVANCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[2])
end
return redis.call('INCR', KEYS[2])
"""


def fence_epoch(refusal: str) -> int | None:
    """The epoch a slot's fence holds, read from a `_BY_EPOCH` refusal."""
    found = re.search(r"is older than (\d+)", refusal)
    return int(found.group(1)) if found else None


# Renewal and release: only by the holder of the token (Valkey 8.1's SET IFEQ and 9.0's
# DELIFEQ do the same; a script also works on older servers). KEYS: lease. ARGV: token, ttl_ms.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
