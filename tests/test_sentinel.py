"""Issue 9 under Valkey Sentinel: a daemon through `redis+sentinel://`, failovers, bad master
names, and `min_replicas_ack` (a batch counts as committed once a replica has it)."""

from __future__ import annotations

import pytest
from scaleout import COST, bump, cli, idle, metric, one_line_error, weights
from topology import free_ports, wait_until
from topology_sentinel import SentinelGroup

from conftest import SCHEMAS, converge, disk_assets, run_cli, stored, subscribe, wait_for

LATER = "weights/later.json"


def test_the_daemon_follows_a_failover_and_an_edit_made_while_the_primary_was_down_arrives(
    valkey_sentinel: SentinelGroup, root, start_daemon
):
    group = valkey_sentinel
    daemon = start_daemon(root, url=group.url)
    old, new = group.primary(), group.replica()
    assert stored(old.client()) == disk_assets(root)

    old.kill()
    while_down = bump(root / COST, "2.0.0")  # no primary takes writes right now
    wait_until(lambda: group.reported() == {new.port}, 30, "the sentinels to name the replica")
    converge(new.client(), lambda: disk_assets(root), 30, "the edit on the new primary")
    assert stored(new.client())[COST] == while_down
    wait_for(lambda: "run_id changed" in daemon.log(), 10, what="the failover noticed")
    assert metric(daemon, "assetmgr_rescans_total", reason="requested") >= 1

    (root / LATER).write_bytes(weights("later"))
    (root / "settings.json").unlink()
    converge(new.client(), lambda: disk_assets(root), what="edits after the failover")
    assert metric(daemon, "assetmgr_valkey_up") == 1


def test_bad_sentinel_urls_are_one_line_errors_and_nothing_is_deleted(
    valkey_sentinel: SentinelGroup, root
):
    group = valkey_sentinel
    assert cli("hydrate", group.url, root).returncode == 0
    primary = group.primary().client()
    before = stored(primary)
    (root / "settings.json").unlink()  # a prune would delete it
    unknown = group.url.replace("/mymaster/", "/nope/")
    nobody = "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in free_ports(2)) + "/mymaster"
    for url, code, words in (
        (unknown, 2, ("configuration error", "no master 'nope'")),
        (nobody, 3, ("no sentinel answered",)),
    ):
        for command, tree, extra in (
            ("hydrate", root, ()),
            ("status", root, ()),
            ("get", None, (COST,)),
        ):
            result = cli(command, url, tree, *extra, "--connect-timeout", "1", deadline=10)
            one_line_error(result, code, *words)
    assert stored(primary) == before


def test_hydrate_with_min_replicas_ack_and_its_replica_gone_exits_3_within_the_timeout(
    valkey_sentinel: SentinelGroup, root
):
    group = valkey_sentinel
    group.kill(group.replica())
    result = run_cli(
        "hydrate", "--root", root, "--schemas", SCHEMAS, "--valkey-url", group.url,
        "--min-replicas-ack", "1", "--replicas-ack-timeout", "0.2", "--connect-timeout", "2",
        timeout=20,  # a deadline a few times the connect timeout, not a measurement
    )  # fmt: skip
    one_line_error(result, 3, "fewer than 1 replicas acknowledged")


@pytest.mark.timeout(180)
def test_unacknowledged_batches_are_retried_until_a_replica_has_them_and_survive_a_failover(
    valkey_sentinel: SentinelGroup, root, start_daemon
):
    group = valkey_sentinel
    ack = ("--min-replicas-ack", "1", "--replicas-ack-timeout", "0.2")
    daemon = start_daemon(root, *ack, url=group.url)
    primary, replica = group.primary(), group.replica()

    # The only replica is gone: the edit reaches the primary, but does not count as committed.
    replica.kill()
    new = bump(root / COST, "2.0.0")
    wait_for(lambda: stored(primary.client()).get(COST) == new, what="the edit on the primary")
    wait_for(
        lambda: metric(daemon, "assetmgr_replica_ack_failures_total") >= 3,
        what="unacknowledged batches counted and retried",
    )
    assert "updated path=weights/cost.json" not in daemon.log()

    group.restart(replica)  # back empty: it resyncs from the primary
    wait_for(
        lambda: "updated path=weights/cost.json" in daemon.log(),
        30,
        what="the batch acknowledged once the replica is back",
    )
    idle(daemon)
    failures = metric(daemon, "assetmgr_replica_ack_failures_total")
    assert stored(replica.client()).get(COST) == new

    # Durability: once a commit counts, a failover right after it loses nothing.
    group.wait_ready()
    with subscribe(primary.client()) as published:
        (root / LATER).write_bytes(weights("later"))
        wait_for(lambda: LATER in published.items, what="the PUBLISH of the new asset")
        # The publish comes from inside the commit script, before WAIT: the commit counts
        # (and is logged) only once a replica acknowledged it.
        wait_for(lambda: f"added path={LATER}" in daemon.log(), what="the commit acknowledged")
    assert metric(daemon, "assetmgr_replica_ack_failures_total") == failures
    daemon.freeze()
    primary.kill()
    wait_until(lambda: group.reported() == {replica.port}, 30, "the sentinels to name the replica")
    assert stored(replica.client()).get(LATER) == (root / LATER).read_bytes()
