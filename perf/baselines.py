"""The baselines of issue 11, measured in the benchmark's own process, on the same corpus and
Valkey as the `assetmgr hydrate` they are compared with.

Naive loader: one file at a time, stdlib `json` + a `jsonschema` Draft7Validator (built once per
schema, `$ref`s resolved from the schemas directory) + zstd + sha256, then SET, HSET and PUBLISH
as three separate round trips.

Ideal: its CPU part is ONE core running the leanest chain the libraries allow — open/read +
`orjson.loads` + the compiled fastjsonschema validator + zstd level 3 + sha256, nothing else (not
assetmgr's own per-file function); its write part is one client writing the same records to
Valkey pipelined. Ideal rate = min(2 x the one-core rate, the pipelined write rate), both over
the files of the tree: the time the tree would take on two cores if the CPU work were split
perfectly and the writes cost nothing more than one pipelined client.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
import orjson
import redis
import referencing
import referencing.jsonschema
import zstandard

from assetmgr.store.keyspace import Keyspace

KEYS = Keyspace()
PIPELINE = 256
IDEAL_CORES = 2
ZSTD_LEVEL = 3
SUFFIX = ".schema.json"


@dataclass(frozen=True, slots=True)
class Record:
    path: str
    blob: bytes
    hash: str
    size: int
    kind: str
    mtime_ns: int = 0


def manifest_fields(rec: Record) -> dict[str, str]:
    """The fields of a `v4:manifest:P` hash as a cold commit writes them (gen fixed at 1)."""
    return {
        "hash": rec.hash,
        "size": str(rec.size),
        "zsize": str(len(rec.blob)),
        "codec": "zstd",
        "schema": rec.kind,
        "mtime_ns": str(rec.mtime_ns),
        "updated_ms": str(int(time.time() * 1000)),
        "gen": "1",
        "writer": f"{socket.gethostname()}:{os.getpid()}",
        "vfp": "0123456789abcdef",
    }


def _documents(schemas: Path) -> dict[str, dict[str, Any]]:
    """Every schema document by file URI (assetmgr bases relative `$ref`s on the file, too)."""
    docs = {}
    for path in sorted(schemas.glob("*" + SUFFIX)):
        doc = json.loads(path.read_text())
        docs[path.resolve().as_uri()] = {**doc, "$id": path.resolve().as_uri()}
    return docs


def jsonschema_validators(schemas: Path) -> dict[str, jsonschema.Draft7Validator]:
    docs = _documents(schemas)
    spec = referencing.jsonschema.DRAFT7
    registry: referencing.Registry[Any] = referencing.Registry().with_resources(
        (uri, referencing.Resource.from_contents(doc, default_specification=spec))
        for uri, doc in docs.items()
    )
    return {
        _kind(uri): jsonschema.Draft7Validator(doc, registry=registry) for uri, doc in docs.items()
    }


def _kind(uri: str) -> str:
    return uri.rsplit("/", 1)[1].removesuffix(SUFFIX)


def fast_validators(schemas: Path) -> dict[str, Callable[[Any], Any]]:
    """fastjsonschema's compiled validator per kind; `$ref`s read from the same directory."""
    docs = _documents(schemas)
    handlers = {"file": lambda uri: docs[uri.split("#", 1)[0]]}
    return {_kind(uri): fastjsonschema.compile(doc, handlers=handlers) for uri, doc in docs.items()}


def naive_load(root: Path, schemas: Path, paths: Sequence[str], url: str) -> tuple[float, int]:
    """The naive loader over `paths`; (seconds, files rejected). Invalid files are skipped."""
    client = redis.Redis.from_url(url)
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    validators = jsonschema_validators(schemas)
    rejected = 0
    started = time.perf_counter()
    for rel in paths:
        kind = rel.split("/", 1)[0]
        full = root / rel
        data = full.read_bytes()
        try:
            validators[kind].validate(json.loads(data))
        except (ValueError, jsonschema.ValidationError):
            rejected += 1
            continue
        blob = compressor.compress(data)
        rec = Record(rel, blob, hashlib.sha256(data).hexdigest(), len(data), kind,
                     full.stat().st_mtime_ns)  # fmt: skip
        client.set(KEYS.blob(rel), blob)
        client.hset(KEYS.manifest(rel), mapping=manifest_fields(rec))  # type: ignore[arg-type]
        client.publish(KEYS.channel, rel)
    seconds = time.perf_counter() - started
    client.close()
    return seconds, rejected


def lean_chain(root: Path, schemas: Path, paths: Sequence[str]) -> tuple[float, list[Record]]:
    """The ideal's CPU part on one core: (seconds, the records of the valid files)."""
    validators = fast_validators(schemas)
    compress = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress
    sha256, loads = hashlib.sha256, orjson.loads
    invalid = (orjson.JSONDecodeError, fastjsonschema.JsonSchemaValueException)
    base = str(root)
    records = []
    started = time.perf_counter()
    for rel in paths:
        kind = rel.partition("/")[0]
        with open(os.path.join(base, rel), "rb") as f:
            data = f.read()
        try:
            validators[kind](loads(data))
        except invalid:
            continue
        records.append(Record(rel, compress(data), sha256(data).hexdigest(), len(data), kind))
    return time.perf_counter() - started, records


def pipelined_write(records: Sequence[Record], url: str) -> float:
    """SET + HSET + PUBLISH per asset from one client, PIPELINE assets per round trip."""
    client = redis.Redis.from_url(url)
    fields = [manifest_fields(r) for r in records]
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


def ideal_per_s(files: int, cpu_s: float, write_s: float) -> float:
    """min(2 x the one-core rate, the pipelined write rate), both in files of the tree per s."""
    return min(IDEAL_CORES * files / cpu_s, files / write_s)
