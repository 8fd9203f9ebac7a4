"""Where a large asset's `worker.evaluate` time goes, stage by stage (for perf/profiling.py).

Each stage is the library call `evaluate` makes (parse_strict: the value-count bound,
orjson.loads, orjson.dumps of the document again, the quote counts that prove no key was
repeated, the brackets outside strings and the depth check on them, the long-digit scan; then
the schema check, zstd, sha256), timed alone on the same bytes: min of `repeat`.
Also: the exact parser (stdlib json with hooks, what an escaped quote costs), the pickling
of the result for the pipes, and evaluate with the cyclic garbage collector off (a parse of
a large document allocates enough containers to trigger it many times).
"""

from __future__ import annotations

import cProfile
import functools
import gc
import hashlib
import importlib.metadata
import os
import pickle
import pstats
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import corpus
import orjson
import zstandard

from assetmgr.limits import Limits
from assetmgr.pipeline import jsonparse, schemas, worker


def best_ms(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - started) * 1000)
    return {"min_ms": min(runs), "median_ms": statistics.median(runs)}


def without_gc(fn: Callable[[], Any]) -> Callable[[], Any]:
    def call() -> Any:
        gc.disable()
        try:
            return fn()
        finally:
            gc.enable()

    return call


def stages(root: Path, rel: str, registry: schemas.Registry, repeat: int) -> dict[str, Any]:
    """Every stage of evaluate (and around it) on one asset, in ms."""
    limits = Limits()
    full = os.path.join(root, rel)
    data = Path(full).read_bytes()
    schema = registry.schema_for(rel)
    assert schema is not None
    compressor = zstandard.ZstdCompressor(level=worker.ZSTD_LEVEL)
    document = orjson.loads(data)
    output = orjson.dumps(document)
    brackets = jsonparse._brackets(data)
    accepted = worker.evaluate(rel, data, registry, limits, compressor)
    out: dict[str, Any] = {"bytes": len(data), "escaped_quote": b'\\"' in data}
    steps: dict[str, Callable[[], Any]] = {
        "read": lambda: worker._read_settled(str(root), full, limits),
        "value_count_bound": lambda: jsonparse._check_values(data, limits),
        "orjson_loads": lambda: orjson.loads(data),
        "orjson_dumps_again": lambda: orjson.dumps(document),
        "dup_key_quote_counts": lambda: data.count(b'"') == output.count(b'"'),
        "brackets_outside_strings": lambda: jsonparse._brackets(data),
        "depth_check": lambda: jsonparse._depth_within(brackets, limits.max_depth),
        "long_digit_scan": lambda: jsonparse._long_digits_outside_strings(data),
        "parse_strict_total": lambda: jsonparse.parse_strict(data, limits),
        "schema_check": lambda: schema.check(document),
        "zstd_level3": lambda: compressor.compress(data),
        "sha256": lambda: hashlib.sha256(data).hexdigest(),
        "evaluate_total": lambda: worker.evaluate(rel, data, registry, limits, compressor),
        "evaluate_gc_off": without_gc(
            lambda: worker.evaluate(rel, data, registry, limits, compressor)
        ),
        "inspect_total": lambda: worker.inspect(str(root), rel, registry, limits, compressor),
        "pickle_result": lambda: pickle.loads(pickle.dumps(accepted)),
        "exact_parser": lambda: jsonparse.parse_exact(data, limits),
    }
    out["ms"] = {name: best_ms(fn, repeat) for name, fn in steps.items()}
    out["blob_ratio"] = len(compressor.compress(data)) / len(data)
    return out


def pick(meta: corpus.Meta) -> list[str]:
    """One ~1 MB asset per kind, and every 3-10 MB one."""
    per_kind: dict[str, str] = {}
    for rel in meta.large:
        per_kind.setdefault(rel.split("/", 1)[0], rel)
    return list(per_kind.values()) + list(meta.huge)


def evaluate_report(
    root: Path, meta: corpus.Meta, repeat: int, out: Path, top: int
) -> dict[str, Any]:
    registry = schemas.load(root / "schemas")
    assets = root / "assets"
    report: dict[str, Any] = {"assets": {}}
    for rel in pick(meta):
        report["assets"][rel] = stages(assets, rel, registry, max(repeat, 3))
    for rel in pick(meta)[:1] + list(meta.huge)[-1:]:
        report.setdefault("profiles", {})[rel] = _profile(assets, rel, registry, out, top)
    return report


