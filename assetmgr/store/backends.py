"""How batches reach Valkey and pairs come back, on one server or on a cluster.

`Store` is one server (standalone, or the primary a Sentinel names): each asset's blob,
manifest and publish commit in one atomic script fenced by the lease token, many assets per
pipelined round trip. `ClusterStore` is Valkey Cluster: the two keys of an asset usually live
in different slots (their names are a contract), so it writes the blobs first and the
manifests and publishes second, each grouped by slot into scripts and by node into one round
trip, fenced by the lease epoch (scripts.py). A reader can then see a new blob beside an old
manifest for one round trip; `AssetClient` verifies the hash and retries. With
`key_layout = "hashtag"` both keys share a slot and the commit is one atomic script again.
"""

from __future__ import annotations

import enum
import functools
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.cluster import RedisCluster

from assetmgr.messages import Stored
from assetmgr.store import scripts
from assetmgr.store.keyspace import MANIFEST_FIELDS, SLOTS, Keyspace, Manifest, slot_of
from assetmgr.store.lease import Lease

CHUNK_BYTES = 8 * 1024**2  # blob bytes per script call: keeps one call's latency bounded
Asset = tuple[str, bytes, Manifest]  # path, blob, manifest
Pair = tuple[dict[bytes, bytes], bytes | None]  # manifest fields, blob


class Upsert(enum.IntEnum):
    """What the commit script did with one asset (its reply per asset). Ordered: of two
    outcomes for the same asset (a retried, unacknowledged commit), the larger is the news."""

    UNCHANGED = 0
    UPDATED = 1
    ADDED = 2


@dataclass
class Committed:
    """What one commit did: per upsert an `Upsert`, per delete the keys
    deleted; `fenced` when Valkey refused it for want of the lease (then nothing is recorded),
    `acked` False when fewer replicas than asked acknowledged it."""

    outcomes: list[Upsert] = field(default_factory=list)
    gone: list[int] = field(default_factory=list)
    fenced: str | None = None
    acked: bool = True


def open_store(client: Any, ks: Keyspace, min_acks: int = 0, ack_timeout: float = 1.0) -> Store:
    kind = ClusterStore if isinstance(client, RedisCluster) else Store
    return kind(client, ks, min_acks, ack_timeout)


