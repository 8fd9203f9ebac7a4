"""Probes for the hostile-input tests: who opened or read a file, and how much memory a run took.

`Touches` asks the kernel (inotify IN_OPEN / IN_ACCESS, which fire for any process) whether a
file was opened or read while a block ran, so a test can show that assetmgr rejected a file
without opening it. An O_PATH handle opens nothing and is not reported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from inotify_simple import INotify
from inotify_simple import flags as F

# Root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH obeys file modes like any other user.
DROP_DAC = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
]


def dac_wrapper() -> list[str] | None:
    """How to run a command so that mode bits bind it; None where that is impossible."""
    if os.geteuid() != 0:
        return []
    return DROP_DAC if shutil.which("setpriv") else None


@dataclass
class Touches:
    opened: set[str] = field(default_factory=set)
    read: set[str] = field(default_factory=set)


@contextmanager
def touches(*paths: Path) -> Iterator[Touches]:
    """Record which of `paths` any process opened or read while the block ran."""
    seen = Touches()
    inotify = INotify()
    names = {inotify.add_watch(p, F.OPEN | F.ACCESS): str(p) for p in paths}
    try:
        yield seen
    finally:
        for event in inotify.read(timeout=0):  # queued when the open happened
            name = names[event.wd]
            if event.mask & F.OPEN:
                seen.opened.add(name)
            if event.mask & F.ACCESS:
                seen.read.add(name)
        inotify.close()


_MEASURE = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[2:], stdout=open(sys.argv[1] + '.out', 'wb'),
                      stderr=open(sys.argv[1] + '.err', 'wb')).returncode
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
open(sys.argv[1], 'w').write(f'{code} {peak}')
"""


@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float  # of the largest process of the run (each child counts alone)


def measured(
    args: Sequence[str | os.PathLike[str]], scratch: Path, cwd: Path, timeout: float = 120
) -> Measured:
    """Run `args` in a fresh parent that reports the peak RSS of its largest descendant."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSETMGR_")}
    subprocess.run(
        [sys.executable, "-c", _MEASURE, str(scratch), *map(str, args)],
        check=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )
    code, peak_kb = scratch.read_text().split()
    return Measured(
        int(code),
        Path(f"{scratch}.out").read_text(errors="replace"),
        Path(f"{scratch}.err").read_text(errors="replace"),
        int(peak_kb) / 1024,
    )
