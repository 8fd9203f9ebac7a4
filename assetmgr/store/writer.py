"""The only Valkey writer: stale/unchanged drop, atomic per-asset commits, guarded prune.

Everything that changes `asset:blob:*` / `v4:manifest:*` goes through `Writer`. Each asset is
committed by one script call (blob + manifest + PUBLISH, fenced by the lease token), and many
calls share one pipelined round trip. `serve` (in `writer_loop.py`) runs it as a process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from assetmgr import metrics
from assetmgr.messages import Accepted, Item, Plan, Rejected, SyncPoint, Unchanged
from assetmgr.printable import shown
from assetmgr.store import scripts
from assetmgr.store.backends import Upsert, open_store
from assetmgr.store.connection import Client, Endpoint
from assetmgr.store.keyspace import Keyspace, Manifest
from assetmgr.store.lease import Lease
from assetmgr.store.policy import Daemon, OneShot, Policy

log = logging.getLogger("assetmgr.writer")


def log_plan(plan: Plan, quiet: bool, was_rejected: dict[str, str], bulk: bool = False) -> None:
    """One line per committed change; a `quiet` run (a one-shot command, which sums up
    instead) or a daemon's first hydration (`bulk`) logs them at debug.

    A daemon warns when a file turns invalid (or its reason changes), not at every rescan.
    """
    level = logging.DEBUG if quiet or bulk else logging.INFO
    for outcome, paths in (
        ("added", plan.added),
        ("updated", plan.updated),
        ("deleted", plan.deleted),
    ):
        for path in paths:
            extra: dict[str, object] = {"path": shown(path), "outcome": outcome}
            if path in plan.took_ms:
                extra["ms"] = round(plan.took_ms[path], 1)
            log.log(level, outcome, extra=extra)
    for path, reason in plan.invalid.items():
        again = quiet or was_rejected.get(path) == reason
        log.log(
            logging.DEBUG if again else logging.WARNING,
            "rejected",
            extra={"path": shown(path), "outcome": "rejected", "reason": reason},
        )


class Pending:
    """The writer's buffer: the newest result per path not yet committed, and its blob bytes
    (bounded by the caller while Valkey is away)."""

    def __init__(self) -> None:
        self.items: dict[str, Item] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: Item) -> None:
        """Keep `item` unless a newer result for its path is already here."""
        previous = self.items.get(item.path)
        if previous is not None and item.seq < previous.seq:
            return
        self._forget(previous)
        if isinstance(item, Accepted):
            self.bytes += len(item.blob)
        self.items[item.path] = item

    def remove(self, items: Iterable[Item]) -> None:
        for item in items:
            if self.items.get(item.path) is item:
                self._forget(self.items.pop(item.path))

    def take(self) -> list[Item]:
        taken, self.items, self.bytes = list(self.items.values()), {}, 0
        return taken

    def drop_writes(self) -> bool:
        """Forget all but the rejections (a rescan redoes the rest); True when any went."""
        kept: dict[str, Item] = {p: r for p, r in self.items.items() if isinstance(r, Rejected)}
        dropped = len(kept) != len(self.items)
        self.items, self.bytes = kept, 0
        return dropped

    def _forget(self, item: Item | None) -> None:
        if isinstance(item, Accepted):
            self.bytes -= len(item.blob)


@dataclass
class Guard:
    max_prune_ratio: float = 0.5
    allow_mass_delete: bool = False


@dataclass(frozen=True)
class WriterOptions:
    """What the writer process is told; every value comes from the settings (`from_config`)."""

    endpoint: Endpoint
    keyspace: Keyspace
    connect_timeout: float
    guard: Guard
    dry_run: bool
    batch_size: int
    policy: Policy
    lease_ttl: float
    min_replicas_ack: int
    replicas_ack_timeout: float
    log_format: str
    log_level: str

    @classmethod
    def from_config(cls, cfg: Any, *, oneshot: bool) -> WriterOptions:
        """The options the resolved settings ask for (`cfg`: an `assetmgr.config.Config`), for
        a one-shot command or for the daemon."""
        policy = OneShot(cfg.values.get("wait_lease") or 0.0) if oneshot else Daemon()
        return cls(
            endpoint=cfg.endpoint,
            keyspace=cfg.keyspace,
            connect_timeout=cfg.connect_timeout,
            guard=Guard(cfg.max_prune_ratio, cfg.allow_mass_delete),
            dry_run=bool(cfg.values.get("dry_run")),
            batch_size=cfg.batch_size,
            policy=policy,
            lease_ttl=cfg.lease_ttl,
            min_replicas_ack=cfg.min_replicas_ack,
            replicas_ack_timeout=cfg.replicas_ack_timeout,
            log_format=cfg.log_format,
            log_level=cfg.log_level,
        )


class Writer:
    """Commits results and prunes, fenced by `lease`; owns what it knows of the keyspace: the
    newest sequence number applied per path and the paths currently rejected."""

    def __init__(
        self,
        ks: Keyspace,
        guard: Guard,
        lease: Lease,
        *,
        dry_run: bool = False,
        min_acks: int = 0,
        ack_timeout: float = 1.0,
    ) -> None:
        self.ks = ks
        self.guard = guard
        self.lease = lease
        self.dry_run = dry_run
        self.min_acks = min_acks
        self.ack_timeout = ack_timeout
        self._unconfirmed: dict[str, int] = {}  # committed, not acknowledged: first outcome
        self.identity = lease.identity
        self.applied: dict[str, int] = {}  # path -> seq of the newest result applied
        self._rejected: dict[str, str] = {}  # path -> reason, while the file on disk is invalid

    @classmethod
    def configured(cls, opts: WriterOptions) -> Writer:
        """The writer the options ask for, with its lease."""
        ks = opts.keyspace
        return cls(
            ks,
            opts.guard,
            Lease(ks.lease, ks.epoch, opts.lease_ttl),
            dry_run=opts.dry_run,
            min_acks=opts.min_replicas_ack,
            ack_timeout=opts.replicas_ack_timeout,
        )

    def bind(self, client: Client) -> None:
        """Use this connection (again after a reconnect), for the lease too; what was applied
        is still known."""
        self.client = client
        self.store = open_store(client, self.ks, self.min_acks, self.ack_timeout)
        self.lease.bind(client)

    def raise_fences(self) -> str | None:
        """Fence out older writers before our first commit (scripts.py); why not, when a newer
        writer already did. A fence above our epoch while the lease is ours means the epoch
        counter lost its value (its node restarted empty): take an epoch past it."""
        while newer := self.store.raise_fences(self.lease):
            floor = scripts.fence_epoch(newer)
            if floor is None or not self.lease.advance(floor):
                return newer
            log.warning(
                "the lease's epoch counter was behind the fences (its node lost its data)",
                extra={"epoch": self.lease.epoch, "fence": floor},
            )
        return None

    @property
    def rejected(self) -> dict[str, str]:
        """Path (printable, see `printable.shown`) -> reason for the files invalid on disk now."""
        return {shown(path): reason for path, reason in self._rejected.items()}

    def rejected_paths(self) -> dict[str, str]:
        """The same by the real path, a copy: what a flush compares before and after."""
        return dict(self._rejected)

    def forget_rejected(self, sync: SyncPoint) -> None:
        """A full scan did not see these rejected paths: they are no longer on disk (their
        delete event was lost, or it was a directory, which has no delete to send)."""
        for path in [p for p in self._rejected if p not in sync.paths]:
            if self.applied.get(path, 0) < sync.started:
                del self._rejected[path]

    def observe(self, items: Iterable[Item]) -> bool:
        """A standby's view of the disk: record rejections, write nothing. True when a write
        was discarded (whoever takes over must rescan)."""
        discarded = False
        for item in items:
            if isinstance(item, Rejected):
                self._rejected[item.path] = item.reason
            else:
                self._rejected.pop(item.path, None)
                discarded = True
        return discarded

    def _fresh(self, path: str, seq: int) -> bool:
        """True for a result newer than any applied to `path`; records it as applied."""
        if seq and seq < self.applied.get(path, 0):
            return False
        self.applied[path] = max(seq, self.applied.get(path, 0))
        return True

    def apply(self, items: Sequence[Item]) -> Plan:
        """Commit one batch. Older-than-applied results are dropped, the newest per path wins."""
        latest: dict[str, Item] = {}
        for item in items:
            if self._fresh(item.path, item.seq):
                latest[item.path] = item
        plan = Plan()
        upserts: list[Accepted] = []
        deletes: list[str] = []
        for item in latest.values():
            if isinstance(item, Rejected):
                self._rejected[item.path] = item.reason
                plan.invalid[item.path] = item.reason
                continue
            self._rejected.pop(item.path, None)
            if isinstance(item, Unchanged):
                plan.unchanged.append(item.path)
            elif isinstance(item, Accepted):
                upserts.append(item)
            else:
                deletes.append(item.path)
        if self.dry_run:
            self._classify(upserts, plan)
            plan.deleted += deletes
        elif upserts or deletes:
            self._commit(upserts, deletes, plan)
        return plan

    def _classify(self, upserts: Sequence[Accepted], plan: Plan) -> None:
        """For a dry run: read the stored hashes to tell added, updated and unchanged apart."""
        pipe = self.client.pipeline(transaction=False)
        for a in upserts:
            pipe.hmget(self.ks.manifest(a.path), "hash", "zsize")
            pipe.strlen(self.ks.blob(a.path))
        replies = pipe.execute()
        for i, a in enumerate(upserts):
            (stored, zsize), blob_size = replies[2 * i], replies[2 * i + 1]
            if stored is None:
                plan.added.append(a.path)
            elif stored.decode() == a.hash and zsize and int(zsize) == blob_size:
                plan.unchanged.append(a.path)
            else:
                plan.updated.append(a.path)

    def _commit(self, upserts: Sequence[Accepted], deletes: Sequence[str], plan: Plan) -> None:
        """One commit through the store. A commit refused for want of the lease sets
        `plan.fenced`, one too few replicas acknowledged sets `plan.unacked`: then nothing of
        it is recorded, and the caller sends it again (the scripts are idempotent; what the
        first try changed is remembered so the retry reports it so)."""
        started = time.perf_counter()
        now_ms = int(time.time() * 1000)
        assets = [
            (a.path, a.blob, Manifest(
                a.hash, a.size, len(a.blob), a.schema, a.mtime_ns, now_ms, 0,
                writer=self.identity, vfp=a.vfp, stat=a.stat,
            ))
            for a in upserts
        ]  # fmt: skip
        done = self.store.commit(assets, deletes, self.lease)
        metrics.WRITE_BATCH.observe(time.perf_counter() - started)
        if done.fenced:
            plan.fenced = done.fenced
            return
        outcomes = [
            max(o, Upsert(self._unconfirmed.pop(a.path, 0)))
            for a, o in zip(upserts, done.outcomes, strict=True)
        ]
        gone = [
            max(n, self._unconfirmed.pop(p, 0)) for p, n in zip(deletes, done.gone, strict=True)
        ]
        if not done.acked:
            self._unconfirmed.update(zip([a.path for a in upserts], outcomes, strict=True))
            self._unconfirmed.update(zip(deletes, gone, strict=True))
            plan.unacked = len(upserts) + len(deletes)
            metrics.UNACKED.inc()
            return
        by_outcome = {
            Upsert.UNCHANGED: plan.unchanged,
            Upsert.UPDATED: plan.updated,
            Upsert.ADDED: plan.added,
        }
        written = 0
        for a, outcome in zip(upserts, outcomes, strict=True):
            by_outcome[outcome].append(a.path)
            if outcome is not Upsert.UNCHANGED:
                written += len(a.blob)
                plan.took_ms[a.path] = metrics.observe_propagation(a.seq) * 1000
        metrics.WRITES.labels("upsert").inc(len(plan.added) + len(plan.updated))
        metrics.BYTES.labels("blob").inc(written)
        plan.deleted += [p for p, n in zip(deletes, gone, strict=True) if n]
        metrics.WRITES.labels("delete").inc(sum(1 for n in gone if n))

    def stored_paths(self) -> set[str]:
        """Paths that have a manifest or a blob in Valkey (read with SCAN, never deleted so)."""
        return self.ks.manifest_paths(self.client) | self.ks.blob_paths(self.client)

    def prune(self, sync: SyncPoint, batch: int = 256) -> Plan:
        """Delete, key by key, the assets whose files are gone — unless that is a mass loss."""
        plan = Plan()
        stored = self.stored_paths()
        doomed = sorted(
            p for p in stored if p not in sync.paths and self.applied.get(p, 0) < sync.started
        )
        if not doomed:
            return plan
        if not self.guard.allow_mass_delete:
            if not sync.paths:
                plan.refused = f"the root holds no assets; refusing to delete all {len(stored)}"
            elif len(doomed) > self.guard.max_prune_ratio * len(stored):
                plan.refused = (
                    f"prune of {len(doomed)} of {len(stored)} assets is over the "
                    f"{self.guard.max_prune_ratio:.0%} limit (--allow-mass-delete overrides)"
                )
            if plan.refused:
                return plan
        for i in range(0, len(doomed), batch):
            chunk = doomed[i : i + batch]
            if self.dry_run:
                plan.deleted += chunk
                continue
            done = Plan()
            self._commit([], chunk, done)
            plan.deleted += done.deleted
            if done.fenced or done.unacked:
                plan.fenced, plan.unacked = done.fenced, done.unacked
                return plan
        for path in doomed:
            self._rejected.pop(path, None)
        return plan

    def mark_synced(self) -> None:
        """Record a completed full sync and the server's run_id (bookkeeping, not assets).

        The marker vanishing (FLUSHALL, a restart without persistence, failover to an empty
        replica) or the run_id changing is how a lost keyspace is detected.
        """
        if not self.dry_run:
            self.client.hset(
                self.ks.sync_marker,
                mapping={
                    "at_ms": int(time.time() * 1000),
                    "by": self.identity,
                    "run_id": self.run_id(),
                },
            )
        metrics.LAST_SYNC.set(time.time())

    def run_id(self) -> str:
        """The server's run_id; a cluster's, one per primary: any restart or failover
        changes it."""
        ids = self.store.run_ids()
        return ",".join(f"{node}={ids[node]}" if node else ids[node] for node in sorted(ids))

    def keyspace_lost(self) -> str | None:
        """Why Valkey may no longer hold what the last full sync wrote (the marker is gone:
        FLUSHALL, data loss; or a server restarted or failed over), else None."""
        raw = self.client.hget(self.ks.sync_marker, "run_id")
        if raw is None:
            metrics.DATA_LOSS.inc()
            log.error("Valkey lost the asset keyspace (sync marker gone); re-hydrating")
            return "data loss in Valkey"
        if (raw.decode() if isinstance(raw, bytes) else raw) != self.run_id():
            log.warning("Valkey restarted (run_id changed); reconciling")
            return "Valkey restarted"
        return None
