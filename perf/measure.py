"""Measuring helpers for perf/bench.py: processes, RSS, pub/sub timestamps, MONITOR, edits.

Nothing here asserts anything about speed: helpers return numbers and the benchmark prints them.
Every timestamp is `time.monotonic_ns()`, which is one clock for every process on the host, so
an edit timed in one process and a message timed in another can be subtracted.
"""

from __future__ import annotations

import bisect
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from assetmgr.store.keyspace import Keyspace

KEYS = Keyspace()
# Commands that change a key or announce a change; the `_RO` script variants cannot write.
WRITE_VERBS = frozenset({
    "SET", "SETEX", "PSETEX", "SETNX", "GETSET", "GETDEL", "MSET", "HSET", "HMSET", "HSETNX",
    "HDEL", "DEL", "UNLINK", "EXPIRE", "PEXPIRE", "RENAME", "COPY", "EVAL", "EVALSHA", "FCALL",
    "PUBLISH",
})  # fmt: skip


def clean_env() -> dict[str, str]:
    """The environment without ASSETMGR_* settings, so only the command line configures a run,
    and without PYTHONDONTWRITEBYTECODE: an installed package has its bytecode cached, and a
    run that compiles every module again (about 35 ms) measures a cost no host pays."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ASSETMGR_") and k != "PYTHONDONTWRITEBYTECODE"
    }


def machine() -> dict[str, object]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count() or 1,
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_1m_at_start": os.getloadavg()[0],  # other work on the host skews every figure
    }


def median(values: Sequence[float]) -> float:
    """The median; an int when the runs gave ints (counts), NaN when there were no runs."""
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered) / 100))
    return ordered[rank - 1]


SCAN = re.compile(r" files in ([0-9.]+)s ")
COUNTS = re.compile(r"added=(\d+) updated=(\d+) unchanged=(\d+) deleted=(\d+) invalid=(\d+)")


@dataclass
class CliRun:
    """One `python -m assetmgr ...` run: wall time, exit code, the plan counts it logged and,
    when sampled, the peak of its whole process tree's RSS."""

    seconds: float
    returncode: int
    counts: dict[str, int]
    scan_s: float = float("nan")  # the walk + pool part, as the command logs it
    peak_rss_mb: float = float("nan")  # max over samples of the sum of VmRSS of the tree
    peak_processes: int = 0  # processes in the tree at that peak
    peak_by_process_mb: dict[str, float] = field(default_factory=dict)  # VmHWM by role


def run_cli(*args: str, timeout: float = 1800, sample_rss: bool = False) -> CliRun:
    """Run `python -m assetmgr ARGS` to completion (exit 0, or 1 = some assets invalid).

    The wall time covers the interpreter start, imports, forks, scan and commit. With
    `sample_rss`, a thread polls /proc every 20 ms for the RSS of the command's process tree
    (the main process, its workers and its writer); the command waits in `communicate`, so
    the polling does not delay when its end is seen.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "assetmgr", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
    )  # fmt: skip
    sampler = RssSampler(proc.pid) if sample_rss else None
    if sampler:
        sampler.start()
    try:
        _, stderr = proc.communicate(timeout=timeout)
    finally:
        seconds = time.perf_counter() - started
        if sampler:
            sampler.stop()
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"assetmgr {args[0]} exited {proc.returncode}:\n{stderr[-3000:]}")
    match = COUNTS.search(stderr)
    names = ("added", "updated", "unchanged", "deleted", "invalid")
    counts = dict(zip(names, map(int, match.groups()), strict=True)) if match else {}
    scanned = SCAN.search(stderr)
    run = CliRun(seconds, proc.returncode, counts, float(scanned.group(1)) if scanned else math.nan)
    if sampler:
        run.peak_rss_mb, run.peak_processes = sampler.peak_kb / 1024, sampler.peak_processes
        run.peak_by_process_mb = {k: v / 1024 for k, v in sampler.hwm_kb.items()}
    return run


class RssSampler:
    """Polls the RSS of a process tree from a thread: the peak of its sum, and each role's
    VmHWM (the largest worker stands for the workers)."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.peak_kb, self.peak_processes = 0, 0
        self.hwm_kb: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            procs = tree_memory(self.pid)
            total = sum(m.rss_kb for m in procs)
            if total > self.peak_kb:
                self.peak_kb, self.peak_processes = total, len(procs)
            for m in procs:
                role = "main" if m.pid == self.pid else m.name.removeprefix("assetmgr-")
                self.hwm_kb[role] = max(self.hwm_kb.get(role, 0), m.hwm_kb)
            self._stop.wait(self.interval)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Daemon:
    """`python -m assetmgr daemon` in a subprocess, its log in a file; a context manager."""

    def __init__(
        self, root: Path, schemas: Path, url: str, log_path: Path, extra: Sequence[str] = ()
    ) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "assetmgr", "daemon", "--root", str(root),
             "--schemas", str(schemas), "--valkey-url", url,
             "--metrics-addr", f"127.0.0.1:{self.port}", *extra],
            stdout=self._log, stderr=subprocess.STDOUT, env=clean_env(),
        )  # fmt: skip

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 600) -> float:
        """Seconds from start until GET /readyz answers 200 (the first hydration committed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}:\n{self.log_tail()}")
            if _http_status(f"http://127.0.0.1:{self.port}/readyz") == 200:
                return time.perf_counter() - self.started
            time.sleep(0.05)
        raise RuntimeError(f"daemon not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self, timeout: float = 60) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (children of every thread), parents first."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop(0)
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                text = Path(f"/proc/{current}/task/{task}/children").read_text()
            except OSError:
                continue
            queue.extend(int(child) for child in text.split() if int(child) not in found)
    return found


@dataclass
class ProcMemory:
    pid: int
    name: str  # the process name (comm), or what its command line says it is
    rss_kb: int
    hwm_kb: int
    pss_kb: int | None


def memory_of(pid: int) -> ProcMemory | None:
    """VmRSS and VmHWM from /proc/PID/status, Pss from smaps_rollup when the kernel has it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if b"resource_tracker" in cmdline:  # multiprocessing's helper of a spawn context
        name = "resource_tracker"
    fields = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
    pss = None
    try:
        match = re.search(r"^Pss:\s+(\d+) kB", Path(f"/proc/{pid}/smaps_rollup").read_text(), re.M)
        pss = int(match.group(1)) if match else None
    except OSError:
        pass
    return ProcMemory(pid, name, int(fields.get("VmRSS", 0)), int(fields.get("VmHWM", 0)), pss)


