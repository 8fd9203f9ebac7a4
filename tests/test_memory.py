"""A process that validated a large asset hands the freed memory back (assetmgr.memory)."""

import subprocess
import sys

import pytest

from assetmgr import memory

# In a fresh interpreter, as a worker would: evaluate ~8 MB assets of several shapes (each
# parse leaves its buffers in the C heap), then check the ceiling once: the RSS must come back
# to where the warm worker started. Prints RSS in MiB: at the start, after the work, after the
# check.
PROGRAM = r"""
import orjson
from pathlib import Path
from assetmgr import memory
from assetmgr.limits import Limits
from assetmgr.pipeline import schemas, worker

directory = Path(__import__("tempfile").mkdtemp())
(directory / "_default.schema.json").write_bytes(b'{"type": "object"}')
registry, limits = schemas.load(directory), Limits()


def large(n):
    rows = [{"id": f"r{i}-{n}", "w": i * 0.5, "tags": ["a" * (n + 1)] * 3} for i in range(60_000)]
    return orjson.dumps({"rows": rows, "blob": "x" * (1 << 20) * (n + 1)})


# The baseline is a warm worker that has seen one large asset: the first one pays for the
# compressor, the schema and the Python allocator's arenas, which a worker keeps for good.
ceiling = memory.Ceiling()
worker.evaluate("big.json", large(0), registry, limits)
ceiling._trim(0)
start = memory.rss()
for n in range(1, 5):
    data = large(n)
    assert type(worker.evaluate("big.json", data, registry, limits)).__name__ == "Accepted"
    del data
before = memory.rss()
ceiling.check()
print(start >> 20, before >> 20, memory.rss() >> 20, ceiling.slack >> 20)
"""


def test_rss_is_back_under_the_ceiling_after_large_assets():
    if memory.Ceiling()._trim is None:
        pytest.skip("this C library has no malloc_trim")
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    start, before, after, slack = map(int, out.split())
    assert before > start + slack, out  # the work left memory behind: the check has a job
    assert after <= start + slack, out


def test_rss_reads_this_process():
    held = bytearray(64 << 20)
    held[:: memory._PAGE] = b"x" * len(held[:: memory._PAGE])  # touch every page
    assert memory.rss() >= 64 << 20
