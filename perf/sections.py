"""The one-shot benchmark sections: cold, rehydrate, scaling. Each returns
{"summary": {name: number}, "figures": {name: min/median/max of the runs}, ...details}.

Summary names carry their unit as a suffix (`_s`, `_ms`, `_mb`, `_per_s`, `ratio_`), so the
table printer and a reader of bench.json need no separate legend. A figure's summary value is
the median of all its runs (see figures.py); `hydrate` is always the whole command.
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import baselines
import figures as fig
import measure
from harness import Context, Corpus

from assetmgr.pipeline import engines


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


def result(load: float, figures: fig.Figures, extra: dict[str, float], **details: Any) -> dict:
    """A section's record: the summary (headline figures + counts), every run, the flags."""
    summary = {**fig.headline(figures), **extra}
    return {
        "summary": summary,
        "figures": fig.as_json(figures),
        "loadavg_1m_at_start": load,
        "flagged": fig.flagged(figures),
        "still_spread": [k for k, f in figures.items() if f.still_spread],
        **details,
    }


def cold(ctx: Context) -> dict[str, Any]:
    """Cold `hydrate` (FLUSHALL first) vs the naive loader and the ideal, runs interleaved."""
    load = os.getloadavg()[0]
    tree = ctx.tree(ctx.profile.cold)
    n, seen = len(tree.paths), {}

    def once() -> dict[str, float]:
        ctx.flush()
        run = ctx.hydrate(tree)
        ctx.flush()
        naive_s, seen["naive_rejected"] = baselines.naive_load(
            tree.assets, tree.schemas, tree.paths, ctx.url
        )
        cpu_s, records = baselines.lean_chain(tree.assets, tree.schemas, tree.paths)
        seen["lean_rejected"] = n - len(records)
        ctx.flush()
        write_s = baselines.pipelined_write(records, ctx.url)
        seen["hydrate_rejected"] = run.counts.get("invalid", -1)
        seen["hydrate_added"] = run.counts.get("added", -1)
        ideal = baselines.ideal_per_s(n, cpu_s, write_s)
        return {
            "hydrate_s": run.seconds,
            "hydrate_scan_s": run.scan_s,
            "hydrate_per_s": rate(n, run.seconds),
            "naive_per_s": rate(n, naive_s),
            "lean_one_core_per_s": rate(n, cpu_s),
            "pipelined_write_per_s": rate(n, write_s),
            "ideal_per_s": ideal,
            "ratio_vs_naive": naive_s / run.seconds,
            "ratio_vs_ideal": rate(n, run.seconds) / ideal,
        }

    figures = fig.repeated(ctx.repeat, once, "cold")
    hydrate_s = figures["hydrate_s"].value
    extra = {"assets": n, "corpus_mb": tree.bytes / 1e6, "invalid_expected": tree.invalid,
             "hydrate_mb_per_s": tree.bytes / 1e6 / hydrate_s, **seen}  # fmt: skip
    return result(load, figures, extra, corpus=_distribution(tree))


def _distribution(tree: Corpus) -> dict[str, Any]:
    import corpus

    return corpus.distribution(list(tree.meta.sizes.values()))


def rehydrate(ctx: Context) -> dict[str, Any]:
    """`hydrate` again on the unchanged tree: its speed vs a cold run, and (in one more run,
    watched from a MONITOR connection) the asset writes and publishes it sends: none."""
    load = os.getloadavg()[0]
    tree = ctx.tree(ctx.profile.cold)
    n, seen = len(tree.paths), {}

    def once() -> dict[str, float]:
        ctx.flush()
        cold_run = ctx.hydrate(tree)
        again = ctx.hydrate(tree)
        seen["unchanged"] = again.counts.get("unchanged", -1)
        seen["rejected"] = again.counts.get("invalid", -1)
        return {
            "cold_s": cold_run.seconds,
            "rehydrate_s": again.seconds,
            "rehydrate_scan_s": again.scan_s,  # the rest: start-up, compile, fork, commit, exit
            "rehydrate_outside_scan_s": again.seconds - again.scan_s,
            "rehydrate_per_s": rate(n, again.seconds),
            "ratio_vs_cold": cold_run.seconds / again.seconds,
        }

    figures = fig.repeated(ctx.repeat, once, "rehydrate")
    with measure.Monitor(ctx.url) as monitor:
        monitored = ctx.hydrate(tree)
    extra = {
        "assets": n,
        "valid_expected": n - tree.invalid,
        **seen,
        "asset_writes": sum(monitor.writes.values()),
        "monitored_commands": monitor.seen,
        "monitored_run_s": monitored.seconds,
    }
    return result(load, figures, extra, writes_by_verb=monitor.writes)


