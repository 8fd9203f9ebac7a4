"""Issue 9 on Valkey Cluster: what only a cluster can do to assetmgr, on real clusters.

The standalone scenarios also run on a cluster (`@pytest.mark.topologies` in test_hydrate.py,
test_status.py, test_daemon_*.py, test_reliability.py). Here: a verifying reader racing a
hydrate of thousands of assets, the hashtag layout, fencing by epoch, slot migrations,
failovers and nodes restarted empty under a running daemon, and the bad URLs and settings.
"""

from __future__ import annotations

import hashlib
import random
import threading
from pathlib import Path

import pytest
import zstandard
from redis.crc import key_slot
from scaleout import COST, bump, bumped, cli, metric, mutations, one_line_error, weights
from topology import Node, wait_until
from topology_cluster import Cluster

from assetmgr.client import AssetClient, IntegrityError
from assetmgr.messages import Accepted, Delete
from assetmgr.store.connection import Endpoint, connect
from assetmgr.store.keyspace import Keyspace
from assetmgr.store.lease import Lease
from assetmgr.store.writer import Guard, Writer
from conftest import (
    converge,
    disk_assets,
    manifests,
    monitor,
    sha256,
    stored,
    subscribe,
    wait_for,
)

pytestmark = pytest.mark.topologies("cluster")  # `valkey` is the shared cluster, flushed

# -- a verifying reader against a hydrate of thousands ---------------------------------------


def make_tree(root: Path, count: int, version: int) -> dict[str, bytes]:
    """`count` weight tables under weights/bulk/; the same paths with other bytes per version."""
    (root / "weights" / "bulk").mkdir(parents=True, exist_ok=True)
    out = {}
    for i in range(count):
        path = f"weights/bulk/w{i:05d}.json"
        data = weights(f"w{i:05d}", version + i / 1000)
        (root / path).write_bytes(data)
        out[path] = data
    return out


class RacingReader:
    """A consumer reading random assets as fast as it can while the writer commits.

    Through `AssetClient.get_many` (which verifies and retries) it must never get an
    IntegrityError, nor bytes that are not a version of the file with the manifest's hash.
    Raw, manifest first and blob second in two round trips, it checks the writer's order: a
    manifest is written after its blob, so the blob read after it is never older."""

    def __init__(self, url: str, versions: dict[str, list[bytes]]) -> None:
        self.client = AssetClient.from_url(url)
        self.raw = self.client.client
        self.ks = Keyspace()
        self.versions = versions
        self.paths = sorted(versions)
        self.problems: list[str] = []
        self.mixed = 0  # get_many calls that saw two versions at once: reads met commits
        self.calls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._dctx = zstandard.ZstdDecompressor()

    def _run(self) -> None:
        rng = random.Random(9)
        while not self._stop.is_set():
            try:
                got = self.client.get_many(rng.sample(self.paths, min(64, len(self.paths))))
                self._raw(rng.choice(self.paths))
            except IntegrityError as e:
                self.problems.append(f"IntegrityError: {e}")
                continue
            except Exception as e:  # any other failure is a finding too
                self.problems.append(repr(e))
                return
            self.calls += 1
            seen = set()
            for path, asset in got.items():
                if asset is None:
                    seen.add(None)
                    continue
                if hashlib.sha256(asset.data).hexdigest() != asset.manifest.hash:
                    self.problems.append(f"{path}: bytes differ from the manifest's hash")
                elif asset.data not in self.versions[path]:
                    self.problems.append(f"{path}: bytes of no version of the file")
                else:
                    seen.add(self.versions[path].index(asset.data))
            self.mixed += len(seen) > 1

    def _raw(self, path: str) -> None:
        fields = self.raw.hgetall(self.ks.manifest(path))
        blob = self.raw.get(self.ks.blob(path))
        if not fields:
            return
        if blob is None:
            self.problems.append(f"{path}: a manifest without its blob")
            return
        order = [sha256(v) for v in self.versions[path]]
        manifest_at = order.index(fields[b"hash"].decode())
        blob_at = order.index(sha256(self._dctx.decompress(blob)))
        if blob_at < manifest_at:
            self.problems.append(f"{path}: blob older than the manifest read before it")

    def __enter__(self) -> RacingReader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_a_verifying_reader_never_sees_a_torn_pair_while_thousands_are_hydrated(valkey, tmp_path):
    root = tmp_path / "assets"
    first = make_tree(root, 3000, 1)
    second = {path: weights(Path(path).stem, 2 + i / 1000) for i, path in enumerate(first)}
    reader = RacingReader(valkey.url, {p: [first[p], second[p]] for p in first})
    with reader:
        cold = cli("hydrate", valkey.url, root)
        assert cold.returncode == 0, cold.stderr
        mixed_cold = reader.mixed
        for path, data in second.items():
            (root / path).write_bytes(data)
        update = cli("hydrate", valkey.url, root)
        assert update.returncode == 0, update.stderr
    assert "added=3000" in cold.stderr and "updated=3000" in update.stderr
    assert reader.problems == []
    # The reads overlapped both runs' commits (absent beside present, then v1 beside v2).
    assert mixed_cold > 0 and reader.mixed > mixed_cold, (mixed_cold, reader.mixed)
    everything = AssetClient.from_url(valkey.url).get_many(sorted(second))
    assert {p: a.data for p, a in everything.items() if a} == second


