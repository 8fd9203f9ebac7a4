"""The benchmark's shared state: sizes (Profile), generated corpora (Corpus) and the Context
every section gets: the Valkey it measures against, how to run `hydrate` and the daemon."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import corpus as generator
import measure
import redis
from corpus import Shape

SEED = 7
DAEMON_TREE = Shape(5_000, 20, 2, 0.02)  # 20 of ~1 MB, 2 of 3-10 MB, 2% invalid


@dataclass(frozen=True)
class Profile:
    """Sizes of one benchmark mode (full, --quick, --smoke)."""

    cold: int = 20_000  # files of the cold / rehydrate / --workers corpus
    daemon: Shape = DAEMON_TREE  # the tree of the latency and burst sections
    small_edits: int = 200
    large_edits: int = 20
    rates: tuple[float, ...] = (20, 200)
    burst: int = 5_000
    memory: int = 100_000
    memory_seconds: float = 60
    memory_rate: float = 50
    workers: tuple[int, ...] = (1, 2, 4)
    sizes: tuple[int, ...] = (10_000, 50_000, 200_000)


@dataclass
class Corpus:
    dir: Path
    meta: generator.Meta

    @property
    def assets(self) -> Path:
        return self.dir / "assets"

    @property
    def schemas(self) -> Path:
        return self.dir / "schemas"

    @property
    def paths(self) -> list[str]:
        return self.meta.paths

    @property
    def small(self) -> list[str]:
        return self.meta.small

    @property
    def large(self) -> list[str]:
        return self.meta.large

    @property
    def bytes(self) -> int:
        return sum(self.meta.sizes.values())

    @property
    def invalid(self) -> int:
        return len(self.meta.invalid)


@dataclass
class Context:
    profile: Profile
    repeat: int
    url: str
    corpus_dir: Path
    logs: Path
    shape: Callable[[int], Shape] = generator.realistic
    engine: str | None = None  # --schema-engine of every hydrate and daemon; None: the default
    client: redis.Redis = field(init=False)
    _daemons: int = 0

    def __post_init__(self) -> None:
        self.client = redis.Redis.from_url(self.url)

    def flush(self) -> None:
        self.client.flushall()

    def corpus(self, shape: Shape) -> Corpus:
        """The generated tree of that shape, reused from `corpus_dir` when already there."""
        target = self.corpus_dir / f"{shape.name}-seed{SEED}"
        meta = generator.load(target)
        if meta is None:
            shutil.rmtree(target, ignore_errors=True)
            print(f"  generating {shape.files:,} files ({shape.name}) in {target}", flush=True)
            meta = generator.generate(target, shape, SEED)
            generator.save(target, meta)
            print("  " + generator.describe(meta).replace("\n", "\n  "), flush=True)
        return Corpus(target, meta)

    def tree(self, files: int) -> Corpus:
        """A corpus of the benchmark's shape (realistic, or --shape trial) with `files` files."""
        return self.corpus(self.shape(files))

    def hydrate(
        self, tree: Corpus, *extra: str, sample_rss: bool = False, url: str | None = None
    ) -> measure.CliRun:
        """The whole `hydrate` command on `tree`, against this context's Valkey or `url`."""
        root, schemas = str(tree.assets), str(tree.schemas)
        args = ["--root", root, "--schemas", schemas, "--valkey-url", url or self.url]
        if self.engine and "--schema-engine" not in extra:
            args += ["--schema-engine", self.engine]
        args += extra
        return measure.run_cli("hydrate", *args, sample_rss=sample_rss)

    def daemon(self, tree: Corpus, name: str) -> measure.Daemon:
        self._daemons += 1
        log = self.logs / f"{name}-{self._daemons}.log"
        extra = ["--schema-engine", self.engine] if self.engine else []
        return measure.Daemon(tree.assets, tree.schemas, self.url, log, extra)


@contextlib.contextmanager
def pristine(tree: Corpus, paths: Sequence[str]) -> Iterator[dict[str, bytes]]:
    """Give back the original bytes of `paths` afterwards, so a cached corpus stays as made."""
    original = {p: (tree.assets / p).read_bytes() for p in paths}
    try:
        yield original
    finally:
        for rel, data in original.items():
            (tree.assets / rel).write_bytes(data)
