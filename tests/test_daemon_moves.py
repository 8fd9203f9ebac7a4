"""Issue 3, scenarios 11-16: files, directories, the root and symlinks moved as real tools do.

Each test starts the daemon on a real Valkey, acts on the tree with the tool (`mv`, `rm -rf`,
`ln`, a kubelet-style swap, a Capistrano deploy), waits for convergence and asserts that Valkey
holds exactly the valid assets on disk. Where symlinked directories are involved the expectation
is written out, because `disk_assets` (rglob) does not follow them while the daemon does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from conftest import (
    EXAMPLES,
    Daemon,
    barrier,
    converge,
    disk_assets,
    manifests,
    stored,
    subscribe,
    wait_for,
)


def weights(name: str, version: str = "1.0.0") -> bytes:
    """A valid `weights/` asset."""
    doc = {"version": version, "name": name, "unit": "score", "weights": {"base": 1}}
    return json.dumps(doc, indent=2).encode() + b"\n"


def document(**fields: object) -> bytes:
    """A valid asset for any path that falls back to the `_default` schema (a JSON object)."""
    return json.dumps(fields).encode() + b"\n"


def run(*argv: str | os.PathLike[str], cwd: Path | None = None) -> None:
    subprocess.run([str(a) for a in argv], check=True, cwd=cwd)


def mv(*argv: str | os.PathLike[str], cwd: Path | None = None) -> None:
    run("mv", *argv, cwd=cwd)


def logged(daemon: Daemon, *words: str) -> bool:
    """Does one line of the daemon's log contain every word?"""
    return any(all(w in line for w in words) for line in daemon.log().splitlines())


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# -- 11. files moved in, out and within; a rename chain; a swap through a temp name -------------


def test_mv_of_a_file_in_out_and_within_the_tree(valkey, root, tmp_path, start_daemon):
    outside = tmp_path / "outside"
    write(outside / "bonus.json", weights("bonus"))
    client = valkey.client()
    start_daemon(root)

    mv(outside / "bonus.json", root / "weights" / "bonus.json")
    mv(root / "routes" / "api.json", outside / "api.json")
    mv(root / "cards" / "core" / "fireball.json", root / "cards" / "decks" / "promo")

    converge(client, lambda: disk_assets(root), what="moves in, out and within")
    held = stored(client)
    assert held["weights/bonus.json"] == weights("bonus")
    assert "routes/api.json" not in held
    assert "cards/core/fireball.json" not in held
    assert "cards/decks/promo/fireball.json" in held


def test_rename_chain_a_b_c_leaves_only_c(valkey, root, start_daemon):
    client = valkey.client()
    start_daemon(root)
    write(root / "a.json", document(name="chain"))
    wait_for(lambda: "a.json" in stored(client), what="a.json in Valkey")

    mv("a.json", "b.json", cwd=root)
    mv("b.json", "c.json", cwd=root)

    converge(client, lambda: disk_assets(root), what="a -> b -> c")
    held = stored(client)
    assert held["c.json"] == document(name="chain")
    assert "a.json" not in held and "b.json" not in held


def test_swap_of_two_files_through_a_temp_name(valkey, root, start_daemon):
    client = valkey.client()
    start_daemon(root)
    cost = (root / "weights" / "cost.json").read_bytes()
    matchmaking = (root / "weights" / "matchmaking.json").read_bytes()

    with subscribe(client) as published:
        mv("cost.json", "swap.tmp", cwd=root / "weights")
        mv("matchmaking.json", "cost.json", cwd=root / "weights")
        mv("swap.tmp", "matchmaking.json", cwd=root / "weights")
        converge(client, lambda: disk_assets(root), what="two files swapped")

    held = stored(client)
    assert held["weights/cost.json"] == matchmaking
    assert held["weights/matchmaking.json"] == cost
    # One commit each, and it is the upsert: neither key was deleted on the way.
    assert sorted(published.items) == ["weights/cost.json", "weights/matchmaking.json"]


# -- 12. directories moved within, in and out ---------------------------------------------------


def test_directory_moved_within_the_tree_then_written_into(valkey, root, start_daemon):
    client = valkey.client()
    start_daemon(root)
    zones = root / "weights" / "zones"

    mv(root / "weights" / "regions", zones)
    write(zones / "eu" / "latency.json", weights("latency", "2.0.0"))
    write(zones / "apac" / "latency.json", weights("latency", "1.0.0"))

    converge(client, lambda: disk_assets(root), what="renamed directory and writes into it")
    held = stored(client)
    assert not [p for p in held if p.startswith("weights/regions/")]
    assert held["weights/zones/eu/latency.json"] == weights("latency", "2.0.0")
    assert "weights/zones/us/latency.json" in held

    # The moved directory is watched under its new name: a later edit arrives too.
    write(zones / "us" / "latency.json", weights("latency", "3.0.0"))
    converge(client, lambda: disk_assets(root), what="later edit in the renamed directory")


