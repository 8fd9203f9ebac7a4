"""The daemon hydrates, propagates an edit and a delete, and stops cleanly on SIGTERM."""

import signal

import pytest

from conftest import disk_assets, stored, subscribe, wait_for


@pytest.mark.topologies()
def test_edit_and_delete_propagate_then_sigterm_exits_zero(valkey, root, start_daemon):
    client = valkey.client()
    daemon = start_daemon(root)
    assert stored(client) == disk_assets(root)

    with subscribe(client) as published:
        cost = root / "weights" / "cost.json"
        cost.write_bytes(cost.read_bytes().replace(b'"version": "', b'"version": "9', 1))
        (root / "settings.json").unlink()
        wait_for(lambda: stored(client) == disk_assets(root), what="edit and delete in Valkey")
    assert sorted(published.items) == ["settings.json", "weights/cost.json"]

    assert daemon.stop(signal.SIGTERM) == 0
    assert "stopped" in daemon.log()
