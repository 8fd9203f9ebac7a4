"""PNG plots of a benchmark run: latency CDFs and throughput vs workers and corpus size.

matplotlib is optional (the `perf` extra): without it `draw` returns no file and says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw(sections: dict[str, Any], out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install -e '.[perf]')")
        return []
    written = []
    if "latency" in sections:
        written.append(_latency(plt, sections["latency"]["runs"], out / "latency_cdf.png"))
    if "scaling" in sections:
        written.append(_scaling(plt, sections["scaling"], out / "scaling.png"))
    return written


def _latency(plt: Any, runs: dict[str, dict[str, Any]], path: Path) -> Path:
    """One panel per asset size; one empirical CDF per (mode, rate)."""
    from matplotlib import ticker

    sizes = sorted({key.split("_", 1)[0] for key in runs}, key=["small", "large"].index)
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        for key, row in sorted(runs.items()):
            samples = sorted(row["samples_ms"])
            if not key.startswith(size + "_") or not samples:
                continue
            _, mode, per_s = key.split("_")
            fraction = [(i + 1) / len(samples) for i in range(len(samples))]
            ax.step(samples, fraction, where="post", label=f"{mode}, {per_s} edits/s")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("file close → PUBLISH received (ms)")
        ax.set_ylabel("fraction of edits")
        ax.set_title(f"{size} asset" + (" (~1 MB)" if size == "large" else " (0.5-5 KB)"))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _scaling(plt: Any, scaling: dict[str, Any], path: Path) -> Path:
    summary = scaling["summary"]
    workers = sorted(
        int(k.split("_")[1]) for k in summary if k.startswith("workers_") and k.endswith("_per_s")
    )
    sizes = sorted(
        int(k.split("_")[1]) for k in summary if k.startswith("size_") and k.endswith("_per_s")
    )
    fig, (left, right, rss) = plt.subplots(1, 3, figsize=(16, 4.5))
    left.plot(workers, [summary[f"workers_{w}_per_s"] for w in workers], marker="o")
    left.set_xticks(workers)
    left.set_xlabel("--workers")
    left.set_ylabel("assets/s (cold hydrate)")
    left.set_title(f"throughput vs workers ({scaling['cold_assets']:,} assets)")
    right.plot(sizes, [summary[f"size_{n}_s"] for n in sizes], marker="o", label="seconds")
    right.set_xlabel("assets in the tree")
    right.set_ylabel("cold hydrate (s)")
    right.set_title("cost vs corpus size")
    twin = right.twinx()
    twin.plot(sizes, [summary[f"size_{n}_per_s"] for n in sizes], marker="s", color="tab:orange")
    twin.set_ylabel("assets/s", color="tab:orange")
    peaks = [summary.get(f"size_{n}_peak_rss_mb", float("nan")) for n in sizes]
    rss.plot(sizes, peaks, marker="o", color="tab:green")
    rss.set_xlabel("assets in the tree")
    rss.set_ylabel("peak RSS of the hydrate command's processes (MB)")
    rss.set_title("memory vs corpus size")
    for ax in (left, right, rss):
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    twin.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