def _profile(
    root: Path, rel: str, registry: schemas.Registry, out: Path, top: int
) -> list[tuple[str, int, float, float]]:
    """cProfile of 3 evaluates of one asset: the top functions by own time."""
    data = (root / rel).read_bytes()
    limits, compressor = Limits(), zstandard.ZstdCompressor(level=worker.ZSTD_LEVEL)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(3):
        worker.evaluate(rel, data, registry, limits, compressor)
    prof.disable()
    name = rel.rsplit("/", 1)[1].removesuffix(".json")
    path = out / f"evaluate-{name}.prof"
    prof.dump_stats(path)
    rows: list[tuple[str, int, float, float]] = top_functions(
        [path], out / f"top-evaluate-{name}.txt", top
    )["by_own"]
    return rows


def print_report(report: dict[str, Any], top: int) -> None:
    assets = report["assets"]
    if not assets:
        return
    names = list(next(iter(assets.values()))["ms"])
    print("\n== worker.evaluate by stage (ms, min of runs) ==")
    heads = [rel.split("/", 1)[0] + f" {a['bytes'] / 1e6:.1f}MB" for rel, a in assets.items()]
    print(f"  {'stage':<22}" + "".join(f"{h:>16}" for h in heads))
    for name in names:
        cells = "".join(f"{a['ms'][name]['min_ms']:>16.2f}" for a in assets.values())
        print(f"  {name:<22}{cells}")
    for rel, rows in report.get("profiles", {}).items():
        print(f"\n== cProfile, 3 x evaluate of {rel} ==")
        for name, calls, own, cum in rows[:top]:
            print(f"  {own:8.3f} own {cum:8.3f} cum {calls:>9,}  {name}")


