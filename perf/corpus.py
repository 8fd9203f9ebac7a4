"""A deterministic generator of realistic asset trees, with their schemas.

    python perf/corpus.py OUT_DIR --small 20000 --large 20 --invalid 0.01

writes OUT_DIR/assets (small assets of 1-4 KB in several kinds and nested directories, large
ones of about 1 MB, an optional share of invalid ones) and OUT_DIR/schemas. The same arguments
always give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

KINDS = ("weights", "cards", "routes", "loot", "quests")

SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["id", "version", "owner", "entries"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": "^[a-z0-9_-]+$"},
        "version": {"type": "integer", "minimum": 1},
        "owner": {"type": "string", "minLength": 1},
        "enabled": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 16},
        "entries": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "weight"],
                "additionalProperties": False,
                "properties": {
                    "key": {"type": "string"},
                    "weight": {"type": "number", "minimum": 0, "maximum": 1000000},
                    "note": {"type": "string", "maxLength": 200},
                    "region": {"enum": ["eu", "us", "apac", "latam"]},
                },
            },
        },
    },
}


def asset(rng: random.Random, ident: str, target: int) -> dict[str, object]:
    doc: dict[str, object] = {
        "id": ident,
        "version": rng.randint(1, 50),
        "owner": rng.choice(["core", "live-ops", "economy", "infra"]),
        "enabled": rng.random() > 0.1,
        "tags": [rng.choice(["a", "beta", "eu", "hot", "pvp"]) for _ in range(rng.randint(0, 4))],
        "entries": [],
    }
    entries: list[dict[str, object]] = doc["entries"]  # type: ignore[assignment]
    size = 120
    while size < target:
        entry = {
            "key": f"k{rng.randrange(10**6)}",
            "weight": round(rng.uniform(0, 1000), 3),
            "note": "x" * rng.randint(0, 40),
            "region": rng.choice(["eu", "us", "apac", "latam"]),
        }
        entries.append(entry)
        size += 85 + len(entry["note"])  # type: ignore[arg-type]
    return doc


def generate(out: Path, small: int, large: int, invalid: float, seed: int = 7) -> list[str]:
    """Write the tree; return the relative paths of the assets, valid and invalid."""
    rng = random.Random(seed)
    assets, schemas = out / "assets", out / "schemas"
    schemas.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        (schemas / f"{kind}.schema.json").write_text(json.dumps({**SCHEMA, "$id": kind}, indent=2))
    paths = []
    for i in range(small + large):
        kind = KINDS[i % len(KINDS)]
        rel = f"{kind}/g{i % 40:02d}/s{(i // 40) % 25:02d}/a{i:06d}.json"
        target = 1_000_000 if i >= small else rng.randint(1000, 4000)
        data = json.dumps(asset(rng, f"a{i}", target), indent=1).encode() + b"\n"
        if i < small and rng.random() < invalid:
            data = data[: len(data) // 2]  # truncated: invalid JSON
        path = assets / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(rel)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--small", type=int, default=20000)
    parser.add_argument("--large", type=int, default=20)
    parser.add_argument("--invalid", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    paths = generate(args.out, args.small, args.large, args.invalid, args.seed)
    print(f"{len(paths)} assets in {args.out / 'assets'}")


if __name__ == "__main__":
    main()