def test_directory_moved_in_from_outside(valkey, root, tmp_path, start_daemon):
    pack = tmp_path / "outside" / "pack"
    write(pack / "intro.json", document(title="intro"))
    write(pack / "levels" / "one.json", document(level=1))
    write(pack / "levels" / "deep" / "two.json", document(level=2))
    client = valkey.client()
    start_daemon(root)

    mv(pack, root / "pack")

    converge(client, lambda: disk_assets(root), what="directory moved in")
    assert {"pack/intro.json", "pack/levels/one.json", "pack/levels/deep/two.json"} <= set(
        stored(client)
    )

    write(root / "pack" / "levels" / "deep" / "three.json", document(level=3))
    converge(client, lambda: disk_assets(root), what="write into the moved-in directory")


def test_directory_moved_out_and_written_to_afterwards(valkey, root, tmp_path, start_daemon):
    client = valkey.client()
    start_daemon(root)
    edge = tmp_path / "outside" / "edge"
    edge.parent.mkdir()

    mv(root / "routes" / "edge", edge)
    (edge / "cdn.json").write_bytes((edge / "cdn.json").read_bytes().replace(b"1", b"2", 1))
    write(edge / "new.json", document(stray=True))
    write(edge / "eu" / "deeper" / "more.json", document(stray=True))
    (edge / "eu" / "failover.json").unlink()
    # Events are read in order: once this is in Valkey, the writes above were seen too.
    write(root / "sentinel.json", document(after="move out"))

    wait_for(lambda: "sentinel.json" in stored(client), what="sentinel in Valkey")
    converge(client, lambda: disk_assets(root), what="directory moved out")
    assert not [p for p in stored(client) if p.startswith("routes/edge")]


# -- 13. rm -rf of a subtree --------------------------------------------------------------------


def test_rm_rf_of_a_subtree_deletes_its_keys_only(valkey, root, start_daemon):
    client = valkey.client()
    start_daemon(root)
    before = manifests(client)
    doomed = sorted(p for p in before if p.startswith("cards/"))
    assert len(doomed) > 5

    with subscribe(client) as published:
        run("rm", "-rf", root / "cards")
        converge(client, lambda: disk_assets(root), what="cards/ removed")

    after = manifests(client)
    assert not [p for p in after if p.startswith("cards/")]
    assert after == {p: m for p, m in before.items() if not p.startswith("cards/")}  # untouched
    assert sorted(published.items) == doomed


# -- 14. the root itself replaced or removed ----------------------------------------------------


def new_generation(target: Path) -> Path:
    """The example tree, one release later: an edit, a removal and an addition.

    Most paths are kept: a new root that shares less than half of the stored assets is a mass
    deletion the guard refuses (max_prune_ratio), which is not what these scenarios are about.
    """
    shutil.copytree(EXAMPLES, target)
    cost = target / "weights" / "cost.json"
    cost.write_bytes(cost.read_bytes().replace(b'"version": "1.4.0"', b'"version": "1.5.0"'))
    (target / "routes" / "api.json").unlink()
    write(target / "weights" / "bonus.json", weights("bonus"))
    return target


def test_root_renamed_away_and_replaced_by_another_directory(valkey, root, tmp_path, start_daemon):
    incoming = new_generation(tmp_path / "incoming")
    client = valkey.client()
    daemon = start_daemon(root)

    mv(root, tmp_path / "assets.old")
    mv(incoming, root)

    converge(client, lambda: disk_assets(root), what="Valkey = the new root")
    held = stored(client)
    assert "routes/api.json" not in held
    assert b'"1.5.0"' in held["weights/cost.json"]
    assert logged(daemon, "root", "keeping every key"), "no alarm for the lost root"

    # The new root is watched, not the old one that moved away.
    (tmp_path / "assets.old" / "settings.json").write_bytes(document(old=True))
    write(root / "weights" / "late.json", weights("late"))
    converge(client, lambda: disk_assets(root), what="edit in the new root")


