"""The six benchmark sections. Each returns {"summary": {name: number}, ...details}.

Summary names carry their unit as a suffix (`_s`, `_ms`, `_mb`, `_per_s`, `ratio_`), so the
table printer and a reader of bench.json need no separate legend. Every figure is the median
over `repeat` runs; the per-run values are kept next to it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from typing import Any

import baselines
import measure
import redis
from harness import Context, Corpus, pristine
from measure import median


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


def cold(ctx: Context) -> dict[str, Any]:
    """Cold hydrate vs the naive loader (A) and the ideal (B), runs interleaved."""
    tree = ctx.corpus(*ctx.profile.cold)
    runs: dict[str, list[float]] = {"hydrate": [], "naive": [], "inspect": [], "write": []}
    written = 0
    for _ in range(ctx.repeat):
        ctx.flush()
        runs["hydrate"].append(ctx.hydrate(tree))
        ctx.flush()
        runs["naive"].append(baselines.naive_load(tree.assets, tree.schemas, tree.paths, ctx.url))
        seconds, records = baselines.inspect_all(tree.assets, tree.schemas, tree.paths)
        runs["inspect"].append(seconds)
        ctx.flush()
        runs["write"].append(baselines.pipelined_write(records, ctx.url))
        written = len(records)
        del records
    n, seconds = len(tree.paths), median(runs["hydrate"])
    hydrate_rate = rate(n, seconds)
    naive_rate = rate(n, median(runs["naive"]))
    ideal = baselines.Ideal(rate(n, median(runs["inspect"])), rate(written, median(runs["write"])))
    summary = {
        "assets": n,
        "corpus_mb": tree.bytes / 1e6,
        "hydrate_s": seconds,
        "hydrate_per_s": hydrate_rate,
        "hydrate_mb_per_s": tree.bytes / 1e6 / seconds,
        "naive_per_s": naive_rate,
        "inspect_one_core_per_s": ideal.inspect_per_s,
        "pipelined_write_per_s": ideal.write_per_s,
        "ideal_per_s": ideal.per_s,
        "ratio_vs_naive": hydrate_rate / naive_rate,
        "ratio_vs_ideal": hydrate_rate / ideal.per_s,
    }
    return {"summary": summary, "runs_s": runs}


def rehydrate(ctx: Context) -> dict[str, Any]:
    """Hydrate an unchanged tree again: its speed vs a cold run, and the writes it sends."""
    tree = ctx.corpus(*ctx.profile.cold)
    runs: dict[str, list[float]] = {"cold": [], "rehydrate": []}
    for _ in range(ctx.repeat):
        ctx.flush()
        runs["cold"].append(ctx.hydrate(tree))
        runs["rehydrate"].append(ctx.hydrate(tree))
    with measure.Monitor(ctx.url) as monitor:
        monitored = ctx.hydrate(tree)
    n = len(tree.paths)
    cold_rate, re_rate = rate(n, median(runs["cold"])), rate(n, median(runs["rehydrate"]))
    summary = {
        "assets": n,
        "cold_per_s": cold_rate,
        "rehydrate_s": median(runs["rehydrate"]),
        "rehydrate_per_s": re_rate,
        "ratio_vs_cold": re_rate / cold_rate,
        "asset_writes": sum(monitor.writes.values()),
        "monitored_commands": monitor.seen,
    }
    return {"summary": summary, "runs_s": runs, "monitored_run_s": monitored,
            "writes_by_verb": monitor.writes}  # fmt: skip


def _latency_plan(ctx: Context, tree: Corpus) -> list[tuple[str, str, float, list[str]]]:
    """(size, mode, rate, paths) for every run; paths differ between runs where the tree allows."""
    p = ctx.profile
    plan = []
    offsets = {"small": 0, "large": 0}
    for _ in range(ctx.repeat):
        for size, pool, count in (("small", tree.small, p.small_edits),
                                  ("large", tree.large, p.large_edits)):  # fmt: skip
            count = min(count, len(pool))  # distinct paths within a run
            if count == 0:
                continue
            for mode in ("rename", "inplace"):
                for per_s in p.rates:
                    start = offsets[size]
                    paths = [pool[(start + i) % len(pool)] for i in range(count)]
                    offsets[size] = (start + count) % len(pool)
                    plan.append((size, mode, per_s, paths))
    return plan


def latency(ctx: Context) -> dict[str, Any]:
    """Close → PUBLISH seen by a subscriber, one asset saved at a time by a writer process."""
    tree = ctx.corpus(*ctx.profile.daemon)
    plan = _latency_plan(ctx, tree)
    touched = sorted({p for *_, paths in plan for p in paths})
    results: dict[str, dict[str, list[float]]] = {}
    version = 1_000
    ctx.flush()
    with pristine(tree, touched), ctx.daemon(tree, "latency") as daemon:
        ready_s = daemon.wait_ready()
        with measure.Subscriber(ctx.url) as sub:
            for size, mode, per_s, paths in plan:
                edits = [(p, version + i) for i, p in enumerate(paths)]
                version += len(edits)
                start = time.monotonic_ns()
                done = measure.run_editor(tree.assets, edits, mode, per_s)
                sub.wait_for(set(paths), start, timeout=30 + len(paths) / 10)
                samples, missing = measure.latencies_ms(done, sub.since(start))
                row = results.setdefault(f"{size}_{mode}_{per_s:g}", {"samples_ms": []})
                row["samples_ms"].extend(samples)
                row.setdefault("missing", []).append(missing)
                for q in (50, 90, 99):
                    value = measure.percentile(samples, q) if samples else float("nan")
                    row.setdefault(f"p{q}_ms", []).append(value)
                row.setdefault("max_ms", []).append(max(samples, default=float("nan")))
                time.sleep(0.3)
    summary: dict[str, float] = {"daemon_ready_s": ready_s}
    for key, row in results.items():
        for stat in ("p50_ms", "p90_ms", "p99_ms", "max_ms"):
            summary[f"{key}_{stat}"] = median(row[stat])
        summary[f"{key}_missing"] = sum(row["missing"])
    return {"summary": summary, "runs": results}


def burst(ctx: Context) -> dict[str, Any]:
    """Many files rewritten at once (temp + rename) under a running daemon: time until all are
    published, then a check that every manifest holds the new content's hash."""
    tree = ctx.corpus(*ctx.profile.daemon)
    targets = tree.small[: ctx.profile.burst]
    runs: list[dict[str, float]] = []
    ctx.flush()
    with pristine(tree, targets), ctx.daemon(tree, "burst") as daemon:
        daemon.wait_ready()
        with measure.Subscriber(ctx.url) as sub:
            for r in range(ctx.repeat):
                start = time.monotonic_ns()
                edits = [(p, 10_000 + r) for p in targets]
                done = measure.run_editor(tree.assets, edits, "rename", 0)
                last = sub.wait_for(set(targets), start, timeout=300)
                first, written = done[0][1], done[-1][1]
                end = last if last is not None else time.monotonic_ns()
                runs.append({
                    "write_s": (written - first) / 1e9,
                    "total_s": (end - first) / 1e9,
                    "drain_s": (end - written) / 1e9,
                    "publishes": len(sub.since(start)),
                    "stale": _stale(ctx.client, tree, targets),
                })  # fmt: skip
                time.sleep(0.5)
    total = median([r["total_s"] for r in runs])
    summary = {
        "files": len(targets),
        "write_s": median([r["write_s"] for r in runs]),
        "total_s": total,
        "drain_s": median([r["drain_s"] for r in runs]),
        "burst_per_s": rate(len(targets), total),
        "publishes": median([r["publishes"] for r in runs]),
        "stale": max(r["stale"] for r in runs),
    }
    return {"summary": summary, "runs": runs}