def top_functions(files: list[Path], text: Path, top: int) -> dict[str, Any]:
    """Merged pstats of `files`: total time and the top functions by own and cumulative time."""
    stats = pstats.Stats(*map(str, files))
    with text.open("w") as f:
        for order in ("tottime", "cumulative"):
            pstats.Stats(*map(str, files), stream=f).sort_stats(order).print_stats(top)
    rows = []
    for (file, line, name), (_, calls, own, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((f"{Path(file).name}:{line}({name})", calls, own, cum))
    by_own = sorted(rows, key=lambda r: -r[2])[:top]
    by_cum = sorted(rows, key=lambda r: -r[3])[:top]
    return {"processes": len(files), "total_s": stats.total_tt,  # type: ignore[attr-defined]
            "by_own": by_own, "by_cumulative": by_cum}  # fmt: skip


def cold_per_file(root: Path, meta: corpus.Meta, out: Path, top: int) -> dict[str, Any]:
    """One core: assetmgr's `inspect` over the whole tree vs the ideal's lean library chain,
    by size class, and the top functions of `inspect` over the small files."""
    import baselines

    registry = schemas.load(root / "schemas")
    assets, limits = root / "assets", Limits()
    compressor = zstandard.ZstdCompressor(level=worker.ZSTD_LEVEL)
    classes = {"small": meta.small + list(meta.invalid), "5 KB-1 MB": meta.other,
               "~1 MB": meta.large, "3-10 MB": meta.huge}  # fmt: skip
    report: dict[str, Any] = {}
    for name, paths in classes.items():
        if not paths:
            continue
        started = time.perf_counter()
        for rel in paths:
            worker.inspect(str(assets), rel, registry, limits, compressor)
        inspect_s = time.perf_counter() - started
        lean_s, _ = baselines.lean_chain(assets, root / "schemas", paths)
        report[name] = {"files": len(paths), "inspect_s": inspect_s, "lean_s": lean_s,
                        "inspect_us_per_file": inspect_s / len(paths) * 1e6,
                        "lean_us_per_file": lean_s / len(paths) * 1e6}  # fmt: skip
    prof = cProfile.Profile()
    prof.enable()
    for rel in meta.small:
        worker.inspect(str(assets), rel, registry, limits, compressor)
    prof.disable()
    dump = out / "inspect-small.prof"
    prof.dump_stats(dump)
    report["profile_small"] = top_functions([dump], out / "top-inspect-small.txt", top)["by_own"]
    return report


def print_cold(report: dict[str, Any], top: int) -> None:
    print("\n== one core, per file: assetmgr inspect vs the lean chain (cold work) ==")
    for name, r in report.items():
        if name != "profile_small":
            print(f"  {name:<10} {r['files']:>7,} files  inspect {r['inspect_s']:7.2f} s "
                  f"({r['inspect_us_per_file']:9.0f} us/file)  lean {r['lean_s']:7.2f} s "
                  f"({r['lean_us_per_file']:9.0f} us/file)")  # fmt: skip
    print("  top functions of inspect over the small files (own time):")
    for name, calls, own, cum in report["profile_small"][:top]:
        print(f"  {own:8.3f} own {cum:8.3f} cum {calls:>9,}  {name}")


def native_report(root: Path, meta: corpus.Meta, repeat: int) -> dict[str, Any]:
    """What a native draft-07 engine (jsonschema-rs, perf extra) would change: its check of
    the large assets next to the project's fastjsonschema one, and whether the two reach the
    same verdict on every file of the corpus that parses. Evidence for a decision the schema rules
    makes (fastjsonschema); nothing in assetmgr/ uses it."""
    import jsonschema_rs

    directory = (root / "schemas").resolve()
    registry = schemas.load(directory)
    documents = {p.name: orjson.loads(p.read_bytes()) for p in directory.glob("*.schema.json")}
    uris = {name: (directory / name).as_uri() for name in documents}

    def refuse(uri: str) -> Any:
        raise ValueError(f"{uri} is not in the schemas directory")

    resources = jsonschema_rs.Registry(
        [(uris[name], {**doc, "$id": uris[name]}) for name, doc in documents.items()],
        retriever=refuse,
    )
    native = {
        name.removesuffix(schemas.SUFFIX): jsonschema_rs.validator_for(
            {**doc, "$id": uris[name]}, registry=resources, validate_formats=True
        )
        for name, doc in documents.items()
    }
    assets, limits = root / "assets", Limits()
    large: dict[str, Any] = {}
    for rel in pick(meta):
        document = orjson.loads((assets / rel).read_bytes())
        schema = registry.schema_for(rel)
        assert schema is not None
        check = native[schema.name.removesuffix(schemas.SUFFIX)]
        large[rel] = {
            "bytes": (assets / rel).stat().st_size,
            "fastjsonschema": best_ms(functools.partial(schema.check, document), max(repeat, 3)),
            "jsonschema_rs": best_ms(functools.partial(check.is_valid, document), max(repeat, 3)),
        }
    agree, differ = 0, []
    for rel in sorted(meta.sizes):
        schema = registry.schema_for(rel)
        try:
            document = jsonparse.parse_strict((assets / rel).read_bytes(), limits)
        except jsonparse.Invalid:
            continue  # refused before any schema sees it
        if schema is None:
            continue
        try:
            schema.check(document)
            ours = True
        except Exception:  # fastjsonschema's verdict, as evaluate reads it
            ours = False
        theirs = native[schema.name.removesuffix(schemas.SUFFIX)].is_valid(document)
        if ours == theirs:
            agree += 1
        else:
            differ.append({"path": rel, "fastjsonschema": ours, "jsonschema_rs": theirs})
    return {"version": importlib.metadata.version("jsonschema-rs"), "large": large,
            "verdicts_agree": agree, "verdicts_differ": differ}  # fmt: skip


def print_native(report: dict[str, Any]) -> None:
    print(f"\n== schema check: fastjsonschema vs jsonschema-rs {report['version']} (ms, min) ==")
    for rel, row in report["large"].items():
        print(f"  {rel:<44} {row['bytes'] / 1e6:5.1f} MB  fastjsonschema "
              f"{row['fastjsonschema']['min_ms']:8.2f}  jsonschema-rs "
              f"{row['jsonschema_rs']['min_ms']:8.2f}")  # fmt: skip
    print(f"  verdicts over the files that parse: {report['verdicts_agree']:,} agree, "
          f"{len(report['verdicts_differ'])} differ")  # fmt: skip
    for row in report["verdicts_differ"][:10]:
        print(f"    {row}")