def test_root_removed_keeps_keys_then_recreated_reconciles(valkey, root, tmp_path, start_daemon):
    staging = new_generation(tmp_path / "staging")
    client = valkey.client()
    daemon = start_daemon(root)
    before = stored(client)

    with subscribe(client) as published:
        run("rm", "-rf", root)
        wait_for(
            lambda: logged(daemon, f"root {root} does not exist; keeping every key"),
            what="root-lost alarm in the log",
        )
        assert stored(client) == before

        daemon.freeze()  # the daemon sees the new root whole, not a half-done copy
        try:
            run("cp", "-r", staging, root)
        finally:
            daemon.thaw()
        converge(client, lambda: disk_assets(root), what="Valkey = the recreated root")
        # Every delete decided while the root was gone was sent before the barrier's marker,
        # and would have been re-added since: a publish either way.
        barrier(daemon, root)
    changed = ["routes/api.json", "weights/bonus.json", "weights/cost.json"]
    assert sorted(set(published.items)) == changed, "keys deleted while the root was gone"

    assert "routes/api.json" not in stored(client)
    write(root / "weights" / "late.json", weights("late"))
    converge(client, lambda: disk_assets(root), what="edit in the recreated root")


# -- 15. Kubernetes ConfigMap volume ------------------------------------------------------------


def kubelet_payload(root: Path, version: str, app: bytes, x: bytes) -> str:
    """Write a timestamped payload directory the way kubelet's AtomicWriter does."""
    name = f"..2026_01_0{version}_v{version}"
    write(root / name / "app.json", app)
    write(root / name / "nested" / "x.json", x)
    return name


def test_configmap_data_symlink_swap(valkey, tmp_path, start_daemon):
    root = tmp_path / "configmap"
    root.mkdir()
    v1 = kubelet_payload(root, "1", document(app=1), document(x=1))
    os.symlink(v1, root / "..data")
    os.symlink("..data/app.json", root / "app.json")
    os.symlink("..data/nested", root / "nested")
    client = valkey.client()
    start_daemon(root)
    assert stored(client) == {"app.json": document(app=1), "nested/x.json": document(x=1)}

    v2 = kubelet_payload(root, "2", document(app=2), document(x=2))
    os.symlink(v2, root / "..data_tmp")
    os.rename(root / "..data_tmp", root / "..data")
    shutil.rmtree(root / v1)

    expected = {"app.json": document(app=2), "nested/x.json": document(x=2)}
    converge(client, lambda: expected, what="both ConfigMap keys updated")
    assert not [p for p in stored(client) if ".." in p]
    assert not [p for p in manifests(client) if ".." in p]


# -- 16. symlink swaps: a file symlink with ln -sfn, a Capistrano release -----------------------


def test_ln_sfn_swap_of_a_file_symlink(valkey, root, start_daemon):
    write(root / "weights" / "pool" / "cost-2025.json", weights("cost", "2025.0.0"))
    write(root / "weights" / "pool" / "cost-2026.json", weights("cost", "2026.0.0"))
    os.symlink("pool/cost-2025.json", root / "weights" / "live.json")
    client = valkey.client()
    start_daemon(root)
    assert stored(client)["weights/live.json"] == weights("cost", "2025.0.0")

    run("ln", "-sfn", "pool/cost-2026.json", "live.json", cwd=root / "weights")

    converge(client, lambda: disk_assets(root), what="live.json follows the new target")
    assert stored(client)["weights/live.json"] == weights("cost", "2026.0.0")


def test_capistrano_current_symlink_swap(valkey, root, start_daemon):
    app = root / "app"
    write(app / "releases" / "1" / "a.json", document(a=1))
    write(app / "releases" / "1" / "b.json", document(b=1))
    os.symlink("releases/1", app / "current")
    client = valkey.client()
    start_daemon(root)

    def expected(release: str) -> dict[str, bytes]:
        assets = disk_assets(root)  # releases/*; add what the daemon sees through `current`
        for path in (app / "releases" / release).glob("*.json"):
            assets[f"app/current/{path.name}"] = path.read_bytes()
        return assets

    converge(client, lambda: expected("1"), what="release 1 through current")

    # `cap deploy`: upload the release, then `deploy:symlink:release` as Capistrano 3 runs it.
    write(app / "releases" / "2" / "a.json", document(a=2))
    write(app / "releases" / "2" / "c.json", document(c=2))
    run("ln", "-s", app / "releases" / "2", app / "releases" / "current")
    mv(app / "releases" / "current", app)

    converge(client, lambda: expected("2"), what="release 2 through current")
    held = stored(client)
    assert held["app/current/a.json"] == document(a=2)
    assert "app/current/b.json" not in held
    assert "app/releases/1/b.json" in held
    assert not [p for p in held if p.startswith("app/releases/current")]
