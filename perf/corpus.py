"""A deterministic generator of realistic asset trees, with their schemas (issue 11).

    python perf/corpus.py OUT_DIR [--shape realistic|trial] [--files 20000] [--seed 7]

writes OUT_DIR/assets, OUT_DIR/schemas (four kinds whose schemas `$ref` a shared
common.schema.json, and loot's also cards'), OUT_DIR/corpus.json (which paths are valid,
large, invalid and why, and the size distribution), and prints the distribution.

- realistic: most files 0.5-5 KB, a tail to 200 KB, 1 per 1,000 of ~1 MB, 1 per 10,000 of
  3-10 MB, 2% invalid (schema violations, syntax errors, duplicate keys, NaN, bad encoding),
  2% with an escaped quote and some with non-ASCII text (the parser's slower paths).
- trial: the tree of issue 11's new-user trial: 1-5 KB files (~3 KB average), 20 of ~1 MB per
  20,000, four kinds, nothing invalid.

The same arguments always give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import schemas_gen

KINDS = schemas_gen.KINDS
VERSION = 2  # of the generator: part of a cached corpus' directory name
INVALID_CODES = (  # (code assetmgr reports, share of the invalid files)
    ("schema", 0.4), ("syntax", 0.2), ("duplicate_key", 0.2), ("non_finite", 0.1),
    ("encoding", 0.1),
)  # fmt: skip
BUCKETS = (  # upper bounds in bytes, for the size distribution
    (500, "< 0.5 KB"), (1_000, "0.5-1 KB"), (2_000, "1-2 KB"), (5_000, "2-5 KB"),
    (20_000, "5-20 KB"), (200_000, "20-200 KB"), (2_000_000, "0.2-2 MB"),
    (16 * 1024**2 + 1, "2-16 MiB"),
)  # fmt: skip


@dataclass(frozen=True)
class Shape:
    """How many files of each size class, how many invalid, which size mix."""

    small: int
    large: int = 0  # ~1 MB
    huge: int = 0  # 3-10 MB (under the default max_size of 16 MiB)
    invalid: float = 0.0  # share of the small files
    mix: str = "mixed"  # "mixed" (0.5-5 KB, a tail to 200 KB) or "trial" (1-5 KB)

    @property
    def files(self) -> int:
        return self.small + self.large + self.huge

    @property
    def name(self) -> str:
        return f"{self.mix}-s{self.small}-l{self.large}-h{self.huge}-i{self.invalid:g}-v{VERSION}"


def realistic(files: int = 20_000) -> Shape:
    large, huge = max(1, files // 1000), files // 10_000
    return Shape(files - large - huge, large, huge, 0.02, "mixed")


def trial(files: int = 20_000) -> Shape:
    large = max(1, files // 1000)
    return Shape(files - large, large, 0, 0.0, "trial")


SHAPES: dict[str, Callable[[int], Shape]] = {"realistic": realistic, "trial": trial}


@dataclass
class Meta:
    """What was generated: the bench picks edit targets and checks rejections with it."""

    shape: dict[str, Any]
    small: list[str] = field(default_factory=list)  # valid, under 5 KB (the latency edits)
    other: list[str] = field(default_factory=list)  # valid, 5 KB to 1 MB
    large: list[str] = field(default_factory=list)  # valid, ~1 MB
    huge: list[str] = field(default_factory=list)  # valid, 3-10 MB
    invalid: dict[str, str] = field(default_factory=dict)  # path -> the code assetmgr reports
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def paths(self) -> list[str]:
        return list(self.sizes)

    @property
    def valid(self) -> list[str]:
        return self.small + self.other + self.large + self.huge


def small_size(rng: random.Random, mix: str) -> int:
    if mix == "trial":
        return rng.randint(1000, 5000)
    r = rng.random()
    if r < 0.96:
        return rng.randint(500, 5000)
    if r < 0.996:
        return rng.randint(5000, 20_000)
    return int(math.exp(rng.uniform(math.log(20_000), math.log(200_000))))


def sizes_for(shape: Shape, rng: random.Random) -> list[int]:
    out = [small_size(rng, shape.mix) for _ in range(shape.small)]
    out += [rng.randint(950_000, 1_100_000) for _ in range(shape.large)]
    huge = [10_000_000, *(rng.randint(3_000_000, 9_000_000) for _ in range(shape.huge - 1))]
    return out + huge[: shape.huge]


def serialize(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"


def build(
    rng: random.Random, kind: str, ident: str, target: int, per_entry: dict[str, float]
) -> bytes:
    """A valid document of about `target` bytes; `per_entry` learns each kind's entry size."""
    doc = schemas_gen.header(rng, kind, ident)
    base = len(serialize(doc))
    count = max(1, round((target - base) / per_entry.get(kind, 120)))
    schemas_gen.fill(rng, kind, doc, count)
    data = serialize(doc)
    if count >= 8:
        per_entry[kind] = 0.8 * per_entry.get(kind, 120) + 0.2 * (len(data) - base) / count
    return data


