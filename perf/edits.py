"""Editing assets as an editor would, from a separate process, and pairing each edit with the
PUBLISH that answered it. Timestamps are `time.monotonic_ns()`, one clock for the host."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path


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
