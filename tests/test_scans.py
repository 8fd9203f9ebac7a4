"""The one scan driver (`tree.chunks`) and the daemon's scans beside the watches, on real trees."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from assetmgr.pipeline import tree, watcher
from assetmgr.pipeline.watcher import Change, Kind, Watches


def make_tree(root: Path, count: int) -> list[str]:
    paths = []
    for i in range(count):
        rel = f"kind{i % 3}/sub{i % 2}/a{i:03}.json"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps({"n": i}))
        paths.append(rel)
    (root / "kind0" / ".hidden.json").write_text("{}")
    (root / "kind0" / "notes.txt").write_text("x")
    return paths


def test_chunks_hold_every_asset_once_with_one_lookup_per_chunk(tmp_path):
    on_disk = make_tree(tmp_path, 25)
    asked: list[list[str]] = []

    def lookup(paths):
        asked.append(list(paths))
        return {p: "stored" for p in paths if p.endswith("0.json")}

    got = list(tree.chunks(str(tmp_path), lookup=lookup, size=10))
    assert [len(chunk) for chunk, _ in got] == [10, 10, 5]
    assert asked == [chunk for chunk, _ in got]
    found = [p for chunk, _ in got for p in chunk]
    assert sorted(found) == sorted(on_disk)
    assert found == list(tree.walk(str(tmp_path)))  # the walk's order, nothing added
    for chunk, stored in got:
        assert stored == {p: "stored" for p in chunk if p.endswith("0.json")}


def test_the_next_chunk_is_looked_up_while_the_caller_handles_one(tmp_path):
    make_tree(tmp_path, 30)
    asked: list[list[str]] = []
    started = threading.Event()

    def lookup(paths):
        asked.append(list(paths))
        if len(asked) == 2:
            started.set()
        return {}

    chunks = tree.chunks(str(tmp_path), lookup=lookup, size=10)
    first, _ = next(chunks)
    assert started.wait(5), "chunk 2 was not looked up while chunk 1 was being handled"
    assert asked[0] == first
    rest = [chunk for chunk, _ in chunks]
    assert asked == [first, *rest]


def test_a_failing_lookup_reaches_the_caller_and_leaves_no_thread(tmp_path):
    make_tree(tmp_path, 30)

    def lookup(paths):
        raise ConnectionError("Valkey went away")

    with pytest.raises(ConnectionError, match="went away"):
        list(tree.chunks(str(tmp_path), lookup=lookup, size=10))
    chunks = tree.chunks(str(tmp_path), lookup=lambda paths: {}, size=10)
    next(chunks)
    chunks.close()  # a caller that stops early
    assert not [t for t in threading.enumerate() if t.name.startswith("assetmgr-lookup")]


def test_an_empty_tree_makes_no_chunk_and_no_lookup(tmp_path):
    (tmp_path / "kind0").mkdir()

    def lookup(paths):
        raise AssertionError("no lookup for no paths")

    assert list(tree.chunks(str(tmp_path), lookup=lookup)) == []


def test_chunks_of_a_subdirectory(tmp_path):
    make_tree(tmp_path, 12)
    found = [p for chunk, _ in tree.chunks(str(tmp_path), "kind1") for p in chunk]
    assert found and all(p.startswith("kind1/") for p in found)
    assert all(stored == {} for _, stored in tree.chunks(str(tmp_path), "kind1"))


def test_a_scan_watches_each_directory_so_later_files_are_seen(tmp_path):
    make_tree(tmp_path, 6)
    watches = Watches(str(tmp_path))
    try:
        found = [p for chunk, _ in watches.walk() for p in chunk]
        assert len(found) == 6
        assert {"", "kind0", "kind0/sub0", "kind1/sub1", "kind2/sub0"} <= set(watches.by_dir)
        (tmp_path / "kind1" / "sub1" / "new.json").write_text("{}")
        deadline = time.monotonic() + 5
        changes: list[Change] = []
        while Change(Kind.DIRTY, "kind1/sub1/new.json") not in changes:
            assert time.monotonic() < deadline, changes
            changes += watches.read()
    finally:
        watches.close()


def test_gone_is_what_a_scan_of_a_directory_did_not_find():
    known = {"weights/a.json", "weights/b.json", "weights2/c.json", "top.json"}
    assert sorted(watcher.gone(known, {"weights/a.json"}, "weights")) == ["weights/b.json"]
    assert sorted(watcher.gone(known, {"weights/a.json"})) == [
        "top.json",
        "weights/b.json",
        "weights2/c.json",
    ]
    assert sorted(watcher.below(known, "weights")) == ["weights/a.json", "weights/b.json"]
    assert sorted(watcher.below(known, "")) == sorted(known)


def test_one_hidden_name_rule_for_walks_and_events():
    for name in (".git", "#lock#", "cost.json~", "..data", ".#cost.json"):
        assert tree.hidden(name), name
        assert tree.is_ignored(f"weights/{name}/x.json")
    for name in ("cost.json", "a.b", "x~y", "a#"):
        assert not tree.hidden(name), name