def _stale(client: redis.Redis, tree: Corpus, paths: Sequence[str]) -> int:
    """Paths whose manifest hash is not the sha256 of the file on disk."""
    pipe = client.pipeline(transaction=False)
    for p in paths:
        pipe.hget(measure.KEYS.manifest(p), "hash")
    stored = pipe.execute()
    return sum(
        1
        for p, h in zip(paths, stored, strict=True)
        if h is None or h.decode() != hashlib.sha256((tree.assets / p).read_bytes()).hexdigest()
    )


def _memory_totals(procs: list[measure.ProcMemory], tag: str) -> dict[str, float]:
    out = {
        f"{tag}_total_rss_mb": sum(m.rss_kb for m in procs) / 1024,
        f"{tag}_total_hwm_mb": sum(m.hwm_kb for m in procs) / 1024,
    }
    if procs and all(m.pss_kb is not None for m in procs):
        out[f"{tag}_total_pss_mb"] = sum(m.pss_kb or 0 for m in procs) / 1024
    return out


def _peaks(procs: list[measure.ProcMemory], root_pid: int) -> dict[str, float]:
    """VmHWM by role (the largest of the workers): each process's lifetime peak."""
    out: dict[str, float] = {}
    for m in procs:
        role = "supervisor" if m.pid == root_pid else m.name.removeprefix("assetmgr-")
        out[f"peak_{role}_mb"] = max(out.get(f"peak_{role}_mb", 0.0), m.hwm_kb / 1024)
    return out


