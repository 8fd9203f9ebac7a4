"""The benchmark suite and the profiling tool run end to end on a tiny corpus (so they cannot
rot). No timing is checked; what the corpus and the runs say about the assets is."""

import json
import math
import subprocess
import sys

import pytest

from conftest import REPO

SECTIONS = {"cold", "rehydrate", "latency", "burst", "memory", "scaling", "cluster", "engines"}


def run_perf(script, *args):
    done = subprocess.run(
        [sys.executable, str(REPO / "perf" / script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=580,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


@pytest.mark.timeout(600)
def test_bench_smoke_writes_every_section(tmp_path):
    run_perf("bench.py", "--smoke", "--out", tmp_path)
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["machine"]["cores"] >= 1
    assert set(report["sections"]) == SECTIONS
    for name, section in report["sections"].items():
        summary = section["summary"]
        assert summary, name
        assert math.isfinite(section["loadavg_1m_at_start"]), name
        for key, value in summary.items():
            is_number = isinstance(value, int | float) and not isinstance(value, bool)
            assert is_number and math.isfinite(value), f"{name}.{key} = {value!r}"
        for key, figure in section["figures"].items():
            assert figure["min"] <= figure["median"] <= figure["max"], f"{name}.{key}"
    cold, rehydrate = report["sections"]["cold"]["summary"], report["sections"]["rehydrate"]
    # The corpus' invalid files are exactly those assetmgr rejects; a re-run finds the rest
    # unchanged and (MONITOR) writes and publishes nothing.
    assert cold["invalid_expected"] > 0
    assert cold["hydrate_rejected"] == cold["invalid_expected"]
    assert cold["hydrate_added"] == cold["assets"] - cold["invalid_expected"]
    assert rehydrate["summary"]["unchanged"] == rehydrate["summary"]["valid_expected"]
    assert rehydrate["summary"]["asset_writes"] == 0
    assert report["sections"]["scaling"]["summary"]["workers_2_peak_rss_mb"] > 0
    cluster = report["sections"]["cluster"]["summary"]  # the same tree, sharded: same verdicts
    assert cluster["cluster_added"] == cluster["standalone_added"] == cold["hydrate_added"]
    engines = report["sections"]["engines"]["summary"]  # either engine: the same verdicts
    assert engines["rs_rejected"] == engines["fast_rejected"] == cold["invalid_expected"]
    assert engines["rs_added"] == engines["fast_added"] == cold["hydrate_added"]


@pytest.mark.timeout(300)
def test_profiling_smoke_reports_every_part(tmp_path):
    run_perf("profiling.py", "--smoke", "--out", tmp_path)
    report = json.loads((tmp_path / "profile.json").read_text())
    assert report["startup"]["imports"]["total_s"] > 0
    stages = report["rehydrate"]["stages"]
    assert {"walk", "lookup_stored_hashes", "worker_inspect_total", "writer_prune_scan"} <= set(
        stages
    )
    assert report["rehydrate"]["known"] == report["rehydrate"]["files"] - 6  # 2% of 300 invalid
    assert {"main", "worker", "writer"} <= set(report["command"]["roles"])
    (large,) = report["evaluate"]["assets"].values()
    assert large["bytes"] > 500_000
    assert large["ms"]["schema_check"]["min_ms"] > 0