# -- key_layout = "hashtag" -------------------------------------------------------------------


def test_the_hashtag_layout_keeps_each_asset_in_one_slot_and_only_its_readers_see_it(valkey, root):
    client = valkey.client()
    hashtag = ("--key-layout", "hashtag")
    with monitor(client) as seen:
        result = cli("hydrate", valkey.url, root, *hashtag)
    assert result.returncode == 0, result.stderr
    on_disk = disk_assets(root)
    ks = Keyspace(hashtag=True)
    for path in on_disk:
        blob, manifest = ks.blob(path), ks.manifest(path)
        assert blob == f"asset:blob:{{{path}}}" and manifest == f"v4:manifest:{{{path}}}"
        slots = {client.execute_command("CLUSTER KEYSLOT", key) for key in (blob, manifest)}
        assert len(slots) == 1, (path, slots)
        assert client.exists(blob, manifest) == 2
    for pattern in ("asset:blob:*", "v4:manifest:*"):  # and no key of the plain layout
        names = [k.decode() for k in client.scan_iter(match=pattern, count=1000)]
        assert len(names) == 20 and all(n.endswith("}") for n in names), names
    # Each asset committed by one script call naming both of its keys.
    calls = [line for line in seen.items if line.startswith("EVALSHA") and "asset:blob:" in line]
    for path in on_disk:
        mine = [c for c in calls if f" asset:blob:{{{path}}} " in c]
        assert len(mine) == 1 and f" v4:manifest:{{{path}}} " in mine[0], (path, mine)

    got = cli("get", valkey.url, None, COST, *hashtag)
    assert got.returncode == 0 and got.stdout.encode() == on_disk[COST], got.stderr
    in_sync = cli("status", valkey.url, root, *hashtag)
    assert in_sync.returncode == 0 and in_sync.stdout.endswith("status: in sync\n"), in_sync
    shared = AssetClient.from_url(valkey.url, keyspace=ks)
    assert {p: a.data for p, a in shared.get_many(sorted(on_disk)).items() if a} == on_disk

    plain = AssetClient.from_url(valkey.url)
    assert plain.get(COST) is None and plain.paths() == []
    assert cli("get", valkey.url, None, COST).returncode == 1
    assert cli("status", valkey.url, root).returncode == 1  # would add everything
    # A writer with the plain layout by mistake adds its own keys, and prunes none of these.
    tagged = {k: client.get(k) for k in client.scan_iter(match="asset:blob:{*}", count=1000)}
    mistaken = cli("hydrate", valkey.url, root)
    assert mistaken.returncode == 0 and "deleted=0" in mistaken.stderr, mistaken.stderr
    assert {k: client.get(k) for k in tagged} == tagged and stored(client).keys() >= on_disk.keys()


# -- fencing by epoch ---------------------------------------------------------------------------


def accepted(path: str, data: bytes) -> Accepted:
    blob = zstandard.ZstdCompressor().compress(data)
    return Accepted(path, blob, sha256(data), len(data), "weights.schema.json", vfp="test")


def writer_on(url: str, ks: Keyspace, ttl: float) -> Writer:
    writer = Writer(ks, Guard(allow_mass_delete=True), Lease(ks.lease, ks.epoch, ttl))
    writer.bind(connect(Endpoint(url)))
    return writer


