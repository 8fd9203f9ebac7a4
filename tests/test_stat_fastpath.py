"""The scan's stat shortcut: a file whose signature (device, inode, size, mtime, ctime) is the
one stored with its content is not read again — and every way content can change while size
and mtime stay the same is still seen: `touch -r`, `rsync -t`, `cp -p`, and changes made within
the racy window of the file system's timestamp granularity."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from inotify_simple import INotify
from inotify_simple import flags as F

from conftest import SCHEMAS, disk_assets, manifests, run_cli, stored

RACY_SECONDS = 2.0  # worker.RACY_NS
COST = "weights/cost.json"


def hydrate(url: str, root: Path) -> str:
    result = run_cli("hydrate", "--root", root, "--schemas", SCHEMAS, "--valkey-url", url)
    assert result.returncode == 0, result.stderr
    return result.stderr


def settled(root: Path) -> None:
    """Wait until every file's ctime is older than the racy window, so its signature counts."""
    newest = max(p.stat().st_ctime for p in root.rglob("*"))
    time.sleep(max(0.0, newest + RACY_SECONDS + 0.1 - time.time()))


def same_size_edit(path: Path) -> bytes:
    """New content of exactly the old size: one digit changed."""
    old = path.read_bytes()
    at = next(i for i, c in enumerate(old) if chr(c).isdigit())
    new = old[:at] + str((int(chr(old[at])) + 1) % 10).encode() + old[at + 1 :]
    assert len(new) == len(old) and new != old
    return new


class Opens:
    """Every file under `root` opened while the block runs (IN_OPEN on each directory)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.inotify = INotify()
        self.dirs = {}
        for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
            self.dirs[self.inotify.add_watch(str(d), F.OPEN)] = d
        self.opened: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for event in self.inotify.read(timeout=100):
                if event.name and not event.mask & F.ISDIR:
                    path = (self.dirs[event.wd] / event.name).relative_to(self.root)
                    self.opened.add(path.as_posix())

    def __enter__(self) -> Opens:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.2)
        self._stop.set()
        self._thread.join(2)
        self.inotify.close()


@pytest.fixture
def synced(valkey, root):
    """The example tree hydrated once its timestamps are out of the racy window."""
    settled(root)
    hydrate(valkey.url, root)
    return valkey.client()


def test_an_unchanged_file_is_not_opened_by_a_re_hydrate(valkey, root, synced):
    assert all(m["stat"] for m in manifests(synced).values())
    with Opens(root) as seen:
        log = hydrate(valkey.url, root)
    assert "unchanged=20" in log
    assert seen.opened == set(), "files were read although their signature was unchanged"


def test_same_size_and_mtime_via_touch_r_is_seen(valkey, root, synced):
    path = root / COST
    reference = root.parent / "reference"
    shutil.copy2(path, reference)
    path.write_bytes(same_size_edit(path))
    subprocess.run(["touch", "-r", str(reference), str(path)], check=True)
    assert path.stat().st_mtime_ns == reference.stat().st_mtime_ns
    log = hydrate(valkey.url, root)
    assert "updated=1" in log
    assert stored(synced)[COST] == path.read_bytes()


def test_same_size_and_mtime_via_rsync_t_is_seen(valkey, root, synced, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(root, source, copy_function=shutil.copy2)
    (source / COST).write_bytes(same_size_edit(source / COST))
    os.utime(source / COST, ns=(0, (root / COST).stat().st_mtime_ns))
    # --size-only-like conditions: same size, same mtime; rsync -t then keeps the mtime.
    subprocess.run(
        ["rsync", "-rt", "--checksum", f"{source}/", f"{root}/"], check=True, capture_output=True
    )
    assert (root / COST).stat().st_mtime_ns == (source / COST).stat().st_mtime_ns
    log = hydrate(valkey.url, root)
    assert "updated=1" in log
    assert stored(synced) == disk_assets(root)


def test_an_in_place_rewrite_restoring_mtime_is_seen(valkey, root, synced):
    """Same inode, same size, mtime set back by hand: only the ctime tells."""
    path = root / COST
    before = path.stat()
    with open(path, "r+b") as f:
        f.write(same_size_edit(path))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    log = hydrate(valkey.url, root)
    assert "updated=1" in log
    assert stored(synced)[COST] == path.read_bytes()


def test_a_file_changed_within_the_racy_window_is_not_vouched_for(valkey, root):
    """Read right after it was written, a file gets no signature, so a later same-size change
    with the mtime set back — which a coarse clock could leave with the same ctime — is
    still read and seen."""
    settled(root)
    path = root / COST
    path.write_bytes(same_size_edit(path))
    hydrate(valkey.url, root)
    client = valkey.client()
    racy = manifests(client)[COST]
    assert racy["stat"] == ""
    assert manifests(client)["settings.json"]["stat"] != ""
    before = path.stat()
    path.write_bytes(same_size_edit(path))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    log = hydrate(valkey.url, root)
    assert "updated=1" in log
    assert stored(client)[COST] == path.read_bytes()


def test_a_chmod_rehashes_but_writes_nothing(valkey, root, synced):
    path = root / COST
    path.chmod(0o600)
    with Opens(root) as seen:
        log = hydrate(valkey.url, root)
    assert "unchanged=20" in log
    assert seen.opened == {COST}, "only the file whose status changed is read again"
