"""Prometheus metrics of every process, aggregated by the supervisor (DESIGN §6).

The supervisor sets PROMETHEUS_MULTIPROC_DIR before it starts its children, so the reader, the
workers and the writer record into per-pid files that `MultiProcessCollector` sums: counters of
a dead worker stay in the total, and gauges are read from live processes only. The supervisor's
own gauges live in a separate registry. Labels are low-cardinality codes, never file paths.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as _mp

from . import __version__
from .worker import Accepted, Rejected, Result

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

ASSETS = Gauge("assetmgr_assets", "Assets by state", ["state"], multiprocess_mode="livemax")
EVENTS = Counter("assetmgr_events", "inotify events read, by kind", ["kind"])
WRITES = Counter("assetmgr_writes", "Committed asset writes, by operation", ["op"])
REJECTIONS = Counter("assetmgr_rejections", "Rejected asset reads, by reason", ["reason"])
PROPAGATION = Histogram(
    "assetmgr_propagation_seconds",
    "From the file event (or scan) that marked a path dirty to its commit in Valkey",
    buckets=LATENCY_BUCKETS,
)
WRITE_BATCH = Histogram(
    "assetmgr_write_batch_seconds",
    "Duration of one Valkey write round trip",
    buckets=LATENCY_BUCKETS,
)
QUEUE_DEPTH = Gauge(
    "assetmgr_queue_depth",
    "Items waiting, by pipeline stage",
    ["stage"],
    multiprocess_mode="livemax",
)
RESCANS = Counter("assetmgr_rescans", "Full or subtree rescans, by cause", ["reason"])
VALKEY_UP = Gauge(
    "assetmgr_valkey_up", "1 when the writer reaches Valkey", multiprocess_mode="livemax"
)
LEADER = Gauge(
    "assetmgr_leader", "1 when this daemon holds the writer lease", multiprocess_mode="livemax"
)
LAST_SYNC = Gauge(
    "assetmgr_last_sync_timestamp_seconds",
    "Unix time of the last completed full sync",
    multiprocess_mode="max",
)
BYTES = Counter("assetmgr_bytes", "Bytes written to Valkey, by kind", ["kind"])
WORKER_RESTARTS = Counter("assetmgr_worker_restarts", "Worker processes restarted after dying")
DATA_LOSS = Counter("assetmgr_valkey_data_loss", "Times Valkey was found to have lost the keyspace")

# The supervisor's own metrics: it is not in multiprocess mode itself.
SUPERVISOR = CollectorRegistry(auto_describe=True)
READY = Gauge("assetmgr_ready", "1 once hydrated with Valkey reachable", registry=SUPERVISOR)
BUILD_INFO = Gauge(
    "assetmgr_build_info", "Version of the running daemon", ["version"], registry=SUPERVISOR
)
CHILD_RESTARTS = Counter(
    "assetmgr_child_restarts",
    "Reader/writer restarts by the supervisor",
    ["role"],
    registry=SUPERVISOR,
)


def observe_results(results: Iterable[Result]) -> None:
    for result in results:
        if isinstance(result, Rejected):
            REJECTIONS.labels(result.code).inc()
        elif isinstance(result, Accepted):
            BYTES.labels("read").inc(result.size)


def observe_propagation(seq: int) -> None:
    """`seq` is the CLOCK_MONOTONIC nanosecond at which the path was marked dirty."""
    PROPAGATION.observe(max(0.0, (time.monotonic_ns() - seq) / 1e9))


def render(multiprocess_dir: str | None) -> bytes:
    """The text exposition of every process: children's files plus the supervisor's own."""
    BUILD_INFO.labels(__version__).set(1)
    out = generate_latest(SUPERVISOR)
    if multiprocess_dir:
        registry = CollectorRegistry()
        _mp.MultiProcessCollector(registry, path=multiprocess_dir)
        out += generate_latest(registry)
    return out


def process_died(pid: int | None) -> None:
    """Drop a dead child's live gauges; its counters stay in the sum."""
    if pid and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _mp.mark_process_dead(pid)


EVENT_KINDS = (
    "close_write",
    "moved_to",
    "moved_from",
    "create",
    "delete",
    "modify",
    "attrib",
    "overflow",
)
RESCAN_REASONS = (
    "start",
    "overflow",
    "reconcile",
    "watch_limit",
    "root_lost",
    "root_back",
    "requested",
)


def prime(role: str) -> None:
    """Create every label value a role records, so each family is scraped (as 0) from the start."""
    from .worker import REASONS

    if role == "writer":
        for op in ("upsert", "delete"):
            WRITES.labels(op)
        for kind in ("blob",):
            BYTES.labels(kind)
        for state in ("valid", "invalid"):
            ASSETS.labels(state).set(0)
        QUEUE_DEPTH.labels("write").set(0)
        LEADER.set(1)
    elif role == "reader":
        for kind in EVENT_KINDS:
            EVENTS.labels(kind)
        for reason in RESCAN_REASONS:
            RESCANS.labels(reason)
        for reason in REASONS:
            REJECTIONS.labels(reason)
        BYTES.labels("read")
        for stage in ("validate", "settle"):
            QUEUE_DEPTH.labels(stage).set(0)
