"""Hydrating the example tree into a real Valkey: every key right, one publish per asset."""

from conftest import (
    SCHEMAS,
    asset_writes,
    disk_assets,
    manifests,
    monitor,
    run_cli,
    sha256,
    stored,
    subscribe,
)


def test_hydrate_examples_then_rehydrate_writes_nothing(valkey, root):
    client = valkey.client()
    with subscribe(client) as published:
        first = run_cli("hydrate", "--root", root, "--schemas", SCHEMAS, "--valkey-url", valkey.url)
    assert first.returncode == 0, first.stderr
    on_disk = disk_assets(root)
    assert stored(client) == on_disk
    assert {p: m["hash"] for p, m in manifests(client).items()} == {
        p: sha256(b) for p, b in on_disk.items()
    }
    assert sorted(published.items) == sorted(on_disk)

    with monitor(client) as seen, subscribe(client) as again:
        second = run_cli(
            "hydrate", "--root", root, "--schemas", SCHEMAS, "--valkey-url", valkey.url
        )
    assert second.returncode == 0, second.stderr
    assert again.items == []
    assert asset_writes(seen.items) == []
