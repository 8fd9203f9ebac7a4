"""The two baselines of DESIGN §7, measured in the benchmark's own process.

A, the naive loader: one file at a time with stdlib `json`, a `jsonschema` Draft7Validator built
once per schema, zstd and sha256, then SET, HSET and PUBLISH as three separate round trips.

B, the ideal: min(2 x the one-core rate of the project's own per-file function
`assetmgr.worker.inspect`, the rate at which one client writes the same records to Valkey
pipelined, 256 assets per round trip). The factor 2 is the two cores of the target machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import redis
import zstandard

from assetmgr import schemas as asset_schemas
from assetmgr import worker
from assetmgr.keyspace import Keyspace

KEYS = Keyspace()
PIPELINE = 256
IDEAL_CORES = 2


def manifest_fields(rec: worker.Accepted, zsize: int) -> dict[str, str]:
    """The `v4:manifest:P` fields a commit writes (gen fixed at 1: a cold load)."""
    return {
        "hash": rec.hash,
        "size": str(rec.size),
        "zsize": str(zsize),
        "codec": "zstd",
        "schema": rec.schema,
        "mtime_ns": str(rec.mtime_ns),
        "updated_ms": str(int(time.time() * 1000)),
        "gen": "1",
        "writer": f"{socket.gethostname()}:{os.getpid()}",
    }


def naive_load(root: Path, schemas: Path, paths: Sequence[str], url: str) -> float:
    """Baseline A over `paths`; returns seconds. Invalid files are skipped, as a loader would."""
    client = redis.Redis.from_url(url)
    compressor = zstandard.ZstdCompressor(level=worker.ZSTD_LEVEL)
    validators: dict[str, jsonschema.Draft7Validator] = {}
    started = time.perf_counter()
    for rel in paths:
        kind = rel.split("/", 1)[0]
        if kind not in validators:
            schema = json.loads((schemas / f"{kind}.schema.json").read_text())
            validators[kind] = jsonschema.Draft7Validator(schema)
        full = root / rel
        data = full.read_bytes()
        try:
            validators[kind].validate(json.loads(data))
        except (ValueError, jsonschema.ValidationError):
            continue
        blob = compressor.compress(data)
        rec = worker.Accepted(
            rel, blob, hashlib.sha256(data).hexdigest(), len(data), kind, full.stat().st_mtime_ns
        )
        client.set(KEYS.blob(rel), blob)
        client.hset(KEYS.manifest(rel), mapping=manifest_fields(rec, len(blob)))  # type: ignore[arg-type]
        client.publish(KEYS.channel, rel)
    seconds = time.perf_counter() - started
    client.close()
    return seconds


def inspect_all(
    root: Path, schemas: Path, paths: Sequence[str]
) -> tuple[float, list[worker.Accepted]]:
    """One core running `inspect` over every path; (seconds, the accepted records)."""
    registry = asset_schemas.load(schemas)
    limits = worker.Limits()
    compressor = zstandard.ZstdCompressor(level=worker.ZSTD_LEVEL)
    base = str(root)
    started = time.perf_counter()
    results = [worker.inspect(base, rel, registry, limits, compressor) for rel in paths]
    seconds = time.perf_counter() - started
    return seconds, [r for r in results if isinstance(r, worker.Accepted)]


def pipelined_write(records: Sequence[worker.Accepted], url: str) -> float:
    """SET + HSET + PUBLISH per asset from one client, PIPELINE assets per round trip."""
    client = redis.Redis.from_url(url)
    fields = [manifest_fields(r, len(r.blob)) for r in records]
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for i, (rec, mapping) in enumerate(zip(records, fields, strict=True), 1):
        pipe.set(KEYS.blob(rec.path), rec.blob)
        pipe.hset(KEYS.manifest(rec.path), mapping=mapping)  # type: ignore[arg-type]
        pipe.publish(KEYS.channel, rec.path)
        if i % PIPELINE == 0:
            pipe.execute()
    pipe.execute()
    seconds = time.perf_counter() - started
    client.close()
    return seconds


@dataclass
class Ideal:
    inspect_per_s: float  # one core
    write_per_s: float  # one pipelined client

    @property
    def per_s(self) -> float:
        return min(IDEAL_CORES * self.inspect_per_s, self.write_per_s)
