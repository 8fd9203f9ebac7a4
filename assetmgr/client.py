"""The reader for consumers: atomic, hash-verified reads and a subscription that resyncs.

A manifest and a blob read in two round trips can belong to two versions. `AssetClient` reads
both in one MULTI, decompresses, and checks the SHA-256 against the manifest; on a mismatch
(possible only in Valkey Cluster, where the two keys live in different slots and MULTI cannot
span them) it retries. `watch` yields every asset once at (re)connection, then each update.

    from assetmgr.client import AssetClient
    client = AssetClient.from_url("redis://127.0.0.1:6379/0")
    asset = client.get("weights/cost.json")        # None when absent
    for update in client.watch():                  # runs forever, reconnects by itself
        print(update.path, update.asset is None)
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis
import zstandard

from .connection import connect
from .keyspace import CODEC, LOOKUP_SCRIPT, Keyspace, Manifest

RETRIES = 5


class IntegrityError(Exception):
    """The blob did not match its manifest after every retry."""


@dataclass(frozen=True, slots=True)
class Asset:
    path: str
    data: bytes  # the file's bytes exactly as on disk
    manifest: Manifest

    def json(self) -> Any:
        return orjson.loads(self.data)


@dataclass(frozen=True, slots=True)
class Update:
    """One change seen by `watch`: `asset` is None when the asset was deleted."""

    path: str
    asset: Asset | None
    resync: bool = False  # True for the full listing after each (re)connection


class AssetClient:
    def __init__(self, client: redis.Redis, prefix: str = "") -> None:
        self.client = client
        self.ks = Keyspace(prefix)
        self._dctx = zstandard.ZstdDecompressor()
        self._lookups_failed = False
        self._shas: dict[str, str] = {}

    @classmethod
    def from_url(
        cls, url: str, *, password: str | None = None, prefix: str = "", timeout: float = 5.0
    ) -> AssetClient:
        return cls(
            connect(url, password=password, timeout=timeout, client_name="assetmgr-client"), prefix
        )

    def get(self, path: str) -> Asset | None:
        return self.get_many([path])[path]

    def get_many(self, paths: Sequence[str]) -> dict[str, Asset | None]:
        """Read many assets in one MULTI; each is verified, mismatches are re-read."""
        result: dict[str, Asset | None] = {}
        todo = list(paths)
        for attempt in range(RETRIES):
            torn = []
            for path, raw in zip(todo, self._read(todo), strict=True):
                fields, blob = raw
                if not fields and blob is None:
                    result[path] = None
                    continue
                asset = self._decode(path, fields, blob)
                if asset is None:
                    torn.append(path)
                else:
                    result[path] = asset
            if not torn:
                return result
            todo = torn
            time.sleep(0.01 * (attempt + 1) * random.random())
        raise IntegrityError(f"{todo[0]}: blob does not match its manifest")

    def _read(self, paths: Sequence[str]) -> list[tuple[dict[bytes, bytes], bytes | None]]:
        pipe = self.client.pipeline(transaction=True)
        for path in paths:
            pipe.hgetall(self.ks.manifest(path))
            pipe.get(self.ks.blob(path))
        replies = pipe.execute()
        return [(replies[2 * i], replies[2 * i + 1]) for i in range(len(paths))]

    def _decode(self, path: str, fields: dict[bytes, bytes], blob: bytes | None) -> Asset | None:
        """The asset, or None when manifest and blob disagree (torn or half-present)."""
        if not fields or blob is None:
            return None
        try:
            manifest = Manifest.from_fields(fields)
            if manifest.codec != CODEC:
                return None
            data = self._dctx.decompress(blob)
        except (KeyError, ValueError, zstandard.ZstdError):
            return None
        if hashlib.sha256(data).hexdigest() != manifest.hash:
            return None
        return Asset(path, data, manifest)

    def expectations(self, paths: Sequence[str], vfp: str) -> dict[str, str]:
        """For a scan: the hash stored for each path whose content was validated under
        fingerprint `vfp` and whose blob has the manifest's size. Empty when Valkey cannot be
        read: a hint only (the commit script checks again)."""
        # A file name that is not UTF-8 cannot be a key (the worker rejects it): never ask.
        paths = [p for p in paths if p.isascii() or _encodable(p)]
        if not paths or not vfp or self._lookups_failed:
            return {}
        keys = [key for path in paths for key in (self.ks.manifest(path), self.ks.blob(path))]
        try:
            replies = self._read_only_script(LOOKUP_SCRIPT, keys, [vfp])
        except redis.RedisError:
            self._lookups_failed = True  # one failure is enough: don't wait on every chunk
            return {}
        known = {path: h.decode() for path, h in zip(paths, replies, strict=True) if h}
        return known

    def _read_only_script(self, script: str, keys: list[str], args: list[str]) -> Any:
        """EVALSHA_RO: allowed on replicas and to read-only users, and plainly a read in
        MONITOR and the ACL log."""
        sha = self._shas.get(script)
        if sha is not None:
            try:
                return self.client.evalsha_ro(sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                pass
        self._shas[script] = self.client.script_load(script)
        return self.client.evalsha_ro(self._shas[script], len(keys), *keys, *args)

    def paths(self) -> list[str]:
        """Every asset path that has a manifest."""
        return sorted(self.ks.manifest_paths(self.client))

    def watch(self, reconnect_delay: float = 0.5) -> Iterator[Update]:
        """Every asset once (resync), then every update; after a disconnect, resync again."""
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.ks.channel)
                # Subscribed first, listed second: nothing published in between is missed.
                for path in self.paths():
                    yield Update(path, self._get_lenient(path), resync=True)
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message and message["type"] == "message":
                        path = message["data"].decode()
                        yield Update(path, self._get_lenient(path))
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(reconnect_delay * random.uniform(0.5, 1.5))
            finally:
                pubsub.close()

    def _get_lenient(self, path: str) -> Asset | None:
        try:
            return self.get(path)
        except IntegrityError:
            return None


def _encodable(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