def scaling(ctx: Context) -> dict[str, Any]:
    """Cold `hydrate` with 1, 2, 4 workers, and at several tree sizes: assets/s and the peak
    RSS of the command's whole process tree (polled from /proc while it runs)."""
    p = ctx.profile
    load = os.getloadavg()[0]
    figures: fig.Figures = {}
    roles: dict[str, dict[str, float]] = {}

    def cold_of(tree: Corpus, key: str, *extra: str) -> Callable[[], dict[str, float]]:
        def once() -> dict[str, float]:
            ctx.flush()
            run = ctx.hydrate(tree, *extra, sample_rss=True)
            roles[key] = run.peak_by_process_mb
            return {f"{key}_s": run.seconds, f"{key}_per_s": rate(len(tree.paths), run.seconds),
                    f"{key}_peak_rss_mb": run.peak_rss_mb}  # fmt: skip

        return once

    tree = ctx.tree(p.cold)
    for workers in p.workers:
        key = f"workers_{workers}"
        once = cold_of(tree, key, "--workers", str(workers))
        fig.merge(figures, fig.repeated(ctx.repeat, once, key))
    for size in p.sizes:
        key = f"size_{size}"
        fig.merge(figures, fig.repeated(ctx.repeat, cold_of(ctx.tree(size), key), key))
    extra: dict[str, float] = {"cold_assets": len(tree.paths)}
    rss = [(size, figures[f"size_{size}_peak_rss_mb"].value) for size in p.sizes]
    steps = []
    for (a, ra), (b, rb) in itertools.pairwise(rss):
        steps.append((rb - ra) / (b - a) * 1000)
        extra[f"rss_mb_per_1k_assets_{a}_to_{b}"] = steps[-1]
    if len(steps) >= 2 and steps[0] > 0:  # > 1: RSS grows faster than linearly with the tree
        extra["ratio_rss_growth_late_vs_early"] = steps[-1] / steps[0]
    return result(load, figures, extra, cold_assets=len(tree.paths), peak_by_role_mb=roles)


def cluster(ctx: Context) -> dict[str, Any]:
    """Cold `hydrate` of the same tree on a 3-primary Valkey Cluster (default key layout: blob
    and manifest in different slots, one pipeline per primary) and on the standalone server,
    runs interleaved; the cluster's nodes are the tests' own (tests/topology_cluster.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from topology import kill_all
    from topology_cluster import start_cluster

    load = os.getloadavg()[0]
    tree = ctx.tree(ctx.profile.cold)
    n, seen = len(tree.paths), {}
    with tempfile.TemporaryDirectory(prefix="assetmgr-bench-cluster-") as scratch:
        valkey_cluster = start_cluster(Path(scratch), primaries=3)
        try:
            url = f"{valkey_cluster.seed_url}?cluster=true"

            def once() -> dict[str, float]:
                ctx.flush()
                single = ctx.hydrate(tree)
                ctx.flush()
                valkey_cluster.flushall()
                sharded = ctx.hydrate(tree, url=url)
                seen["cluster_added"] = sharded.counts.get("added", -1)
                seen["standalone_added"] = single.counts.get("added", -1)
                return {
                    "standalone_s": single.seconds,
                    "cluster_s": sharded.seconds,
                    "standalone_per_s": rate(n, single.seconds),
                    "cluster_per_s": rate(n, sharded.seconds),
                    "ratio_cluster_vs_standalone": single.seconds / sharded.seconds,
                }

            figures = fig.repeated(ctx.repeat, once, "cluster")
            seen["cluster_keys"] = sum(int(p.admin.dbsize()) for p in valkey_cluster.primaries())
        finally:
            kill_all(valkey_cluster.nodes)
    return result(load, figures, {"assets": n, "primaries": 3, **seen})


def both_engines(ctx: Context) -> dict[str, Any]:
    """Cold `hydrate` of the same tree under each schema engine, runs interleaved: the
    jsonschema-rs run must be no slower (ratio_rs_vs_fast ≥ 1 means it is as fast or faster)
    and reject exactly the same files."""
    load = os.getloadavg()[0]
    tree = ctx.tree(ctx.profile.cold)
    n, seen = len(tree.paths), {}

    def once() -> dict[str, float]:
        out: dict[str, float] = {}
        for engine, key in ((engines.FAST, "fast"), (engines.RUST, "rs")):
            ctx.flush()
            run = ctx.hydrate(tree, "--schema-engine", engine)
            seen[f"{key}_rejected"] = run.counts.get("invalid", -1)
            seen[f"{key}_added"] = run.counts.get("added", -1)
            out[f"{key}_s"], out[f"{key}_per_s"] = run.seconds, rate(n, run.seconds)
        out["ratio_rs_vs_fast"] = out["fast_s"] / out["rs_s"]
        return out

    figures = fig.repeated(ctx.repeat, once, "engines")
    extra = {"assets": n, "corpus_mb": tree.bytes / 1e6, "invalid_expected": tree.invalid, **seen}
    return result(load, figures, extra, corpus=_distribution(tree))