@pytest.mark.parametrize("layout", ["plain", "hashtag"])
def test_a_writer_that_lost_its_lease_is_fenced_on_every_node_once_the_new_one_took_over(
    valkey, layout
):
    client = valkey.client()
    ks = Keyspace(hashtag=layout == "hashtag")
    kept, doomed, new = "weights/kept.json", "weights/doomed.json", "weights/new.json"
    old = writer_on(valkey.url, ks, ttl=0.3)
    assert old.lease.acquire() and old.store.raise_fences(old.lease) is None
    plan = old.apply([accepted(kept, weights("kept")), accepted(doomed, weights("doomed"))])
    assert sorted(plan.added) == [doomed, kept] and not plan.fenced

    wait_for(lambda: not client.exists(ks.lease), 5, what="the old writer's lease to expire")
    successor = writer_on(valkey.url, ks, ttl=10)
    assert successor.lease.acquire() and successor.lease.epoch > old.lease.epoch
    assert successor.store.raise_fences(successor.lease) is None
    assert old.lease.held  # paused past its TTL, it still believes it leads

    before = manifests(client)
    with monitor(client) as seen, subscribe(client) as published:
        upsert = old.apply([accepted(kept, weights("kept", 2)), accepted(new, weights("new"))])
        delete = old.apply([Delete(doomed, 0)])
    assert upsert.fenced and delete.fenced
    assert f"older than {successor.lease.epoch}" in str(upsert.fenced)
    assert upsert.added == upsert.updated == delete.deleted == []
    assert mutations(seen.items) == [] and published.items == []
    assert manifests(client) == before and not client.exists(ks.blob(new), ks.manifest(new))

    with subscribe(client) as published:
        plan = successor.apply([accepted(kept, weights("kept", 3))])
        wait_for(lambda: published.items, 5, what="the successor's publish")
    assert plan.updated == [kept] and published.items == [kept]


# -- bad URLs and settings: one line, the right code, nothing deleted --------------------------


def failing_runs(url: str, root: Path, *extra: str) -> list:
    """hydrate (on a tree from which a prune would delete two assets), status and get."""
    return [
        cli("hydrate", url, root, "--connect-timeout", "1", *extra, deadline=15),
        cli("status", url, root, "--connect-timeout", "1", *extra, deadline=15),
        cli("get", url, None, COST, "--connect-timeout", "1", *extra, deadline=15),
    ]


def drop_two(root: Path) -> None:
    (root / "settings.json").unlink()
    (root / "routes" / "api.json").unlink()


@pytest.mark.topologies("standalone")
def test_a_cluster_url_or_cluster_on_against_one_server_is_a_configuration_error(valkey, root):
    assert cli("hydrate", valkey.url, root).returncode == 0
    before = stored(valkey.client())
    drop_two(root)
    for url, extra in ((valkey.url + "?cluster=true", ()), (valkey.url, ("--cluster", "on"))):
        for result in failing_runs(url, root, *extra):
            one_line_error(result, 2, "configuration error", "cluster")
    assert stored(valkey.client()) == before


def test_cluster_off_against_a_cluster_node_is_a_configuration_error(valkey, root):
    assert cli("hydrate", valkey.url, root).returncode == 0
    before = stored(valkey.client())
    drop_two(root)
    for result in failing_runs(valkey.url, root, "--cluster", "off"):
        one_line_error(result, 2, "configuration error", "cluster node")
    off = cli("hydrate", valkey.url + "?cluster=false", root)
    one_line_error(off, 2, "configuration error", "cluster node")
    assert stored(valkey.client()) == before


def test_a_cluster_that_is_down_is_unreachable_exit_3_and_nothing_is_deleted(make_cluster, root):
    cluster: Cluster = make_cluster()  # of its own: one of its nodes is killed
    assert cli("hydrate", cluster.seed_url, root).returncode == 0
    before = stored(cluster.client())
    victim = cluster.force_fail_state()
    drop_two(root)
    for result in failing_runs(cluster.seed_url, root):
        one_line_error(result, 3, "cluster_state:fail")
    for node in cluster.alive():  # the survivors still hold every key they had
        held = {k.decode() for k in node.client().scan_iter(match="asset:blob:*", count=1000)}
        assert held == {f"asset:blob:{p}" for p in before if cluster_owner(cluster, p) is node}
    assert victim not in cluster.alive()


