"""`assetmgr status`: a read-only comparison of the disk and Valkey, category by category."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import zstandard

from assetmgr.commands import oneshot
from assetmgr.config import Config
from assetmgr.limits import Limits
from assetmgr.messages import Accepted, Rejected, Result, UnchangedPaths
from assetmgr.pipeline import tree
from assetmgr.pipeline.schemas import Registry
from assetmgr.printable import shown
from assetmgr.store.backends import Store, open_store
from assetmgr.store.connection import checked

CHUNK = 500


@dataclass
class Drift:
    in_sync: list[str] = field(default_factory=list)
    would_add: list[str] = field(default_factory=list)
    would_update: list[str] = field(default_factory=list)
    would_delete: list[str] = field(default_factory=list)
    invalid_on_disk: dict[str, str] = field(default_factory=dict)
    blob_mismatch: list[str] = field(default_factory=list)
    manifest_without_blob: list[str] = field(default_factory=list)
    blob_without_manifest: list[str] = field(default_factory=list)
    not_assets: list[str] = field(default_factory=list)

    @property
    def problems(self) -> dict[str, int]:
        counts = {k: len(v) for k, v in asdict(self).items() if k != "in_sync"}
        return {k: v for k, v in counts.items() if v}

    @property
    def synced(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, object]:
        doc: dict[str, object] = {"in_sync": self.synced, "counts": {"in_sync": len(self.in_sync)}}
        doc["counts"] = {"in_sync": len(self.in_sync), **self.problems}
        doc.update({k: v for k, v in asdict(self).items() if k != "in_sync"})
        return doc

    def text(self) -> str:
        lines = [f"in sync: {len(self.in_sync)}"]
        for name, items in asdict(self).items():
            if name == "in_sync" or not items:
                continue
            lines.append(f"{name.replace('_', ' ')}: {len(items)}")
            if isinstance(items, dict):
                lines += [f"  {p}: {reason}" for p, reason in sorted(items.items())]
            else:
                lines += [f"  {p}" for p in sorted(items)]
        lines.append("status: " + ("in sync" if self.synced else "DRIFT"))
        return "\n".join(lines) + "\n"


def compare(cfg: Config, registry: Registry, limits: Limits) -> Drift:
    disk: dict[str, Accepted | Rejected] = {}

    def keep(results: Sequence[Result] | UnchangedPaths) -> None:
        disk.update((r.path, r) for r in results if isinstance(r, Accepted | Rejected))

    client = checked(cfg.endpoint, cfg.connect_timeout)
    ks = cfg.keyspace
    store = open_store(client, ks)
    progress = oneshot.Progress(False)
    oneshot.evaluate_tree(cfg.root, registry, limits, cfg.workers, keep, progress)
    manifests, blobs = ks.manifest_paths(client), ks.blob_paths(client)
    drift = Drift()
    stored_hash = _stored_hashes(store, sorted(manifests & blobs))
    for path in sorted(manifests | blobs):
        if not tree.is_asset_name(path):
            drift.not_assets.append(path)
        elif path not in blobs:
            drift.manifest_without_blob.append(path)
        elif path not in manifests:
            drift.blob_without_manifest.append(path)
        elif stored_hash.get(path) is None:
            drift.blob_mismatch.append(path)
    for path, result in sorted(disk.items()):
        if isinstance(result, Rejected):
            drift.invalid_on_disk[shown(path)] = result.reason
        elif path not in manifests:
            drift.would_add.append(path)
        elif stored_hash.get(path) not in (None, result.hash):
            drift.would_update.append(path)
        elif stored_hash.get(path) == result.hash:
            drift.in_sync.append(path)
    drift.would_delete = sorted(p for p in manifests if p not in disk and tree.is_asset_name(p))
    return drift


def _stored_hashes(store: Store, paths: list[str]) -> dict[str, str | None]:
    """Manifest hash per path, or None where the blob does not decompress to that hash."""
    dctx = zstandard.ZstdDecompressor()
    result: dict[str, str | None] = {}
    for i in range(0, len(paths), CHUNK):
        chunk = paths[i : i + CHUNK]
        for path, (fields, blob) in zip(chunk, store.read_pairs(chunk), strict=True):
            result[path] = _verified(dctx, fields.get(b"hash"), blob)
    return result


def _verified(
    dctx: zstandard.ZstdDecompressor, manifest_hash: bytes | None, blob: bytes | None
) -> str | None:
    if manifest_hash is None or blob is None:
        return None
    try:
        actual = hashlib.sha256(dctx.decompress(blob)).hexdigest()
    except zstandard.ZstdError:
        return None
    expected = manifest_hash.decode()
    return expected if actual == expected else None
