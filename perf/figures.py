"""Stable figures (issue 11): every figure is min / median / max of `repeat` runs; a set of runs
whose spread (max - min) / median exceeds SPREAD_LIMIT is run once more, and both sets are kept.

A section measures one iteration with a function returning {figure name: value}; `repeated`
calls it `repeat` times (interleaving whatever that iteration interleaves, e.g. assetmgr and
its baselines), and again `repeat` times when any figure of the first set is too spread.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

SPREAD_LIMIT = 0.20


def spread(values: Sequence[float]) -> float:
    """(max - min) / median; 0 for a single run, NaN when the median is 0 or undefined."""
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2:
        return 0.0
    middle = statistics.median(finite)
    return (max(finite) - min(finite)) / abs(middle) if middle else float("nan")


def stats(values: Sequence[float]) -> dict[str, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"min": float("nan"), "median": float("nan"), "max": float("nan"), "spread": 0.0}
    return {"min": min(finite), "median": statistics.median(finite), "max": max(finite),
            "spread": spread(finite)}  # fmt: skip


@dataclass
class Figure:
    runs: list[float]
    rerun: list[float] = field(default_factory=list)

    @property
    def too_spread(self) -> bool:
        s = spread(self.runs)
        return math.isnan(s) or s > SPREAD_LIMIT

    @property
    def still_spread(self) -> bool:
        """Too spread in the first set and again in the re-run: to be explained, not trusted."""
        s = spread(self.rerun)
        return bool(self.rerun) and self.too_spread and (math.isnan(s) or s > SPREAD_LIMIT)

    @property
    def value(self) -> float:
        """The headline: the median of every run, both sets."""
        return stats(self.runs + self.rerun)["median"]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"runs": self.runs, **stats(self.runs), "flagged": self.too_spread}
        if self.rerun:
            out["rerun"] = {"runs": self.rerun, **stats(self.rerun)}
            out["still_spread"] = self.still_spread
        return out


Figures = dict[str, Figure]


def repeated(repeat: int, once: Callable[[], dict[str, float]], label: str = "") -> Figures:
    """Run `once` `repeat` times; if any figure is too spread, `repeat` times more."""
    first = [once() for _ in range(repeat)]
    figures = {k: Figure([run[k] for run in first if k in run]) for k in first[0]}
    spread_out = [k for k, f in figures.items() if f.too_spread]
    if spread_out and repeat > 1:
        print(f"  spread > {SPREAD_LIMIT:.0%} in {label or 'this section'}: "
              f"{', '.join(spread_out)}; running {repeat} more (load "
              f"{os.getloadavg()[0]:.2f})", flush=True)  # fmt: skip
        for run in [once() for _ in range(repeat)]:
            for k, f in figures.items():
                if k in run:
                    f.rerun.append(run[k])
    return figures


def merge(into: Figures, more: Figures, prefix: str = "") -> Figures:
    into.update({prefix + k: v for k, v in more.items()})
    return into


def as_json(figures: Figures) -> dict[str, Any]:
    return {k: f.to_json() for k, f in figures.items()}


def headline(figures: Figures) -> dict[str, float]:
    return {k: f.value for k, f in figures.items()}


def flagged(figures: Figures) -> list[str]:
    return [k for k, f in figures.items() if f.too_spread]