def cluster_owner(cluster: Cluster, path: str) -> object:
    slot = key_slot(f"asset:blob:{path}".encode())
    owner = next(i for i in cluster.topology() if i.role == "primary" and i.owns(slot))
    return cluster.node(owner.port)


def test_a_key_prefix_that_would_split_a_commit_over_slots_is_refused(valkey, root):
    """A stray brace in the prefix moves the hash tag: the lease and its epoch, or a fence
    and its slot's keys, would land in different slots (CROSSSLOT). Refused up front."""
    for prefix in ("t{", "t}", "{}t:"):
        one_line_error(cli("hydrate", valkey.url, root, "--key-prefix", prefix), 2, "key_prefix")
    for result in failing_runs(valkey.url, root, "--key-prefix", "t{"):
        one_line_error(result, 2, "key_prefix")
    assert list(valkey.client().scan_iter(count=1000)) == []


def test_a_key_prefix_with_a_whole_hash_tag_puts_everything_in_its_slot(valkey, root):
    result = cli("hydrate", valkey.url, root, "--key-prefix", "{tenant}:")
    assert result.returncode == 0, result.stderr
    client = valkey.client()
    keys = list(client.scan_iter(match="*", count=1000))
    assert {key_slot(k) for k in keys} == {key_slot(b"tenant")}
    assert stored(client, "{tenant}:") == disk_assets(root)
    got = cli("get", valkey.url, None, COST, "--key-prefix", "{tenant}:")
    assert got.returncode == 0 and got.stdout.encode() == (root / COST).read_bytes()


# -- a daemon under slot migrations, failovers and empty restarts ------------------------------


def paths_in_slot(slot: int, count: int, prefix: str = "weights/mig") -> list[str]:
    """Asset paths whose blob key hashes to `slot`."""
    found: list[str] = []
    i = 0
    while len(found) < count:
        path = f"{prefix}{i}.json"
        if key_slot(f"asset:blob:{path}".encode()) == slot:
            found.append(path)
        i += 1
    return found


def migrate(src: Node, dst: Node, keys: list[str]) -> None:
    """MIGRATE these keys of a slot in flight (the rest of it stays behind for now)."""
    src.admin.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys)


def test_a_live_slot_migration_under_edits_converges_with_nothing_invalid(
    valkey, root, start_daemon
):
    cluster: Cluster = valkey.cluster
    client = valkey.client()
    ks = Keyspace()
    slot = key_slot(ks.blob(COST).encode())
    moving = paths_in_slot(slot, 4)
    for path in moving:
        (root / path).write_bytes(weights(Path(path).stem))
    daemon = start_daemon(root)
    versions = {p: [d, bumped(d, "2.0.0")] for p, d in disk_assets(root).items()}
    src = cluster.node_for_key(ks.blob(COST))
    dst = next(p for p in cluster.primaries() if p is not src)

    migration = cluster.begin_migration(slot, src, dst)
    # The slot's fence and the moving assets' blobs go first; the cost table's blob stays.
    migrate(src, dst, [ks.fence(slot), *(ks.blob(p) for p in moving)])
    with RacingReader(valkey.url, versions) as reader:
        for path in moving:
            bump(root / path, "2.0.0")
        converge(client, lambda: disk_assets(root), what="edits of moved keys, through ASK")
        # Its blob on the source, the fence on the target: TRYAGAIN until the slot is done.
        new = bump(root / COST, "2.0.0")
        wait_for(
            lambda: "TTL exhausted" in daemon.log() or stored(client)[COST] == new,
            what="the writer meeting the split slot",
        )
        migration.move_keys()
        migration.finish()
        converge(client, lambda: disk_assets(root), what="the edit once the slot moved")
    assert reader.problems == [] and reader.calls > 0
    assert cluster.node_for_key(ks.blob(COST)) is dst and dst.client().exists(ks.blob(COST))
    (root / moving[0]).unlink()  # the daemon's slot map is stale now: MOVED
    converge(client, lambda: disk_assets(root), what="a delete after the slot moved")
    status = cli("status", valkey.url, root)
    assert status.returncode == 0 and status.stdout.endswith("status: in sync\n"), status.stdout
    assert daemon.proc.poll() is None


