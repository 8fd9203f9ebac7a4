"""The topology fixtures do what they say: a real Valkey Cluster and a real Sentinel group, and
the faults they inflict (slot migration, failover, empty restart, cluster_state:fail) are real."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError
from topology import wait_until
from topology_cluster import SLOTS, Cluster
from topology_sentinel import MASTER, SentinelGroup


def test_cluster_has_three_primaries_covering_all_slots_and_keys_land_on_their_owner(
    valkey_cluster: Cluster,
) -> None:
    topology = valkey_cluster.topology()
    primaries = [i for i in topology if i.role == "primary"]
    assert len(primaries) == 3 and len(topology) == 3
    owned = sorted(s for p in primaries for lo, hi in p.slots for s in range(lo, hi + 1))
    assert owned == list(range(SLOTS))
    assert [valkey_cluster.state(n) for n in valkey_cluster.nodes] == ["ok"] * 3

    rc = valkey_cluster.client()
    keys = [f"route:{i}" for i in range(30)]
    for key in keys:
        rc.set(key, key)
    owners = set()
    for key in keys:
        owner = valkey_cluster.node_for_key(key)
        owners.add(owner.port)
        assert rc.get_node_from_key(key).port == owner.port
        assert owner.client().get(key) == key.encode()
        for other in valkey_cluster.nodes:
            if other is not owner:
                with pytest.raises(MovedError):
                    other.client().get(key)
    assert len(owners) == 3


def test_a_migration_in_flight_answers_ask_and_moved_and_redis_cluster_follows(
    valkey_cluster: Cluster,
) -> None:
    cluster = valkey_cluster
    rc = cluster.client()
    keys = [f"{{mig}}{i}" for i in range(20)]
    for key in keys:
        rc.set(key, key)
    src = cluster.node_for_key("{mig}")
    dst = next(n for n in cluster.primaries() if n is not src)
    slot = key_slot(b"{mig}")

    migration = cluster.begin_migration(slot, src, dst)
    assert migration.move_keys(limit=10) == 10 and migration.keys_left() == 10
    held = set(src.admin.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100))
    moved = [k for k in keys if k not in held]
    with pytest.raises(AskError) as ask:
        src.client().get(moved[0])
    assert ask.type is AskError  # MovedError subclasses AskError: check the exact class
    with pytest.raises(MovedError):
        dst.client().get(sorted(held)[0])
    assert cluster.node_for_key("{mig}") is src
    assert [rc.get(k) for k in keys] == [k.encode() for k in keys]
    rc.set("{mig}new", "during")  # not on src any more: src sends it on with ASK

    migration.move_keys()
    migration.finish()
    assert cluster.node_for_key("{mig}") is dst
    with pytest.raises(MovedError):
        src.client().get(keys[0])
    assert dst.client().get("{mig}new") == b"during"
    assert [rc.get(k) for k in keys] == [k.encode() for k in keys]  # its slot map was stale
    assert rc.get_node_from_key("{mig}").port == dst.port


def test_cluster_failover_promotes_the_replica_and_the_old_primary_rejoins_as_its_replica(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(replicas=1)
    topology = cluster.topology()
    assert sorted(i.role for i in topology) == ["primary"] * 3 + ["replica"] * 3
    rc = cluster.client()
    owner = cluster.node_for_key("fo")
    replica = cluster.replicas_of(owner)[0]
    pipe = owner.client().pipeline(transaction=False)
    pipe.set("fo", "kept").wait(1, 5000)
    assert pipe.execute() == [True, 1]

    promoted = cluster.failover(owner)
    assert promoted is replica and not owner.alive
    assert cluster.node_for_key("fo") is replica
    assert rc.get("fo") == b"kept"  # the client created before the failover follows it

    cluster.restart_empty(owner)
    me = cluster.me(owner)
    assert me.role == "replica" and me.primary_id == cluster.me(replica).node_id
    reader = owner.client(single_connection_client=True)
    reader.execute_command("READONLY")
    assert wait_until(lambda: reader.get("fo") == b"kept", 10, "resync of the old primary")


def test_restart_empty_keeps_the_slots_with_or_without_a_new_identity(
    valkey_cluster: Cluster,
) -> None:
    cluster = valkey_cluster
    rc = cluster.client()
    keys = [f"re:{i}" for i in range(30)]
    for key in keys:
        rc.set(key, key)
    victim = cluster.node_for_key(keys[0])
    before = cluster.me(victim)
    elsewhere = [k for k in keys if cluster.node_for_key(k) is not victim]

    cluster.restart_empty(victim)
    after = cluster.me(victim)
    assert (after.node_id, after.slots) == (before.node_id, before.slots)
    assert victim.client().dbsize() == 0
    assert [rc.get(k) for k in elsewhere] == [k.encode() for k in elsewhere]

    cluster.restart_empty(victim, new_identity=True)
    replaced = cluster.me(victim)
    assert replaced.node_id != before.node_id and replaced.slots == before.slots
    assert before.node_id not in {i.node_id for i in cluster.topology()}
    rc.set(keys[0], "again")
    assert victim.client().get(keys[0]) == b"again"


def test_force_fail_state_makes_the_surviving_nodes_refuse_commands(
    valkey_cluster: Cluster,
) -> None:
    victim = valkey_cluster.force_fail_state()
    survivors = valkey_cluster.alive()
    assert victim not in survivors and len(survivors) == 2
    assert [valkey_cluster.state(n) for n in survivors] == ["fail", "fail"]
    key = next(
        f"down:{i}" for i in range(100) if valkey_cluster.node_for_key(f"down:{i}") is survivors[0]
    )
    with pytest.raises(ClusterDownError):
        survivors[0].client().get(key)


def test_sentinel_names_the_primary_and_a_client_follows_a_crash_failover(
    valkey_sentinel: SentinelGroup,
) -> None:
    group = valkey_sentinel
    first, second = group.data
    assert group.primary() is first and group.replica() is second
    assert group.sentinel().discover_master(MASTER) == ("127.0.0.1", first.port)
    assert group.url.startswith("redis+sentinel://127.0.0.1:") and group.url.endswith("/mymaster/0")
    client = group.client()
    pipe = client.pipeline(transaction=False)
    pipe.set("k", "v").wait(1, 5000)
    assert pipe.execute() == [True, 1]

    assert group.failover("kill") is second
    assert group.sentinel().discover_master(MASTER) == ("127.0.0.1", second.port)
    assert client.get("k") == b"v" and client.set("after", "1")
    assert second.client().get("after") == b"1"

    group.restart(first)  # back empty, claiming to be a primary: the sentinels demote it

    def demoted() -> bool:
        info = first.admin.info("replication")
        return info["role"] == "slave" and info.get("master_port") == second.port

    wait_until(demoted, 15, "the old primary to become a replica of the new one")
    group.wait_ready()
    assert first.client().get("k") == b"v"


def test_sentinel_failover_command_swaps_the_roles(valkey_sentinel: SentinelGroup) -> None:
    group = valkey_sentinel
    first, second = group.data
    assert group.failover("command") is second
    wait_until(lambda: first.admin.info("replication")["role"] == "slave", 15, "demotion")
    with pytest.raises(redis.ReadOnlyError):
        first.client().set("x", 1)
    assert group.client().set("x", 1) and second.client().get("x") == b"1"