def _edit_sampling(tree: Corpus, edits: list[tuple[str, int]], per_s: float, pid: int) -> float:
    """Run the edits in a writer process; meanwhile sample the daemon's total RSS (MB, max)."""
    editor = threading.Thread(target=measure.run_editor, args=(tree.assets, edits, "rename", per_s))
    editor.start()
    peak = 0.0
    while editor.is_alive():
        peak = max(peak, sum(m.rss_kb for m in measure.tree_memory(pid)) / 1024)
        time.sleep(0.5)
    editor.join()
    return peak


def _memory_run(ctx: Context, tree: Corpus, edits: list[tuple[str, int]]) -> dict[str, Any]:
    ctx.flush()
    with ctx.daemon(tree, "memory") as daemon:
        ready_s = daemon.wait_ready()
        time.sleep(1)
        pid = daemon.proc.pid
        hydrated = measure.tree_memory(pid)
        with measure.Subscriber(ctx.url) as sub:
            start = time.monotonic_ns()
            peak = _edit_sampling(tree, edits, ctx.profile.memory_rate, pid)
            sub.wait_for({e[0] for e in edits}, start, timeout=60)
        time.sleep(1)
        after = measure.tree_memory(pid)
        info = ctx.client.info("memory")
    values: dict[str, float] = {"daemon_ready_s": ready_s, "processes": len(after)}
    values.update(_memory_totals(hydrated, "hydrated"))
    values.update(_memory_totals(after, "edited"))
    values["during_edits_max_total_rss_mb"] = peak
    values["growth_rss_mb"] = values["edited_total_rss_mb"] - values["hydrated_total_rss_mb"]
    values.update(_peaks(after, pid))
    values["valkey_used_mb"] = int(info["used_memory"]) / 1e6
    processes = {"hydrated": [vars(m) for m in hydrated], "edited": [vars(m) for m in after]}
    return {"values": values, "processes": processes}


def memory(ctx: Context) -> dict[str, Any]:
    """RSS of the daemon's whole process tree after hydrating, and after a stretch of edits."""
    p = ctx.profile
    tree = ctx.corpus(p.memory, 0)
    count = max(1, int(p.memory_rate * p.memory_seconds))
    step = max(1, len(tree.small) // count)
    paths = [tree.small[(i * step) % len(tree.small)] for i in range(count)]
    runs = []
    with pristine(tree, sorted(set(paths))):
        for r in range(ctx.repeat):
            runs.append(_memory_run(ctx, tree, [(path, 20_000 + r) for path in paths]))
    keys = list(dict.fromkeys(k for run in runs for k in run["values"]))
    summary = {"assets": len(tree.paths), "edits": count}
    summary.update(
        {k: median([run["values"][k] for run in runs if k in run["values"]]) for k in keys}
    )
    return {"summary": summary, "processes": runs[-1]["processes"]}


def scaling(ctx: Context) -> dict[str, Any]:
    """Cold hydrate with 1, 2, 4 workers on the cold corpus, and at several corpus sizes."""
    p = ctx.profile
    summary: dict[str, float] = {}
    runs: dict[str, list[float]] = {}

    def measure_cold(key: str, tree: Corpus, *extra: str) -> None:
        for _ in range(ctx.repeat):
            ctx.flush()
            runs.setdefault(key, []).append(ctx.hydrate(tree, *extra))
        seconds = median(runs[key])
        summary[f"{key}_s"] = seconds
        summary[f"{key}_per_s"] = rate(len(tree.paths), seconds)

    tree = ctx.corpus(*p.cold)
    for workers in p.workers:
        measure_cold(f"workers_{workers}", tree, "--workers", str(workers))
    for size in p.sizes:
        measure_cold(f"size_{size}", ctx.corpus(size, size // 1000))
    return {"summary": summary, "runs_s": runs, "cold_assets": len(tree.paths)}


SECTIONS = {
    "cold": cold,
    "rehydrate": rehydrate,
    "latency": latency,
    "burst": burst,
    "memory": memory,
    "scaling": scaling,
}
