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

from assetmgr.keyspace import Keyspace

KEYS = Keyspace()
# Commands that change a key or announce a change; the `_RO` script variants cannot write.
WRITE_VERBS = frozenset({
    "SET", "SETEX", "PSETEX", "SETNX", "GETSET", "GETDEL", "MSET", "HSET", "HMSET", "HSETNX",
    "HDEL", "DEL", "UNLINK", "EXPIRE", "PEXPIRE", "RENAME", "COPY", "EVAL", "EVALSHA", "FCALL",
    "PUBLISH",
})  # fmt: skip


def clean_env() -> dict[str, str]:
    """The environment without ASSETMGR_* settings, so only the command line configures a run."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ASSETMGR_")}


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


def run_cli(*args: str, timeout: float = 1800) -> float:
    """Run `python -m assetmgr ARGS` to completion; return its wall time in seconds."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "assetmgr", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"assetmgr {args[0]} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return seconds


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Daemon:
    """`python -m assetmgr daemon` in a subprocess, its log in a file; a context manager."""

    def __init__(self, root: Path, schemas: Path, url: str, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "assetmgr", "daemon", "--root", str(root),
             "--schemas", str(schemas), "--valkey-url", url,
             "--metrics-addr", f"127.0.0.1:{self.port}"],
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


def bump(data: bytes, version: int) -> bytes:
    """The asset with a new `version`: still valid, different bytes, so the daemon publishes."""
    return re.sub(rb'"version": \d+', b'"version": %d' % version, data, count=1)


def save(root: Path, rel: str, data: bytes, mode: str) -> int:
    """Write as an editor would: `rename` (hidden temp file, then rename) or `inplace`.

    Returns `monotonic_ns()` taken just before the call that completes the new content (the
    rename, or the close). Taken after it instead, a writer descheduled right after the call
    (the woken daemon may run first on a busy host) measures messages arriving "before" the
    edit; taken before, that delay is counted in the latency, which is the safe side.
    """
    path = root / rel
    if mode == "rename":
        temp = path.with_name(f".{path.name}.bench-tmp")
        temp.write_bytes(data)
        completed = time.monotonic_ns()
        os.rename(temp, path)
        return completed
    f = open(path, "wb")  # noqa: SIM115 - the close is what is timed
    try:
        f.write(data)
        completed = time.monotonic_ns()
    finally:
        f.close()
    return completed


def edit_loop(
    root: str, edits: list[tuple[str, int]], mode: str, rate: float, conn: object
) -> None:
    """A separate writer process: save `(path, version)` edits at `rate` per second (0 = as fast
    as possible) and send back `(path, monotonic_ns when the new content was completed)`."""
    base = Path(root)
    payloads = [(rel, bump((base / rel).read_bytes(), v)) for rel, v in edits]
    done: list[tuple[str, int]] = []
    start = time.monotonic()
    for i, (rel, data) in enumerate(payloads):
        if rate > 0:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        done.append((rel, save(base, rel, data, mode)))
    conn.send(done)  # type: ignore[attr-defined]
    conn.close()  # type: ignore[attr-defined]


def run_editor(
    root: Path, edits: list[tuple[str, int]], mode: str, rate: float
) -> list[tuple[str, int]]:
    """Run `edit_loop` in its own (spawned) process and return its timestamps."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=edit_loop, args=(str(root), edits, mode, rate, sender))
    proc.start()
    sender.close()
    try:
        done: list[tuple[str, int]] = receiver.recv()
    finally:
        proc.join(30)
    return done


def latencies_ms(
    edits: list[tuple[str, int]], messages: list[tuple[str, int]]
) -> tuple[list[float], int]:
    """Pair each edit with the first message for its path received after it, each message used
    once; (latencies in ms, edits no message answered)."""
    by_path: dict[str, list[int]] = {}
    for path, t in sorted(messages, key=lambda m: m[1]):
        by_path.setdefault(path, []).append(t)
    out, missing = [], 0
    for path, closed in sorted(edits, key=lambda e: e[1]):
        queue = by_path.get(path, [])
        while queue and queue[0] < closed:
            queue.pop(0)  # an answer to an earlier edit of this path
        if queue:
            out.append((queue.pop(0) - closed) / 1e6)
        else:
            missing += 1
    return out, missing
