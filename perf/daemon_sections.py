"""The benchmark sections that run the daemon: latency, burst, memory (see sections.py for the
record every section returns)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import edits
import figures as fig
import measure
import redis
from harness import Context, Corpus, pristine
from sections import rate, result


class _Rotation:
    """Hands out paths from a pool in turn, so consecutive runs edit different assets."""

    def __init__(self, pool: Sequence[str]) -> None:
        self.pool, self.offset = list(pool), 0

    def take(self, count: int) -> list[str]:
        count = min(count, len(self.pool))  # distinct paths within a run
        out = [self.pool[(self.offset + i) % len(self.pool)] for i in range(count)]
        self.offset = (self.offset + count) % max(1, len(self.pool))
        return out


def latency(ctx: Context) -> dict[str, Any]:
    """Close (or rename) → PUBLISH seen by a subscriber, one asset saved at a time by a writer
    process: small (< 5 KB) and ~1 MB assets, rename and in place, at each rate."""
    load = os.getloadavg()[0]
    p = ctx.profile
    tree = ctx.corpus(p.daemon)
    pools = {"small": (_Rotation(tree.small), p.small_edits),
             "large": (_Rotation(tree.large), p.large_edits)}  # fmt: skip
    samples: dict[str, list[float]] = {}
    missing: dict[str, int] = {}
    version = [1_000]
    runs = 2 * ctx.repeat  # a re-run at most doubles them
    edited = p.small_edits * 2 * len(p.rates) * runs  # 2 modes
    touched = sorted(set(tree.small[:edited]) | set(tree.large))

    def once(sub: measure.Subscriber) -> dict[str, float]:
        out: dict[str, float] = {}
        for size, (rotation, count) in pools.items():
            for mode in ("rename", "inplace"):
                for per_s in p.rates:
                    key = f"{size}_{mode}_{per_s:g}"
                    paths = rotation.take(count)
                    got, lost = _edit_run(ctx, tree, sub, paths, mode, per_s, version)
                    samples.setdefault(key, []).extend(got)
                    missing[key] = missing.get(key, 0) + lost
                    for q in (50, 90, 99):
                        out[f"{key}_p{q}_ms"] = measure.percentile(got, q) if got else float("nan")
                    out[f"{key}_max_ms"] = max(got, default=float("nan"))
        return out

    ctx.flush()
    with pristine(tree, touched), ctx.daemon(tree, "latency") as daemon:
        ready_s = daemon.wait_ready()
        with measure.Subscriber(ctx.url) as sub:
            figures = fig.repeated(ctx.repeat, lambda: once(sub), "latency")
    extra = {"daemon_ready_s": ready_s, **{f"{k}_missing": v for k, v in missing.items()}}
    extra["large_asset_kb"] = sum(tree.meta.sizes[x] for x in tree.large) / len(tree.large) / 1e3
    return result(load, figures, extra, runs={k: {"samples_ms": v} for k, v in samples.items()})


def _edit_run(
    ctx: Context, tree: Corpus, sub: measure.Subscriber, paths: list[str], mode: str,
    per_s: float, version: list[int],
) -> tuple[list[float], int]:  # fmt: skip
    if not paths:
        return [], 0
    plan = [(path, version[0] + i) for i, path in enumerate(paths)]
    version[0] += len(plan)
    start = time.monotonic_ns()
    done = edits.run_editor(tree.assets, plan, mode, per_s)
    sub.wait_for(set(paths), start, timeout=30 + len(paths) / 10)
    got, lost = edits.latencies_ms(done, sub.since(start))
    time.sleep(0.3)
    return got, lost


def burst(ctx: Context) -> dict[str, Any]:
    """Many files rewritten at once (temp + rename) under a running daemon: time until all are
    published, then a check that every manifest holds the new content's hash."""
    load = os.getloadavg()[0]
    tree = ctx.corpus(ctx.profile.daemon)
    targets = tree.small[: ctx.profile.burst]
    seen = {"publishes": 0, "stale": 0}
    counter = [0]

    def once(sub: measure.Subscriber) -> dict[str, float]:
        counter[0] += 1
        start = time.monotonic_ns()
        plan = [(x, 10_000 + counter[0]) for x in targets]
        done = edits.run_editor(tree.assets, plan, "rename", 0)
        last = sub.wait_for(set(targets), start, timeout=300)
        first, written = done[0][1], done[-1][1]
        end = last if last is not None else time.monotonic_ns()
        seen["publishes"] = max(seen["publishes"], len(sub.since(start)))
        seen["stale"] = max(seen["stale"], _stale(ctx.client, tree, targets))
        time.sleep(0.5)
        total = (end - first) / 1e9
        return {
            "write_s": (written - first) / 1e9,
            "total_s": total,
            "drain_s": (end - written) / 1e9,
            "burst_per_s": rate(len(targets), total),
        }

    ctx.flush()
    with pristine(tree, targets), ctx.daemon(tree, "burst") as daemon:
        daemon.wait_ready()
        with measure.Subscriber(ctx.url) as sub:
            figures = fig.repeated(ctx.repeat, lambda: once(sub), "burst")
    return result(load, figures, {"files": len(targets), **seen})


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


def _edit_sampling(tree: Corpus, plan: list[tuple[str, int]], per_s: float, pid: int) -> float:
    """Run the edits in a writer process; meanwhile sample the daemon's total RSS (MB, max)."""
    editor = threading.Thread(target=edits.run_editor, args=(tree.assets, plan, "rename", per_s))
    editor.start()
    peak = 0.0
    while editor.is_alive():
        peak = max(peak, sum(m.rss_kb for m in measure.tree_memory(pid)) / 1024)
        time.sleep(0.5)
    editor.join()
    return peak


def _memory_run(ctx: Context, tree: Corpus, plan: list[tuple[str, int]]) -> dict[str, float]:
    ctx.flush()
    with ctx.daemon(tree, "memory") as daemon:
        ready_s = daemon.wait_ready()
        time.sleep(1)
        pid = daemon.proc.pid
        hydrated = measure.tree_memory(pid)
        with measure.Subscriber(ctx.url) as sub:
            start = time.monotonic_ns()
            peak = _edit_sampling(tree, plan, ctx.profile.memory_rate, pid)
            sub.wait_for({e[0] for e in plan}, start, timeout=60)
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
    return values


def memory(ctx: Context) -> dict[str, Any]:
    """RSS of the daemon's whole process tree after hydrating, and after a stretch of edits."""
    load = os.getloadavg()[0]
    p = ctx.profile
    tree = ctx.tree(p.memory)
    count = max(1, int(p.memory_rate * p.memory_seconds))
    step = max(1, len(tree.small) // count)
    paths = [tree.small[(i * step) % len(tree.small)] for i in range(count)]
    counter = [0]

    def once() -> dict[str, float]:
        counter[0] += 1
        return _memory_run(ctx, tree, [(path, 20_000 + counter[0]) for path in paths])

    with pristine(tree, sorted(set(paths))):
        figures = fig.repeated(ctx.repeat, once, "memory")
    extra = {"assets": len(tree.paths), "corpus_mb": tree.bytes / 1e6, "edits": count}
    return result(load, figures, extra)
