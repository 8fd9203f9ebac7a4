"""bench.json → Markdown tables (min / median / max of every figure, the load at each section's
start, the flags), for perf/README.md:

    .venv/bin/python perf/report.py perf/results/bench.json [--sections cold,rehydrate]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def cell(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and value > 99):
        return f"{int(value):,}"
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def section_table(name: str, record: dict[str, Any], only: str = "") -> str:
    """One row per figure: min / median / max over every run (both sets when re-run)."""
    lines = [
        f"**{name}** (1-min load average at start: {record['loadavg_1m_at_start']:.2f})",
        "",
        "| figure | min | median | max | runs | spread > 20% |",
        "|---|---|---|---|---|---|",
    ]
    for key, f in record["figures"].items():
        if only and only not in key:
            continue
        runs = [v for v in f["runs"] + f.get("rerun", {}).get("runs", []) if v is not None]
        flag = ""
        if f["flagged"]:
            flag = "both sets" if f.get("still_spread") else "first set (re-run within 20%)"
        median = record["summary"][key]
        lines.append(f"| {key} | {cell(min(runs))} | {cell(median)} | {cell(max(runs))} | "
                     f"{len(runs)} | {flag} |")  # fmt: skip
    counts = {k: v for k, v in record["summary"].items() if k not in record["figures"]}
    if counts and not only:
        lines += ["", ", ".join(f"{k} = {cell(v)}" for k, v in counts.items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench_json", type=Path)
    parser.add_argument("--sections", default="")
    parser.add_argument("--only", default="", help="figures whose name contains this")
    args = parser.parse_args()
    report = json.loads(args.bench_json.read_text())
    wanted = [s for s in args.sections.split(",") if s] or list(report["sections"])
    for name in wanted:
        print(section_table(name, report["sections"][name], args.only))


if __name__ == "__main__":
    main()
