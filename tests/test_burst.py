"""A huge burst of events (100,000) neither exhausts memory nor loses the final content."""

import json
import os
from pathlib import Path

from conftest import converge, disk_assets


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _total_rss(daemon) -> float:
    pids = [daemon.proc.pid, *(p for ps in daemon.children().values() for p in ps)]
    return sum(_rss_mb(p) for p in pids if Path(f"/proc/{p}").exists())


def test_hundred_thousand_events_converge_in_bounded_memory(valkey, root, start_daemon):
    burst = root / "burst"
    burst.mkdir()
    paths = []
    for i in range(1000):
        path = burst / f"a{i:04}.json"
        path.write_text(json.dumps({"n": i, "round": 0}))
        paths.append(path)
    daemon = start_daemon(root)
    converge(valkey.client(), lambda: disk_assets(root))
    before = _total_rss(daemon)

    # 100 rounds over 1,000 files: 100,000 IN_ATTRIB events (far past the kernel's queue, so
    # overflows too), and the content of every tenth file changed in the last round.
    for round_ in range(1, 101):
        for path in paths:
            os.utime(path, ns=(round_ * 10**9, round_ * 10**9))
    for path in paths[::10]:
        path.write_text(json.dumps({"n": path.name, "round": 100}))

    converge(valkey.client(), lambda: disk_assets(root), timeout=60)
    after = _total_rss(daemon)
    metrics = daemon.get("/metrics")[1].decode()
    events = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("assetmgr_events_total{")
    )
    assert events >= 16384 or 'reason="overflow"} 1' in metrics, events
    # Per-path state is bounded by the number of paths, not of events: allow the allocator
    # some slack (20% + 10 MB over ~6 Python processes), never growth with the events.
    assert after <= before * 1.2 + 10, (before, after)