class Store:
    cluster = False

    def __init__(self, client: Any, ks: Keyspace, min_acks: int, ack_timeout: float) -> None:
        self.client = client
        self.ks = ks
        self.min_acks = min_acks
        self.ack_ms = max(1, int(ack_timeout * 1000))

    def load_scripts(self) -> None:
        """Load the write scripts (on every primary of a cluster): pipelines call them by sha."""
        for script in WRITE_SCRIPTS:
            self.client.script_load(script)

    # -- writes -----------------------------------------------------------------------------

    def commit(self, assets: Sequence[Asset], deletes: Sequence[str], lease: Lease) -> Committed:
        """Commit a batch. Scripts are loaded when first missing: a new connection, or a
        server that restarted or failed over, gets them and the batch once more (every
        script is idempotent)."""
        try:
            return self._commit(assets, deletes, lease)
        except redis.exceptions.NoScriptError:
            self.load_scripts()
            return self._commit(assets, deletes, lease)

    def raise_fences(self, lease: Lease) -> str | None:
        """A new leader's first step (see ClusterStore); None, or why we are fenced out."""
        try:
            return self._raise_fences(lease)
        except redis.exceptions.NoScriptError:
            self.load_scripts()
            return self._raise_fences(lease)

    def _commit(self, assets: Sequence[Asset], deletes: Sequence[str], lease: Lease) -> Committed:
        """One round trip: a script call per chunk of upserts (bounded bytes), one for deletes."""
        step = Step(self)
        for chunk in _chunks(assets):
            keys, args = _upsert_call(lease.fence, self.ks.lease, self.ks, chunk)
            step.call(scripts.UPSERT, keys, args, [a[0] for a in chunk])
        if deletes:
            keys, args = _delete_call(lease.fence, self.ks.lease, self.ks, deletes)
            step.call(scripts.DELETE, keys, args, list(deletes))
        results = step.run()
        if step.fenced:
            return Committed(fenced=step.fenced)
        return Committed(
            [Upsert(results[p]) for p, _, _ in assets],
            [results[p] for p in deletes],
            acked=step.acked,
        )

    def _raise_fences(self, lease: Lease) -> str | None:
        """On one server the lease token is the fence already."""
        return None

    def node_of(self, key: str) -> Any:
        return None  # one server: WAIT goes on the pipeline's own connection

    # -- reads ------------------------------------------------------------------------------

    def read_pairs(self, paths: Sequence[str]) -> list[Pair]:
        """Manifest fields and blob of each path; one MULTI on one server. In a cluster the
        two reads are not atomic: the caller verifies each pair's hash and retries."""
        pipe = self.client.pipeline(transaction=not self.cluster)
        for path in paths:
            pipe.hgetall(self.ks.manifest(path))
            pipe.get(self.ks.blob(path))
        replies = pipe.execute()
        return [(replies[2 * i], replies[2 * i + 1]) for i in range(len(paths))]

    def lookup(self, paths: Sequence[str], vfp: str) -> list[Stored | None]:
        """Per path the stored hash and stat signature when it was validated under `vfp` and
        its blob has the manifest's size, else None (one read-only script per chunk)."""
        keys = [key for path in paths for key in (self.ks.manifest(path), self.ks.blob(path))]
        replies = [_text(r) for r in self._read_only(scripts.LOOKUP, keys, [vfp])]
        pairs = zip(replies[0::2], replies[1::2], strict=True)
        return [(h, sig) if h else None for h, sig in pairs]

    def _read_only(self, script: str, keys: list[str], args: list[str]) -> Any:
        """EVALSHA_RO: allowed on replicas and to read-only users, and plainly a read in
        MONITOR and the ACL log."""
        sha = sha1(script)
        try:
            return self.client.evalsha_ro(sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            self.client.script_load(script)
            return self.client.evalsha_ro(sha, len(keys), *keys, *args)

    def run_ids(self) -> dict[str, str]:
        """The run_id of each primary: one changing means a restart or a failover."""
        return {"": str(self.client.info("server").get("run_id", ""))}


class Step:
    """Script calls sent in one pipelined round trip (per node, in a cluster), then WAIT on
    each node written when replicas must acknowledge. `run` maps each name to its result."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # A cluster pipeline is never a transaction: it groups the calls per node.
        self.pipe = store.client.pipeline(transaction=False)
        self.names: list[list[str]] = []
        self.nodes: set[Any] = set()
        self.fenced: str | None = None
        self.acked = True

    def call(self, script: str, keys: list[str], args: list[Any], names: list[str]) -> None:
        # Named, the node spares a cluster pipeline asking the server for the keys of each
        # EVALSHA (COMMAND GETKEYS: one round trip per call); a redirect is still followed.
        node = self.store.node_of(keys[-1])
        options = {} if node is None else {"target_nodes": node}
        self.pipe.execute_command("EVALSHA", sha1(script), len(keys), *keys, *args, **options)
        self.names.append(names)
        self.nodes.add(node)

    def run(self) -> dict[str, int]:
        if not self.names:
            return {}
        if self.store.min_acks:
            for node in self.nodes:  # after the writes, on the same connection as they
                options = {} if node is None else {"target_nodes": node}
                self.pipe.execute_command("WAIT", self.store.min_acks, self.store.ack_ms, **options)
        replies = self.pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, redis.exceptions.NoScriptError):
                raise reply
            if _is_fenced(reply):
                self.fenced = str(reply)
                return {}
            if isinstance(reply, Exception):
                raise reply
        self.acked = all(int(n) >= self.store.min_acks for n in replies[len(self.names) :])
        return {
            name: int(value)
            for names, reply in zip(self.names, replies, strict=False)
            if names
            for name, value in zip(names, reply, strict=True)
        }


class ClusterStore(Store):
    cluster = True

    def node_of(self, key: str) -> Any:
        return self.client.get_node_from_key(key)

    def load_scripts(self) -> None:
        """On every node, replicas too: a promoted replica can run them at once."""
        for script in WRITE_SCRIPTS:
            self.client.execute_command("SCRIPT LOAD", script, target_nodes=RedisCluster.ALL_NODES)

    def _commit(self, assets: Sequence[Asset], deletes: Sequence[str], lease: Lease) -> Committed:
        """Pairs in one slot (the hashtag layout) in one step; split pairs blobs first, then
        manifests with the publish; deletes manifests first. One round trip per node a step."""
        epoch = str(lease.epoch_fence)
        split = {p for p, _, _ in assets if not self._same_slot(p)}
        split |= {p for p in deletes if not self._same_slot(p)}
        first = Step(self)
        for group in _by_slot([a for a in assets if a[0] not in split], self._blob_of).values():
            for chunk in _chunks(group):
                fence = self.ks.fence(slot_of(self.ks.blob(chunk[0][0])))
                keys, args = _upsert_call(epoch, fence, self.ks, chunk)
                first.call(scripts.UPSERT_EPOCH, keys, args, [a[0] for a in chunk])
        for group in _by_slot([p for p in deletes if p not in split], self.ks.blob).values():
            fence = self.ks.fence(slot_of(self.ks.blob(group[0])))
            keys, args = _delete_call(epoch, fence, self.ks, group)
            first.call(scripts.DELETE_EPOCH, keys, args, list(group))
        blobs = [(self.ks.blob(p), p, [b]) for p, b, _ in assets if p in split]
        self._per_slot(first, scripts.BLOBS, blobs, [epoch])
        doomed = [(self.ks.manifest(p), p, [p, "0"]) for p in deletes if p in split]
        self._per_slot(first, scripts.DELETE_KEYS, doomed, [epoch, ""])
        done = first.run()
        if first.fenced:
            return Committed(fenced=first.fenced)
        acked = first.acked
        if split:
            second = self._second(assets, deletes, split, done, epoch)
            if second.fenced:
                return Committed(fenced=second.fenced)
            acked = acked and second.acked
        outcomes = [Upsert(done[p]) for p, _, _ in assets]
        return Committed(outcomes, [done[p] for p in deletes], acked=acked)

    def _second(
        self,
        assets: Sequence[Asset],
        deletes: Sequence[str],
        split: set[str],
        done: dict[str, int],
        epoch: str,
    ) -> Step:
        """Manifests and publishes of the split upserts, blobs of the split deletes; `done`
        gets their outcomes."""
        step = Step(self)
        items = []
        for path, _, manifest in assets:
            if path in split:
                fields = manifest.fields()
                values = [fields[name] for name in MANIFEST_FIELDS]
                args = [path, manifest.hash, done[path], *values]
                items.append((self.ks.manifest(path), path, args))
        head = [epoch, self.ks.channel, len(MANIFEST_FIELDS), *MANIFEST_FIELDS]
        self._per_slot(step, scripts.MANIFESTS, items, head)
        blobs = [(self.ks.blob(p), p, [p, done[p]]) for p in deletes if p in split]
        first_gone = {p: done[p] for p in deletes if p in split}
        self._per_slot(step, scripts.DELETE_KEYS, blobs, [epoch, self.ks.channel])
        results = step.run()
        for path, value in results.items():
            done[path] = value + first_gone.get(path, 0)
        return step

    def _per_slot(
        self, step: Step, script: str, items: Sequence[tuple[str, str, list[Any]]], head: list[Any]
    ) -> None:
        """One call per slot: KEYS = the slot's fence + its keys, ARGV = `head` + each key's
        arguments; results are named by path."""
        for slot, group in _by_slot(items, lambda item: item[0]).items():
            keys = [self.ks.fence(slot), *(key for key, _, _ in group)]
            args = [*head, *(a for _, _, item_args in group for a in item_args)]
            step.call(script, keys, args, [path for _, path, _ in group])

    def _same_slot(self, path: str) -> bool:
        return slot_of(self.ks.blob(path)) == slot_of(self.ks.manifest(path))

    def _blob_of(self, asset: Asset) -> str:
        return self.ks.blob(asset[0])

    def _raise_fences(self, lease: Lease) -> str | None:
        """Raise every slot's fence to our epoch before the first commit: one call per slot,
        one round trip per node. A fence already higher (a newer leader) is returned."""
        step = Step(self)
        for slot in range(SLOTS):
            step.call(scripts.RAISE_FENCE, [self.ks.fence(slot)], [lease.epoch_fence], [])
        step.run()
        return step.fenced

    def lookup(self, paths: Sequence[str], vfp: str) -> list[Stored | None]:
        """Per path, two reads grouped by node (one round trip each): the manifest's hash,
        fingerprint, zsize and stat signature, and the blob's length."""
        pipe = self.client.pipeline()
        for path in paths:
            pipe.hmget(self.ks.manifest(path), "hash", "vfp", "zsize", "stat")
            pipe.strlen(self.ks.blob(path))
        replies = pipe.execute()
        out: list[Stored | None] = []
        for i in range(len(paths)):
            (stored, fingerprint, zsize, sig), length = replies[2 * i], replies[2 * i + 1]
            ok = stored and fingerprint == vfp.encode() and zsize and int(zsize) == length
            out.append((_text(stored), _text(sig)) if ok else None)
        return out

    def run_ids(self) -> dict[str, str]:
        replies = self.client.info("server", target_nodes=RedisCluster.PRIMARIES)
        if "run_id" in replies:  # one primary: redis-py returns its reply unwrapped
            return {"": str(replies["run_id"])}
        return {str(node): str(info.get("run_id", "")) for node, info in replies.items()}


WRITE_SCRIPTS = (
    scripts.UPSERT,
    scripts.DELETE,
    scripts.UPSERT_EPOCH,
    scripts.DELETE_EPOCH,
    scripts.BLOBS,
    scripts.MANIFESTS,
    scripts.DELETE_KEYS,
    scripts.RAISE_FENCE,
)


@functools.cache
def sha1(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _is_fenced(reply: Any) -> bool:
    return isinstance(reply, redis.ResponseError) and "FENCED" in str(reply)


def _by_slot(items: Iterable[Any], key_of: Any) -> dict[int, list[Any]]:
    groups: dict[int, list[Any]] = defaultdict(list)
    for item in items:
        groups[slot_of(key_of(item))].append(item)
    return groups


def _chunks(upserts: Sequence[Asset]) -> Iterable[list[Asset]]:
    chunk: list[Asset] = []
    size = 0
    for asset in upserts:
        if chunk and size + len(asset[1]) > CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(asset)
        size += len(asset[1])
    if chunk:
        yield chunk


def _upsert_call(
    fence_arg: str, fence_key: str, ks: Keyspace, assets: Sequence[Asset]
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of the pair-upsert script for a batch of (path, blob, manifest)."""
    keys: list[str] = [fence_key]
    args: list[Any] = [fence_arg, ks.channel, len(MANIFEST_FIELDS), *MANIFEST_FIELDS]
    for path, blob, manifest in assets:
        keys += [ks.blob(path), ks.manifest(path)]
        fields = manifest.fields()
        args += [path, blob, manifest.hash, *(fields[name] for name in MANIFEST_FIELDS)]
    return keys, args


def _delete_call(
    fence_arg: str, fence_key: str, ks: Keyspace, paths: Sequence[str]
) -> tuple[list[str], list[Any]]:
    keys: list[str] = [fence_key]
    for path in paths:
        keys += [ks.blob(path), ks.manifest(path)]
    return keys, [fence_arg, ks.channel, *paths]