def test_a_hydrate_meeting_a_slot_stuck_half_migrated_gives_up_with_exit_3(valkey, root):
    """A resharding tool that died mid-slot: a commit there gets TRYAGAIN forever."""
    cluster: Cluster = valkey.cluster
    ks = Keyspace()
    assert cli("hydrate", valkey.url, root).returncode == 0
    slot = key_slot(ks.blob(COST).encode())
    src = cluster.node_for_key(ks.blob(COST))
    dst = next(p for p in cluster.primaries() if p is not src)
    migration = cluster.begin_migration(slot, src, dst)
    migrate(src, dst, [ks.fence(slot)])
    new = bump(root / COST, "2.0.0")
    stuck = cli("hydrate", valkey.url, root, "--connect-timeout", "1", deadline=20)
    one_line_error(stuck, 3, "Valkey")
    migration.move_keys()
    migration.finish()
    done = cli("hydrate", valkey.url, root)
    assert done.returncode == 0 and "updated=1" in done.stderr, done.stderr
    assert stored(valkey.client())[COST] == new


def test_a_primary_killed_and_its_replica_promoted_under_the_daemon(
    make_cluster, root, start_daemon
):
    cluster: Cluster = make_cluster(replicas=1)  # of its own, with replicas
    client = cluster.client()
    daemon = start_daemon(root, url=cluster.seed_url)
    owner = cluster.node_for_key(f"asset:blob:{COST}")
    replica = cluster.replicas_of(owner)[0]

    owner.kill()
    while_down = bump(root / COST, "2.0.0")  # its blob's slot has no primary right now
    wait_until(lambda: cluster.me(replica).role == "primary", 20, "the replica promoted")
    cluster.wait_ok()
    converge(client, lambda: disk_assets(root), 30, "the edit made while the primary was down")
    assert stored(client)[COST] == while_down
    wait_for(lambda: "run_id changed" in daemon.log(), 10, what="the failover noticed")
    later = root / "weights" / "later.json"
    later.write_bytes(weights("later"))
    converge(client, lambda: disk_assets(root), what="an edit after the failover")
    assert metric(daemon, "assetmgr_rescans_total", reason="requested") >= 1


def test_nodes_restarted_empty_are_restored_exactly_and_the_lease_survives_its_node(
    valkey, root, start_daemon
):
    cluster: Cluster = valkey.cluster
    client = valkey.client()
    ks = Keyspace()
    assert cli("hydrate", valkey.url, root).returncode == 0  # the daemon's epoch will be 2
    daemon = start_daemon(root)
    keeper = {cluster.node_for_key(ks.lease), cluster.node_for_key(ks.sync_marker)}
    victim = next(p for p in cluster.primaries() if p not in keeper)
    witness = next(p for p in cluster.primaries() if p is not victim)
    lost = {
        p
        for p in disk_assets(root)
        if victim in (cluster.node_for_key(ks.blob(p)), cluster.node_for_key(ks.manifest(p)))
    }
    assert lost and lost != set(disk_assets(root))
    before = manifests(client)

    with subscribe(witness.client()) as published:
        cluster.restart_empty(victim)
        converge(client, lambda: disk_assets(root), 30, "the lost assets restored")
        wait_for(lambda: set(published.items) >= lost, 10, what="a publish per restored asset")
    assert sorted(published.items) == sorted(lost)  # and nothing else was rewritten
    after = manifests(client)
    assert {p: after[p] for p in before if p not in lost} == {
        p: before[p] for p in before if p not in lost
    }
    assert "run_id changed" in daemon.log()

    # Now the node of the lease and its epoch counter: the fences elsewhere keep epoch 2.
    holder = cluster.node_for_key(ks.lease)
    cluster.restart_empty(holder)
    wait_for(
        lambda: daemon.log().count("holding the writer lease") == 2,
        30,
        what="the daemon taking the lease again, past the fences",
    )
    assert "epoch counter was behind the fences" in daemon.log()
    later = bump(root / COST, "4.0.0")
    converge(client, lambda: disk_assets(root), 30, "an edit after the lease's node restarted")
    assert stored(client)[COST] == later
    assert int(client.get(ks.epoch)) > 2
    assert metric(daemon, "assetmgr_leader") == 1
