"""Prometheus metrics of every process, aggregated by the supervisor (docs/operating.md).

The supervisor sets PROMETHEUS_MULTIPROC_DIR before it starts its children, so the reader, the
workers and the writer record into per-pid files that `MultiProcessCollector` sums: counters of
a dead worker stay in the total, and gauges are read from live processes only. The supervisor's
own metrics are plain values behind a collector of their own (`LocalMetric`), never files in that
directory. Labels are low-cardinality codes, never file paths.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as _mp
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from assetmgr import __version__
from assetmgr.messages import Accepted, Rejected, Result

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
BYTES = Counter(
    "assetmgr_bytes", "Asset bytes read from disk (read) and written to Valkey (blob)", ["kind"]
)
WORKER_RESTARTS = Counter("assetmgr_worker_restarts", "Worker processes restarted after dying")
DATA_LOSS = Counter("assetmgr_valkey_data_loss", "Times Valkey was found to have lost the keyspace")
UNACKED = Counter(
    "assetmgr_replica_ack_failures",
    "Committed batches fewer replicas than min_replicas_ack acknowledged in time (retried)",
)


class LocalMetric:
    """A gauge or counter of the supervisor alone, kept outside prometheus_client's value classes.

    Every process imports this module, and in a child (PROMETHEUS_MULTIPROC_DIR set) each
    prometheus_client metric constructed at import writes a per-pid file. A plain `Gauge` for
    `assetmgr_ready` was therefore scraped a second time from every child, as
    `assetmgr_ready{pid="…"} 0`, which an alert on `assetmgr_ready == 0` fires on forever.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        kind: str,
        labelnames: tuple[str, ...] = (),
        initial: Iterable[tuple[str, ...]] = (),
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.kind = kind  # "gauge" or "counter"
        self.labelnames = labelnames
        self._lock = threading.Lock()
        self._values: dict[tuple[str, ...], float] = {v: 0.0 for v in initial}
        if not labelnames:
            self._values[()] = 0.0

    def labels(self, *values: str) -> _LocalChild:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}")
        return _LocalChild(self, tuple(values))

    def set(self, value: float) -> None:
        self._update((), value, add=False)

    def inc(self, amount: float = 1.0) -> None:
        self._update((), amount, add=True)

    def _update(self, key: tuple[str, ...], value: float, add: bool) -> None:
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + value if add else value

    def value(self, *labels: str) -> float:
        with self._lock:
            return self._values.get(tuple(labels), 0.0)

    def collect(self) -> Metric:
        family_type = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        family = family_type(self.name, self.documentation, labels=list(self.labelnames))
        with self._lock:
            for key, value in sorted(self._values.items()):
                family.add_metric(list(key), value)
        return family


@dataclass
class _LocalChild:
    metric: LocalMetric
    key: tuple[str, ...]

    def set(self, value: float) -> None:
        self.metric._update(self.key, value, add=False)

    def inc(self, amount: float = 1.0) -> None:
        self.metric._update(self.key, amount, add=True)


class _LocalCollector:
    def __init__(self, *metrics: LocalMetric) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for metric in self.metrics:
            yield metric.collect()


READY = LocalMetric(
    "assetmgr_ready", "1 once hydrated with Valkey reachable (what /readyz says)", "gauge"
)
BUILD_INFO = LocalMetric(
    "assetmgr_build_info",
    "Version of the running daemon",
    "gauge",
    ("version",),
    initial=[(__version__,)],
)
CHILD_RESTARTS = LocalMetric(
    "assetmgr_child_restarts",
    "Reader/writer restarts by the supervisor",
    "counter",
    ("role",),
    initial=[("reader",), ("writer",)],
)
SUPERVISOR = CollectorRegistry(auto_describe=True)
SUPERVISOR.register(_LocalCollector(READY, BUILD_INFO, CHILD_RESTARTS))


def observe_results(results: Iterable[Result]) -> None:
    for result in results:
        if isinstance(result, Rejected):
            REJECTIONS.labels(result.code).inc()
        elif isinstance(result, Accepted):
            BYTES.labels("read").inc(result.size)


def observe_propagation(seq: int) -> float:
    """`seq` is the CLOCK_MONOTONIC nanosecond at which the path was marked dirty; returns
    the seconds observed."""
    seconds = max(0.0, (time.monotonic_ns() - seq) / 1e9)
    PROPAGATION.observe(seconds)
    return seconds


def render(multiprocess_dir: str | None, ready: bool | None = None) -> bytes:
    """The text exposition of every process: children's files plus the supervisor's own.

    `ready` is what /readyz answers now; `assetmgr_ready` reports the same.
    """
    BUILD_INFO.labels(__version__).set(1)
    if ready is not None:
        READY.set(1 if ready else 0)
    out = generate_latest(SUPERVISOR)
    if multiprocess_dir:
        out += generate_latest(_aggregate(multiprocess_dir))
    return out


def _aggregate(multiprocess_dir: str) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(_ChildFiles(multiprocess_dir))
    return registry


class _ChildFiles(_mp.MultiProcessCollector):
    """`MultiProcessCollector` that tolerates the children it reads from starting and dying.

    A child creates its file, then sizes it: read in between, the empty file made the whole
    scrape fail (struct.error) whenever a worker was (re)started. An empty file holds no
    sample, so it is skipped; a file removed by `mark_process_dead` while listing is a retry.
    """

    def __init__(self, path: str) -> None:
        super().__init__(None, path=path)
        self.directory = path

    def collect(self) -> Iterable[Metric]:
        for _ in range(3):
            try:
                return self.merge(self._files(), accumulate=True)
            except FileNotFoundError:
                continue
        return self.merge(self._files(), accumulate=True)

    def _files(self) -> list[str]:
        files = []
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            with contextlib.suppress(FileNotFoundError):
                if name.endswith(".db") and os.path.getsize(path) > 0:
                    files.append(path)
        return files


@dataclass(frozen=True)
class Live:
    """The children's gauges as the supervisor sees them: the only view it has of the reader's
    queues and of whether the writer reaches Valkey. None = not reported (yet)."""

    valkey_up: bool | None = None
    leader: bool | None = None
    queues: dict[str, int] = field(default_factory=dict)
    assets: dict[str, int] = field(default_factory=dict)


def live(multiprocess_dir: str | None) -> Live:
    if not multiprocess_dir:
        return Live()
    flags: dict[str, bool] = {}
    by_label: dict[str, dict[str, int]] = {"assetmgr_queue_depth": {}, "assetmgr_assets": {}}
    for family in _aggregate(multiprocess_dir).collect():
        for sample in family.samples:
            if sample.name in ("assetmgr_valkey_up", "assetmgr_leader"):
                flags[sample.name] = sample.value >= 1
            elif sample.name in by_label:
                label = next(iter(sample.labels.values()), "")
                by_label[sample.name][label] = int(sample.value)
    return Live(
        valkey_up=flags.get("assetmgr_valkey_up"),
        leader=flags.get("assetmgr_leader"),
        queues=by_label["assetmgr_queue_depth"],
        assets=by_label["assetmgr_assets"],
    )


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
    from assetmgr.messages import REASONS

    if role == "writer":
        for op in ("upsert", "delete"):
            WRITES.labels(op)
        for kind in ("blob",):
            BYTES.labels(kind)
        for state in ("valid", "invalid"):
            ASSETS.labels(state).set(0)
        QUEUE_DEPTH.labels("write").set(0)
        LEADER.set(0)  # until the writer takes the lease
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