def spoil(rng: random.Random, data: bytes, code: str) -> bytes:
    """Make a valid document invalid in a way assetmgr reports as `code`."""
    if code == "schema":
        return data.replace(b'"version": ', b'"version": -', 1)  # minimum is 1
    if code == "syntax":
        if rng.random() < 0.5:
            return data[: len(data) // 2]  # truncated, as by a full disk
        return data.replace(b"\n}", b",\n}", 1) if data.rstrip().endswith(b"}") else data + b"}"
    if code == "duplicate_key":
        return data.replace(b"{\n", b'{\n  "owner": "core",\n', 1)  # owner appears again below
    if code == "non_finite":
        return data.replace(b'"version": ', b'"revision": NaN,\n  "version": ', 1)
    return b"\xef\xbb\xbf" + data if rng.random() < 0.5 else data.replace(b'"', b'"\xff', 1)


def invalid_codes(rng: random.Random, shape: Shape) -> dict[int, str]:
    """Which small files (by index) are spoilt, and how."""
    chosen = rng.sample(range(shape.small), round(shape.small * shape.invalid))
    codes: dict[int, str] = {}
    start = 0
    for code, share in INVALID_CODES:
        end = start + round(share * len(chosen))
        codes.update(dict.fromkeys(chosen[start:end], code))
        start = end
    codes.update(dict.fromkeys(chosen[start:], INVALID_CODES[0][0]))
    return codes


def relpath(kind: str, i: int) -> str:
    return f"{kind}/g{i % 40:02d}/s{(i // 40) % 25:02d}/{kind}_{i:06d}.json"


def generate(out: Path, shape: Shape, seed: int = 7) -> Meta:
    """Write the tree, its schemas and corpus.json; return what was written."""
    rng = random.Random(seed)
    assets = out / "assets"
    schemas_gen.write(out / "schemas")
    sizes = sizes_for(shape, rng)
    bad = invalid_codes(rng, shape)
    meta = Meta(asdict(shape))
    per_entry: dict[str, float] = {}
    made: set[Path] = set()
    for i, target in enumerate(sizes):
        kind = KINDS[i % len(KINDS)]
        rel = relpath(kind, i)
        data = build(rng, kind, f"{kind}_{i}", target, per_entry)
        if i in bad:
            data = spoil(rng, data, bad[i])
            meta.invalid[rel] = bad[i]
        path = assets / rel
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(data)
        meta.sizes[rel] = len(data)
        if i not in bad:
            group = (
                meta.small if len(data) < 5_000 and i < shape.small
                else meta.other if i < shape.small
                else meta.large if i < shape.small + shape.large
                else meta.huge
            )  # fmt: skip
            group.append(rel)
    return meta


def distribution(sizes: Sequence[int]) -> dict[str, Any]:
    """Count and MB per size bucket, total MB, mean and median: what perf/README.md states."""
    buckets = {label: {"files": 0, "mb": 0.0} for _, label in BUCKETS}
    for size in sizes:
        label = next(label for bound, label in BUCKETS if size < bound)
        buckets[label]["files"] += 1
        buckets[label]["mb"] += size / 1e6
    return {
        "files": len(sizes),
        "total_mb": sum(sizes) / 1e6,
        "mean_kb": statistics.fmean(sizes) / 1e3 if sizes else 0.0,
        "median_kb": statistics.median(sizes) / 1e3 if sizes else 0.0,
        "largest_mb": max(sizes, default=0) / 1e6,
        "buckets": {k: v for k, v in buckets.items() if v["files"]},
    }


def describe(meta: Meta) -> str:
    """The distribution as a few lines of text."""
    d = distribution(list(meta.sizes.values()))
    small = [meta.sizes[p] for p in meta.sizes if meta.sizes[p] < 200_000]
    lines = [
        f"{d['files']:,} files, {d['total_mb']:.1f} MB, mean {d['mean_kb']:.2f} KB, "
        f"median {d['median_kb']:.2f} KB, largest {d['largest_mb']:.1f} MB; "
        f"under 200 KB: {len(small):,} files, mean {statistics.fmean(small) / 1e3:.2f} KB",
        f"{len(KINDS)} kinds ({', '.join(KINDS)}); invalid: {len(meta.invalid)} "
        + ", ".join(f"{c}={list(meta.invalid.values()).count(c)}" for c, _ in INVALID_CODES),
    ]
    lines += [
        f"  {label:>10}: {b['files']:>7,} files {b['mb']:>9.1f} MB"
        for label, b in d["buckets"].items()
    ]
    return "\n".join(lines)


def save(out: Path, meta: Meta) -> None:
    doc = {**asdict(meta), "distribution": distribution(list(meta.sizes.values()))}
    (out / "corpus.json").write_text(json.dumps(doc))


def load(out: Path) -> Meta | None:
    try:
        doc = json.loads((out / "corpus.json").read_text())
    except (OSError, ValueError):
        return None
    doc.pop("distribution", None)
    return Meta(**doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="realistic")
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    meta = generate(args.out, SHAPES[args.shape](args.files), args.seed)
    save(args.out, meta)
    print(f"{args.out / 'assets'}:\n{describe(meta)}")


if __name__ == "__main__":
    main()
