"""The benchmark suite runs end to end on a tiny corpus (so it cannot rot). No timing is checked."""

import json
import math
import subprocess
import sys

import pytest

from conftest import REPO

SECTIONS = {"cold", "rehydrate", "latency", "burst", "memory", "scaling"}


@pytest.mark.timeout(600)
def test_bench_smoke_writes_every_section(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "perf" / "bench.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=580,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["machine"]["cores"] >= 1
    assert set(report["sections"]) == SECTIONS
    for name, section in report["sections"].items():
        summary = section["summary"]
        assert summary, name
        for key, value in summary.items():
            is_number = isinstance(value, int | float) and not isinstance(value, bool)
            assert is_number and math.isfinite(value), f"{name}.{key} = {value!r}"
