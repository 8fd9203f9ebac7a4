"""Least privilege end to end: the shipped Valkey ACL (systemd/valkey-users.acl) is what these
tests run with.

The scenarios of test_hydrate.py, test_status.py, test_daemon_basic.py and test_observability.py
imported below run here again, unchanged, against a server that loads the shipped ACL: the
`valkey` fixture of this module overrides conftest's, so their `valkey.url` logs in as the
`assetmgr` user and their consumer clients (`valkey.reader_url`) as `asset-reader`, while their
assertions read as a test-only admin. After every test, Valkey's ACL LOG must be empty: every
command assetmgr and the shipped client sent was allowed. The tests at the end show what each
user must not do.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from test_daemon_basic import test_edit_and_delete_propagate_then_sigterm_exits_zero  # noqa: F401
from test_hydrate import (  # noqa: F401
    test_a_broken_file_never_in_valkey_is_reported_and_not_written,
    test_client_get_and_get_many,
    test_client_watch_resyncs_then_follows_updates_and_reconnects,
    test_dry_run_prints_the_plan_and_writes_nothing,
    test_edit_delete_add_break_writes_exactly_those_changes,
    test_get_prints_exactly_the_file_bytes,
    test_hydrate_repairs_a_blob_that_no_longer_matches_its_manifest,
    test_hydrate_stores_every_asset_with_its_manifest_and_one_publish,
    test_no_prune_keeps_the_keys_of_deleted_files,
    test_prune_of_more_than_half_is_refused_unless_allowed,
    test_second_hydrate_of_an_unchanged_tree_writes_and_publishes_nothing,
)
from test_observability import (  # noqa: F401
    test_one_edit_is_one_write_one_propagation_and_its_bytes,
    test_readyz_is_503_while_valkey_is_down_and_200_when_it_is_back,
)
from test_status import (  # noqa: F401
    synced,
    test_a_freshly_hydrated_tree_is_in_sync,
    test_every_kind_of_drift_lands_in_its_category,
)

from assetmgr.client import AssetClient
from assetmgr.store.connection import Endpoint
from conftest import (
    MANAGER_PASSWORD,
    READER_PASSWORD,
    REPO,
    SCHEMAS,
    Valkey,
    disk_assets,
    run_cli,
    start_acl_valkey,
    stored,
)

ACL_FILE = REPO / "systemd" / "valkey-users.acl"


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[Valkey]:
    """This module's Valkey: the shipped ACL; its ACL LOG is empty after the test."""
    handle = start_acl_valkey(tmp_path)
    try:
        yield handle
        denied = handle.client().acl_log()
        assert denied == [], "commands the ACL refused:\n" + "\n".join(
            f"{e.get('username')}: {e.get('reason')} {e.get('object')!r}" for e in denied
        )
    finally:
        handle.server._cleanup()


def _rules(user: str) -> str:
    line = next(line for line in ACL_FILE.read_text().splitlines() if f"user {user} " in line)
    return line


def test_the_shipped_file_grants_no_category_wholesale():
    """Not +@all, and not +@connection either: it holds CLIENT KILL, CLIENT PAUSE."""
    for user in ("assetmgr", "asset-reader"):
        rules = _rules(user).split()
        assert "-@all" in rules and "resetkeys" in rules and "resetchannels" in rules
        assert not [r for r in rules if r.startswith("+@")], rules
        assert "&asset_updates" in rules and not [r for r in rules if r in ("allkeys", "~*")]


def test_the_manager_cannot_reach_outside_its_keys_channel_and_commands(valkey: Valkey):
    manager = redis.Redis(port=valkey.port, username="assetmgr", password=MANAGER_PASSWORD)
    refused = [
        lambda: manager.set("session:1", b"x"),
        lambda: manager.get("billing:42"),
        lambda: manager.publish("other_channel", "x"),
        lambda: manager.eval("return redis.call('SET', 'session:1', 'x')", 0),
        lambda: manager.flushall(),
        lambda: manager.config_set("appendonly", "no"),
        lambda: manager.keys("*"),
        lambda: manager.client_kill_filter(_type="normal"),
        lambda: manager.client_pause(1000),
        lambda: manager.execute_command("SCRIPT", "FLUSH"),
    ]
    for attempt in refused:
        with pytest.raises(redis.ResponseError, match=r"(?i)permission"):
            attempt()
    assert manager.set("assetmgr:probe", b"1") is True  # its own bookkeeping prefix
    entries = valkey.client().acl_log(count=50)
    assert sum(e["count"] for e in entries) == len(refused)
    assert {e["username"] for e in entries} == {"assetmgr"}
    valkey.client().acl_log_reset()


def test_the_reader_can_read_and_subscribe_but_not_write_or_publish(valkey: Valkey, root):
    result = run_cli(
        "hydrate", "--root", root, "--schemas", SCHEMAS, "--valkey-url", valkey.url
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    reader = redis.Redis(port=valkey.port, username="asset-reader", password=READER_PASSWORD)
    asset = AssetClient(reader).get("weights/cost.json")
    assert asset is not None and asset.data == (root / "weights/cost.json").read_bytes()
    refused = [
        lambda: reader.set("asset:blob:weights/cost.json", b"x"),
        lambda: reader.hset("v4:manifest:weights/cost.json", "hash", "0"),
        lambda: reader.delete("asset:blob:weights/cost.json"),
        lambda: reader.publish("asset_updates", "weights/cost.json"),
        lambda: reader.eval("return 1", 0),
        lambda: reader.set("assetmgr:lease", b"mine"),
        lambda: reader.info(),
        lambda: reader.client_kill_filter(_type="normal"),
    ]
    for attempt in refused:
        with pytest.raises(redis.ResponseError, match=r"(?i)permission"):
            attempt()
    assert stored(valkey.client()) == disk_assets(root)  # nothing it tried landed
    assert sum(e["count"] for e in valkey.client().acl_log(count=50)) == len(refused)
    valkey.client().acl_log_reset()


def test_credentials_from_a_password_file_with_the_user_in_the_url(valkey: Valkey, root, tmp_path):
    password_file = tmp_path / "valkey-password"
    password_file.write_text(MANAGER_PASSWORD + "\n")
    url = f"redis://assetmgr@127.0.0.1:{valkey.port}/0"
    hydrate = ["hydrate", "--root", root, "--schemas", SCHEMAS]
    result = run_cli(*hydrate, "--valkey-url", url, "--valkey-password-file", password_file)
    assert result.returncode == 0, result.stderr
    assert stored(valkey.client()) == disk_assets(root)

    reader = Endpoint(f"redis://asset-reader@127.0.0.1:{valkey.port}/0", READER_PASSWORD)
    assert AssetClient.from_url(reader).paths() == sorted(disk_assets(root))

    # The reader's credentials cannot hydrate: refused at the first write, exit 3.
    as_reader = run_cli(*hydrate, "--valkey-url", valkey.reader_url, "--no-prune")
    assert as_reader.returncode == 3, as_reader.stderr
    assert "permission" in as_reader.stderr.lower() and READER_PASSWORD not in as_reader.stderr
    valkey.client().acl_log_reset()
