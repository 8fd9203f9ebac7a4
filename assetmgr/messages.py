"""The process protocol: what the reader, the workers, the writer and the supervisor send.

reader -> pool: `Task`. pool -> reader: a `Result` per task. reader -> writer: lists of `Item`,
`UnchangedPaths`, `SyncPoint`, `Finish`. writer -> supervisor (or the one-shot caller):
`Report`. Every role imports its messages from here, so none depends on another role's module
for them. All are plain picklable values: a rejected asset is a result with a reason, never an
exception.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field

# What Valkey holds for a path validated under the current fingerprint: (hash, stat signature).
Stored = tuple[str, str]
Task = tuple[str, int, Stored | None]  # (path, seq, what Valkey holds)

# Rejection codes: metric labels, so a fixed, low-cardinality set (never a path).
REASONS = (
    "empty",
    "encoding",
    "syntax",
    "duplicate_key",
    "non_finite",
    "depth",
    "too_large",
    "no_schema",
    "schema",
    "logic",
    "not_regular",
    "symlink_outside",
    "unreadable",
    "changing",
    "hard_link",
)


@dataclass(frozen=True)  # no slots: dict-based pickling is C-speed, slots' is Python
class Accepted:
    """A valid asset, ready to write: `blob` is one zstd frame of the exact file bytes.

    `vfp` fingerprints what validated it (schemas, validators, limits): stored in the manifest,
    it lets a later scan skip re-validating bytes that are byte-identical and were validated
    by the same rules.
    """

    path: str
    blob: bytes
    hash: str
    size: int
    schema: str
    mtime_ns: int = 0
    seq: int = 0
    vfp: str = ""
    stat: str = ""  # the file's signature when read (worker.signature), '' when not vouched


@dataclass(frozen=True)
class Unchanged:
    """The bytes hash to what Valkey holds, validated under the same fingerprint: no work."""

    path: str
    hash: str
    seq: int = 0


@dataclass(frozen=True)
class UnchangedPaths:
    """Many `Unchanged` of one scan in one message: the stat shortcut vouches for thousands
    of files at a time, and an object each cost the scan 1.3 µs per file to build and pickle
    (25 ms of an unchanged 20,000-file re-hydrate); two lists of strings pickle at C speed."""

    paths: list[str]
    hashes: list[str]
    seq: int = 0

    def __iter__(self) -> Iterator[Unchanged]:
        for path, digest in zip(self.paths, self.hashes, strict=True):
            yield Unchanged(path, digest, self.seq)


@dataclass(frozen=True)
class Rejected:
    path: str
    code: str  # one of REASONS: a metric label, never a path
    reason: str  # one line, for people
    seq: int = 0


@dataclass(frozen=True)
class Missing:
    """The file was gone when read: a hint for the reader, never a delete by itself."""

    path: str
    seq: int = 0


Verdict = Accepted | Rejected
Result = Accepted | Rejected | Missing | Unchanged


@dataclass(frozen=True)
class Delete:
    """The reader confirmed against the disk that `path` is gone."""

    path: str
    seq: int


@dataclass(frozen=True, slots=True)
class SyncPoint:
    """A full scan finished: `paths` is every asset candidate seen on disk since `started`."""

    started: int
    paths: frozenset[str]
    prune: bool = True


@dataclass(frozen=True, slots=True)
class Finish:
    """No more input: commit what is buffered, report, and stop."""


Item = Accepted | Rejected | Unchanged | Delete


@dataclass
class Plan:
    """What one sync did (or, for a dry run, would do), path by path."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    invalid: dict[str, str] = field(default_factory=dict)
    refused: str | None = None
    fenced: str | None = None  # Valkey refused the commit: this writer does not hold the lease
    unacked: int = 0  # committed, but fewer replicas than min_replicas_ack acknowledged it
    took_ms: dict[str, float] = field(default_factory=dict)  # file event -> commit, per write

    def merge(self, other: Plan) -> None:
        self.added += other.added
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.deleted += other.deleted
        self.invalid.update(other.invalid)
        self.took_ms.update(other.took_ms)
        self.refused = other.refused or self.refused

    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "updated": len(self.updated),
            "unchanged": len(self.unchanged),
            "deleted": len(self.deleted),
            "invalid": len(self.invalid),
        }


class Outcome(enum.Enum):
    """Why the writer stopped; the command line maps it to an exit code."""

    DONE = "done"
    VALKEY_FAILED = "valkey_failed"  # unreachable, or refused a command
    REFUSED = "refused"  # a safety guard (mass delete) or the lease (busy, lost, fenced)
    MISCONFIGURED = "misconfigured"  # Valkey is not the topology the settings name


class ReportKind(enum.Enum):
    SUMMARY = "summary"  # the end of the run
    SYNCED = "synced"  # a daemon finished a full sync
    STATUS = "status"  # the set of rejected files changed
    ROLE = "role"  # leader/standby changed
    RESCAN = "rescan"  # the writer needs a full rescan (took over, lost writes, data loss)


@dataclass
class Report:
    """Sent to the supervisor: the plan so far, and why the writer stopped, if it did."""

    plan: Plan
    outcome: Outcome = Outcome.DONE
    error: str | None = None
    kind: ReportKind = ReportKind.SUMMARY
    rejected: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    role: str = "standby"
