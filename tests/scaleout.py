"""Helpers of the cluster and Sentinel scenarios (test_cluster.py, test_sentinel.py)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from conftest import BLOB, CHANNEL, MANIFEST, SCHEMAS, Daemon, run_cli, wait_for

COST = "weights/cost.json"
WRITE_VERBS = {"SET", "HSET", "DEL", "UNLINK", "HDEL", "EXPIRE", "RENAME", "RESTORE"}


def weights(name: str, value: float = 1.0) -> bytes:
    """A valid `weights/` asset."""
    doc = {"version": "1.0.0", "name": name, "unit": "score", "weights": {"pool-a": value}}
    return (json.dumps(doc, indent=2) + "\n").encode()


def bumped(data: bytes, to: str) -> bytes:
    """The asset with its version set to `to`: a valid edit."""
    version = f'"version": "{to}"'.encode()
    return re.sub(rb'"version": "[^"]*"', version, data, count=1)


def bump(file: Path, to: str) -> bytes:
    """Edit the file so (`bumped`); returns the new bytes."""
    data = bumped(file.read_bytes(), to)
    file.write_bytes(data)
    return data


def cli(
    command: str, url: str, root: Path | None, *extra: str, deadline: float = 60
) -> subprocess.CompletedProcess:
    """`assetmgr COMMAND` against `url`, with the tree when the command reads one; it must end
    within `deadline` seconds."""
    tree = ["--root", str(root), "--schemas", str(SCHEMAS)] if root is not None else []
    return run_cli(command, *tree, "--valkey-url", url, *extra, timeout=deadline)


def one_line_error(result: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """Assert the exit code and that stderr ends in one `assetmgr:` line (no traceback) that
    has every word; returns that line."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("assetmgr: "), result.stderr
    for word in words:
        assert word in last, (word, last)
    return last


def mutations(lines: list[str]) -> list[str]:
    """MONITOR lines that changed an asset key or published on the asset channel, scripts'
    inner commands included: what happened, whichever script asked (a refused script call
    itself changes nothing and is not listed)."""
    out = []
    for line in lines:
        verb, _, rest = line.partition(" ")
        verb = verb.upper()
        changed = verb in WRITE_VERBS and rest.startswith((BLOB, MANIFEST))
        if changed or (verb == "PUBLISH" and rest.startswith(CHANNEL + " ")):
            out.append(line)
    return out


def metric(daemon: Daemon, name: str, **labels: str) -> float:
    """The sum of a family's samples on /metrics that carry `labels` (0 when absent)."""
    total = 0.0
    for line in daemon.get("/metrics")[1].decode().splitlines():
        sample, _, value = line.rpartition(" ")
        family, _, tail = sample.partition("{")
        if family != name:
            continue
        if all(f'{k}="{v}"' in tail for k, v in labels.items()):
            total += float(value)
    return total


def idle(daemon: Daemon, polls: int = 4) -> None:
    """Wait until every queue of the daemon stayed empty for a few polls in a row."""
    quiet = [0]

    def empty() -> bool:
        status, body = daemon.get("/metrics")
        depths = [
            float(line.rpartition(" ")[2])
            for line in body.decode().splitlines()
            if line.startswith("assetmgr_queue_depth{")
        ]
        quiet[0] = quiet[0] + 1 if status == 200 and depths and not any(depths) else 0
        return quiet[0] >= polls

    wait_for(empty, 20, 0.1, "every queue of the daemon empty")