def tree_memory(pid: int) -> list[ProcMemory]:
    return [m for m in map(memory_of, descendants(pid)) if m is not None]


class Subscriber:
    """Timestamps every message on the asset channel, in a thread with its own connection."""

    def __init__(self, url: str) -> None:
        self.messages: list[tuple[str, int]] = []
        self._client = redis.Redis.from_url(url)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Subscriber:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("subscriber did not connect")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._client.close()

    def _run(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(KEYS.channel)
        while not pubsub.subscribed:
            pubsub.get_message(timeout=0.1)
        self._ready.set()
        while not self._stop.is_set():
            message = pubsub.get_message(timeout=0.05)
            if message and message["type"] == "message":
                self.messages.append((message["data"].decode(), time.monotonic_ns()))
        pubsub.close()

    def since(self, start: int) -> list[tuple[str, int]]:
        """Messages received at or after `start` (the list only grows, in time order)."""
        messages = self.messages
        return messages[bisect.bisect_left(messages, start, key=lambda m: m[1]) :]

    def wait_for(self, paths: set[str], start: int, timeout: float) -> int | None:
        """Wait until every path has a message after `start`; the last one's time, or None."""
        pending, last = set(paths), start
        index = bisect.bisect_left(self.messages, start, key=lambda m: m[1])
        deadline = time.monotonic() + timeout
        while pending:
            end = len(self.messages)
            for path, t in self.messages[index:end]:
                if path in pending:
                    pending.discard(path)
                    last = max(last, t)
            index = end
            if pending and time.monotonic() > deadline:
                return None
            time.sleep(0.01)
        return last


@dataclass
class Monitor:
    """Counts, from a MONITOR connection, the commands that wrote an asset key or published."""

    url: str
    writes: dict[str, int] = field(default_factory=dict)
    seen: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Monitor:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("MONITOR did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # the last lines of the command just finished
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        client = redis.Redis.from_url(self.url)
        names = (KEYS.blob(""), KEYS.manifest(""))
        with client.monitor() as monitor:
            self._ready.set()
            while not self._stop.is_set():
                if not monitor.connection.can_read(timeout=0.1):
                    continue
                line = monitor.next_command()["command"]
                self.seen += 1
                verb = line.split(" ", 1)[0].upper()
                if verb in WRITE_VERBS and (
                    any(n in line for n in names) or (verb == "PUBLISH" and KEYS.channel in line)
                ):
                    self.writes[verb] = self.writes.get(verb, 0) + 1
        client.close()
