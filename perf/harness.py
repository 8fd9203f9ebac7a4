"""The benchmark's shared state: sizes (Profile), generated corpora (Corpus) and the Context
every section gets: the Valkey it measures against, how to run `hydrate` and the daemon."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import corpus as generator
import measure
import redis

SEED = 7


@dataclass(frozen=True)
class Profile:
    """Sizes of one benchmark mode (full, --quick, --smoke)."""

    cold: tuple[int, int] = (20_000, 20)  # (small, large) assets
    daemon: tuple[int, int] = (5_000, 20)  # the tree of the latency and burst sections
    small_edits: int = 200
    large_edits: int = 20
    rates: tuple[float, ...] = (20, 200)
    burst: int = 5_000
    memory: int = 100_000
    memory_seconds: float = 60
    memory_rate: float = 50
    workers: tuple[int, ...] = (1, 2, 4)
    sizes: tuple[int, ...] = (10_000, 20_000, 50_000)


@dataclass
class Corpus:
    dir: Path
    small: list[str]
    large: list[str]
    bytes: int

    @property
    def assets(self) -> Path:
        return self.dir / "assets"

    @property
    def schemas(self) -> Path:
        return self.dir / "schemas"

    @property
    def paths(self) -> list[str]:
        return self.small + self.large


@dataclass
class Context:
    profile: Profile
    repeat: int
    url: str
    corpus_dir: Path
    logs: Path
    client: redis.Redis = field(init=False)
    _daemons: int = 0

    def __post_init__(self) -> None:
        self.client = redis.Redis.from_url(self.url)

    def flush(self) -> None:
        self.client.flushall()

    def corpus(self, small: int, large: int) -> Corpus:
        """The generated tree of that size, reused from `corpus_dir` when already there."""
        target = self.corpus_dir / f"s{small}-l{large}-seed{SEED}"
        marker = target / "corpus.json"
        if not marker.exists():
            shutil.rmtree(target, ignore_errors=True)
            print(f"  generating {small} small + {large} large assets in {target}", flush=True)
            paths = generator.generate(target, small, large, 0.0, SEED)
            size = sum((target / "assets" / p).stat().st_size for p in paths)
            meta = {"small": paths[:small], "large": paths[small:], "bytes": size}
            marker.write_text(json.dumps(meta))
        meta = json.loads(marker.read_text())
        return Corpus(target, meta["small"], meta["large"], meta["bytes"])

    def hydrate(self, tree: Corpus, *extra: str) -> float:
        root, schemas = str(tree.assets), str(tree.schemas)
        return measure.run_cli("hydrate", "--root", root, "--schemas", schemas,
                               "--valkey-url", self.url, *extra)  # fmt: skip

    def daemon(self, tree: Corpus, name: str) -> measure.Daemon:
        self._daemons += 1
        log = self.logs / f"{name}-{self._daemons}.log"
        return measure.Daemon(tree.assets, tree.schemas, self.url, log)


@contextlib.contextmanager
def pristine(tree: Corpus, paths: Sequence[str]) -> Iterator[dict[str, bytes]]:
    """Give back the original bytes of `paths` afterwards, so a cached corpus stays as made."""
    original = {p: (tree.assets / p).read_bytes() for p in paths}
    try:
        yield original
    finally:
        for rel, data in original.items():
            (tree.assets / rel).write_bytes(data)
