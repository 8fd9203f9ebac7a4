"""What a scan asks Valkey before it reads a file: the hash stored for each path, so a file whose
stat signature matches what was stored is not read again. Read-only, and only a hint: the commit
script compares hashes again before it writes anything."""

from __future__ import annotations

from collections.abc import Sequence

import redis

from assetmgr.messages import Stored
from assetmgr.store.backends import open_store
from assetmgr.store.connection import Client, Endpoint, connect
from assetmgr.store.keyspace import Keyspace


class StoredHashes:
    """One scan's read-only lookups under validation fingerprint `vfp`; after the first failed
    lookup every later one answers "nothing stored" at once (a scan does not wait per chunk)."""

    def __init__(self, client: Client, keyspace: Keyspace, vfp: str) -> None:
        self.client = client
        self.vfp = vfp
        self._store = open_store(client, keyspace)
        self._failed = False

    @classmethod
    def connect(
        cls, endpoint: Endpoint, keyspace: Keyspace, vfp: str, timeout: float = 5.0
    ) -> StoredHashes:
        client = connect(endpoint, timeout=timeout, client_name="assetmgr-lookup")
        return cls(client, keyspace, vfp)

    def __call__(self, paths: Sequence[str]) -> dict[str, Stored]:
        """The stored hash of each path whose content was validated under `vfp` and whose blob
        has the manifest's size; empty when Valkey cannot be read."""
        # A file name that is not UTF-8 cannot be a key (the worker rejects it): never ask.
        paths = [p for p in paths if p.isascii() or _encodable(p)]
        if not paths or not self.vfp or self._failed:
            return {}
        try:
            stored = self._store.lookup(paths, self.vfp)
        except redis.RedisError:
            self._failed = True
            return {}
        return {path: s for path, s in zip(paths, stored, strict=True) if s is not None}

    def close(self) -> None:
        self.client.close()


def _encodable(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
