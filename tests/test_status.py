"""`status`: a read-only comparison of the disk and Valkey that names every kind of drift."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zstandard

from conftest import SCHEMAS, disk_assets, monitor, run_cli

WRITES = {"SET", "HSET", "HDEL", "DEL", "UNLINK", "EVAL", "EVALSHA", "FCALL", "PUBLISH", "EXPIRE"}
CATEGORIES = (
    "would_add",
    "would_update",
    "would_delete",
    "invalid_on_disk",
    "blob_mismatch",
    "manifest_without_blob",
    "blob_without_manifest",
    "not_assets",
)


def status(valkey, root: Path, *extra: str):
    return run_cli(
        "status", "--root", root, "--schemas", SCHEMAS, "--valkey-url", valkey.url, *extra
    )


@pytest.fixture
def synced(valkey, root):
    result = run_cli("hydrate", "--root", root, "--schemas", SCHEMAS, "--valkey-url", valkey.url)
    assert result.returncode == 0, result.stderr
    return valkey.client()


def text_sections(text: str) -> dict[str, list[str]]:
    """`would add: 2` followed by indented paths → {"would_add": [paths]}."""
    sections: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("  "):
            sections[current].append(line.strip())
        else:
            title, _, count = line.partition(": ")
            current = title.replace(" ", "_")
            sections[current] = []
            sections[current + "#"] = [count]
    return sections


def test_a_freshly_hydrated_tree_is_in_sync(valkey, root, synced):
    with monitor(synced) as seen:
        result = status(valkey, root)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "in sync: 20\nstatus: in sync\n"
    as_json = json.loads(status(valkey, root, "--format", "json").stdout)
    assert as_json["in_sync"] is True and as_json["counts"] == {"in_sync": 20}
    assert all(as_json[c] in ([], {}) for c in CATEGORIES)
    assert [line for line in seen.items if line.split(" ", 1)[0] in WRITES] == []


@pytest.mark.topologies()
def test_every_kind_of_drift_lands_in_its_category(valkey, root, synced):
    zstd = zstandard.ZstdCompressor()
    client = synced
    # By hand on Valkey:
    client.set("asset:blob:weights/cost.json", zstd.compress(b'{"forged": true}'))
    client.delete("asset:blob:weights/drop_rates.json")  # manifest without blob
    client.delete("v4:manifest:weights/matchmaking.json")  # blob without manifest
    client.set("asset:blob:notes.txt", zstd.compress(b"not an asset"))
    client.hset("v4:manifest:.git/config.json", mapping={"hash": "0" * 64})
    # By hand on disk:
    (root / "cards" / "core" / "new_card.json").write_bytes(
        (root / "cards" / "core" / "fireball.json").read_bytes().replace(b"fireball", b"new_card")
    )
    edited = root / "routes" / "api.json"
    edited.write_bytes(edited.read_bytes().replace(b'"version": "', b'"version": "9'))
    (root / "weights" / "regions" / "us" / "latency.json").unlink()
    (root / "settings.json").write_bytes(b'{"a": 1, "a": 2}')

    expected = {
        "would_add": ["cards/core/new_card.json", "weights/matchmaking.json"],
        "would_update": ["routes/api.json"],
        "would_delete": ["weights/regions/us/latency.json"],
        "invalid_on_disk": {"settings.json": "duplicate object key 'a'"},
        "blob_mismatch": ["weights/cost.json"],
        "manifest_without_blob": ["weights/drop_rates.json"],
        "blob_without_manifest": ["weights/matchmaking.json"],
        "not_assets": [".git/config.json", "notes.txt"],
    }
    with monitor(client) as seen:
        text = status(valkey, root)
        as_json = status(valkey, root, "--format", "json")
    assert text.returncode == 1 and as_json.returncode == 1, text.stderr

    report = json.loads(as_json.stdout)
    assert report["in_sync"] is False
    assert {c: report[c] for c in CATEGORIES} == expected
    # Of the 20 files now on disk, the six with drift are not in sync; the rest are.
    assert report["counts"]["in_sync"] == 14
    assert report["counts"]["would_add"] == 2

    sections = text_sections(text.stdout)
    assert sections["status"] == [] and sections["status#"] == ["DRIFT"]
    assert sections["in_sync#"] == ["14"]
    for category, paths in expected.items():
        if isinstance(paths, dict):
            assert sections[category] == [f"{p}: {r}" for p, r in paths.items()]
        else:
            assert sections[category] == paths
        assert sections[category + "#"] == [str(len(paths))]

    assert [line for line in seen.items if line.split(" ", 1)[0] in WRITES] == []
    # Read-only: the drift is still all there.
    assert client.get("asset:blob:notes.txt") is not None
    assert "weights/regions/us/latency.json" not in disk_assets(root)
    assert client.exists("v4:manifest:weights/regions/us/latency.json")


def test_status_against_an_empty_valkey_would_add_everything(valkey, root):
    result = status(valkey, root, "--format", "json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["would_add"] == sorted(disk_assets(root))
    assert report["counts"] == {"in_sync": 0, "would_add": 20}


def test_status_with_a_key_prefix_reads_only_its_own_keys(valkey, root, synced):
    result = status(valkey, root, "--key-prefix", "other:", "--format", "json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["would_add"] == sorted(disk_assets(root))
