"""The consumer client: atomic, hash-verified reads and a subscription that resyncs.

(The daemon's *reader* is the process that watches the tree, reader.py; this module is what
other services use to read the keyspace.) A manifest and a blob read in two round trips can
belong to two versions. `AssetClient` reads both in one MULTI, decompresses, and checks the
SHA-256 against the manifest; on a mismatch (possible in Valkey Cluster, where the two keys
live in different slots, MULTI cannot span them and the writer commits the blob first) it
re-reads for up to `TORN_RETRY_SECONDS`, and never returns bytes that do not match their
manifest. `watch` yields every asset once at (re)connection, then each update.

    from assetmgr.client import AssetClient
    client = AssetClient.from_url("redis://127.0.0.1:6379/0")
    asset = client.get("weights/cost.json")        # None when absent
    for update in client.watch():                  # runs forever, reconnects by itself
        print(update.path, update.asset is None)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis
import zstandard

from assetmgr.backoff import Backoff
from assetmgr.store.backends import open_store
from assetmgr.store.connection import Client, Endpoint, connect
from assetmgr.store.keyspace import CODEC, Keyspace, Manifest

TORN_RETRY_SECONDS = 2.0  # a cluster commit's two steps are one round trip apart
TORN_PAUSE, TORN_PAUSE_MAX = 0.005, 0.1  # seconds; a torn read is retried at once, then less


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
    def __init__(
        self, client: Client, prefix: str = "", *, keyspace: Keyspace | None = None
    ) -> None:
        """`keyspace` (prefix and layout) must be the writer's; `prefix` is its shorthand."""
        self.client = client
        self.ks = keyspace or Keyspace(prefix)
        self.store = open_store(client, self.ks)
        self._dctx = zstandard.ZstdDecompressor()

    @classmethod
    def from_url(
        cls,
        url: str | Endpoint,
        *,
        password: str | None = None,
        prefix: str = "",
        timeout: float = 5.0,
        keyspace: Keyspace | None = None,
    ) -> AssetClient:
        """A client for a URL (or an Endpoint: a cluster, Sentinel, TLS settings)."""
        client = connect(url, password=password, timeout=timeout, client_name="assetmgr-client")
        return cls(client, prefix, keyspace=keyspace)

    def get(self, path: str) -> Asset | None:
        return self.get_many([path])[path]

    def get_many(self, paths: Sequence[str]) -> dict[str, Asset | None]:
        """Read many assets in one MULTI; each is verified, mismatches are re-read."""
        result: dict[str, Asset | None] = {}
        todo = list(paths)
        backoff = Backoff(TORN_PAUSE, TORN_PAUSE_MAX, step=TORN_PAUSE, jitter=(0.5, 1.0))
        deadline = backoff.clock() + TORN_RETRY_SECONDS
        while True:
            torn = []
            for path, raw in zip(todo, self.store.read_pairs(todo), strict=True):
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
            if not backoff.pause(deadline):
                raise IntegrityError(f"{torn[0]}: blob does not match its manifest")
            todo = torn

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

    def paths(self) -> list[str]:
        """Every asset path that has a manifest."""
        return sorted(self.ks.manifest_paths(self.client))

    def watch(self, reconnect_delay: float = 0.5) -> Iterator[Update]:
        """Every asset once (resync), then every update; after a disconnect, resync again."""
        backoff = Backoff(reconnect_delay, jitter=(0.5, 1.5))
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
                backoff.pause()
            finally:
                pubsub.close()

    def _get_lenient(self, path: str) -> Asset | None:
        try:
            return self.get(path)
        except IntegrityError:
            return None
