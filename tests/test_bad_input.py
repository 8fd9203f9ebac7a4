"""Every kind of bad input in one tree: each is rejected (or ignored) with its reason, none
crashes or hangs the run, and every valid file still lands in Valkey."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import (
    EXAMPLES,
    REPO,
    SCHEMAS,
    disk_assets,
    manifests,
    run_cli,
    sha256,
    stored,
    subscribe,
    wait_for,
)

# Root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH obeys file modes like any other user, so
# a mode-000 file is really unreadable; the tree itself is root's, so the rest stays readable.
DROP_DAC = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
]
COST = (EXAMPLES / "weights" / "cost.json").read_bytes()
MAX_SIZE = "500K"  # above the largest example (routes/table.json, ~435 KiB)


@dataclass
class BadTree:
    root: Path
    rejected: dict[str, str] = field(default_factory=dict)  # shown path -> reason fragment
    valid: dict[str, bytes] = field(default_factory=dict)  # path -> bytes Valkey must hold
    wrapper: list[str] = field(default_factory=list)  # runs the CLI so chmod 000 bites

    def write(self, path: str, data: bytes) -> Path:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return target

    def bad(self, path: str, data: bytes, fragment: str) -> None:
        self.write(path, data)
        self.rejected[path] = fragment


def unreadable_wrapper() -> list[str] | None:
    """How to run the CLI so that a mode-000 file cannot be read; None if impossible here."""
    if os.geteuid() != 0:
        return []
    return DROP_DAC if shutil.which("setpriv") else None


@pytest.fixture
def bad_tree(root: Path, tmp_path: Path) -> BadTree:
    tree = BadTree(root, valid=disk_assets(EXAMPLES))
    tree.bad("empty.json", b"", "empty file")
    tree.bad("weights/truncated.json", COST[:100], "invalid JSON")
    tree.bad("weights/latin1.json", COST.replace(b"cost", b"co\xdft"), "not UTF-8")
    tree.bad("weights/bom.json", b"\xef\xbb\xbf" + COST, "byte order mark")
    tree.bad("cards/dup.json", b'{"id": "a", "id": "b"}', "duplicate object key 'id'")
    tree.bad("routes/nan.json", b'{"weight": NaN}', "NaN is not valid JSON")
    tree.bad("deep.json", b'{"a":' + b"[" * 10_000 + b"]" * 10_000 + b"}", "nesting deeper")
    tree.bad("routes/huge.json", b'{"a": "' + b"x" * 600_000 + b'"}', "over the 512000-byte limit")
    tree.bad("weights/schema_violation.json", b'{"version": "1.0.0"}', "weights.schema.json")
    os.mkfifo(root / "weights" / "pipe.json")
    tree.rejected["weights/pipe.json"] = "not a regular file (FIFO)"
    (tmp_path / "outside.json").write_bytes(b'{"outside": true}')
    (root / "escape.json").symlink_to(tmp_path / "outside.json")
    tree.rejected["escape.json"] = "symlink points outside the root"
    tree.write(os.fsdecode(b"weights/caf\xe9.json"), COST)
    tree.rejected["weights/caf\\xe9.json"] = "file name is not valid UTF-8"
    wrapper = unreadable_wrapper()
    if wrapper is not None:
        tree.wrapper = wrapper
        tree.bad("routes/locked.json", b"{}", "cannot read: Permission denied")
        (root / "routes" / "locked.json").chmod(0)

    # Valid, and reached in unusual ways.
    (root / "weights" / "alias.json").symlink_to("cost.json")
    tree.valid["weights/alias.json"] = COST
    (root / "weights" / "loop").symlink_to("..")  # a cycle: walked once, not forever

    # Ignored: never read, reported or written. Broken content, so a read would show.
    for path in (
        ".ignored_dot.json",
        "ignored_backup.json~",
        "#ignored_lock.json#",
        "ignored_notes.txt",
        "IGNORED_UPPER.JSON",
        ".ignored_dir/inner.json",
        "..data/ignored_k8s.json",
        "#ignored_dir#/inner.json",
        "ignored_dir~/inner.json",
        "weights/.ignored_swap.json.swp",
        "weights/.ignored_cost.json",
    ):
        tree.write(path, b"{broken")
    return tree


def run_as_tree_user(tree: BadTree, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess:
    if not tree.wrapper:
        return run_cli(*args, timeout=60)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSETMGR_")}
    return subprocess.run(
        [*tree.wrapper, sys.executable, "-m", "assetmgr", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,  # a FIFO opened for reading would block forever: this is the hang check
        env=env,
        cwd=REPO,
    )


def assert_each_reported(text: str, tree: BadTree) -> None:
    for path, fragment in tree.rejected.items():
        lines = [line for line in text.splitlines() if path in line and fragment in line]
        assert lines, f"{path} not reported with {fragment!r} in:\n{text}"
    assert "ignored_" not in text.lower(), text
    assert "Traceback" not in text


def test_hydrate_rejects_every_bad_file_and_writes_every_valid_one(valkey, bad_tree):
    client = valkey.client()
    with subscribe(client) as published:
        result = run_as_tree_user(
            bad_tree,
            "hydrate",
            "--root", bad_tree.root,
            "--schemas", SCHEMAS,
            "--valkey-url", valkey.url,
            "--max-size", MAX_SIZE,
        )  # fmt: skip
        wait_for(lambda: len(published.items) >= len(bad_tree.valid), 10, what="publishes")
    assert result.returncode == 1, result.stderr
    assert_each_reported(result.stderr, bad_tree)
    rejected_lines = [line for line in result.stderr.splitlines() if "rejected" in line]
    assert len(rejected_lines) == len(bad_tree.rejected), result.stderr

    assert stored(client) == bad_tree.valid
    assert {p: m["hash"] for p, m in manifests(client).items()} == {
        p: sha256(data) for p, data in bad_tree.valid.items()
    }
    assert sorted(published.items) == sorted(bad_tree.valid)


def test_verify_lists_every_bad_file_once_with_its_reason(bad_tree):
    result = run_as_tree_user(
        bad_tree, "verify", "--root", bad_tree.root, "--schemas", SCHEMAS, "--max-size", MAX_SIZE
    )
    assert result.returncode == 1, result.stderr
    assert_each_reported(result.stdout, bad_tree)
    lines = result.stdout.splitlines()
    assert sorted(line.split(": ", 1)[0] for line in lines[:-1]) == sorted(bad_tree.rejected)
    checked = len(bad_tree.valid) + len(bad_tree.rejected)
    assert lines[-1] == (
        f"{checked} checked: {len(bad_tree.valid)} valid, {len(bad_tree.rejected)} invalid"
    )


@pytest.mark.timeout(60)
def test_a_fifo_alone_does_not_hang_a_run(valkey, tmp_path):
    root = tmp_path / "tree"
    (root / "weights").mkdir(parents=True)
    (root / "weights" / "cost.json").write_bytes(COST)
    os.mkfifo(root / "weights" / "pipe.json")
    result = run_cli(
        "hydrate", "--root", root, "--schemas", SCHEMAS, "--valkey-url", valkey.url, timeout=30
    )
    assert result.returncode == 1
    assert "weights/pipe.json" in result.stderr and "FIFO" in result.stderr
    assert stored(valkey.client()) == {"weights/cost.json": COST}
