"""Acceptance scenarios 1-10 of issue 3: real tools change the tree under a running daemon.

Each test starts the daemon on a real Valkey, changes the tree exactly as the tool does (vim,
sed, cp, rsync, git and tar really run), waits for convergence, then checks that Valkey holds
the valid assets on disk and what the scenario promises about the traffic: how many writes and
publishes, and that no transient delete or half-written content ever reached a consumer.

Negative promises ("no delete", "nothing written") need the daemon to be done with the events:
`quiesce` writes a barrier asset (inotify events arrive in order, so once the barrier is in Valkey
every earlier event was read) and then waits for every pipeline queue, delete holds and settle
timers included, to stay empty.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from assetmgr.client import AssetClient
from conftest import (
    BLOB,
    MANIFEST,
    Daemon,
    converge,
    disk_assets,
    monitor,
    stored,
    subscribe,
    wait_for,
)

COST = "weights/cost.json"  # has `"pool-spot": 0.13`, which the edits below change
BARRIER = "zz_barrier.json"  # a top-level asset: the permissive _default schema applies
SET_VERBS = {"SET", "SETEX", "PSETEX", "SETNX", "GETSET", "MSET", "APPEND", "SETRANGE", "HSET"}
DELETE_VERBS = {"DEL", "UNLINK", "GETDEL"}
OTHER_WRITE_VERBS = {"HDEL", "HMSET", "EXPIRE", "PEXPIRE", "RENAME", "RESTORE", "COPY", "MOVE"}


# -- what a scenario writes ------------------------------------------------------------------------


def weights(name: str, value: float = 1.0) -> bytes:
    """A valid `weights/` asset (and, being an object, a valid `_default` one)."""
    doc = {"version": "1.0.0", "name": name, "unit": "score", "weights": {"pool-a": value}}
    return (json.dumps(doc, indent=2) + "\n").encode()


def edited(data: bytes) -> bytes:
    """The cost table with one weight changed, as the editors below change it."""
    assert b"0.13" in data
    return data.replace(b"0.13", b"0.31")


def vim(file: Path, *commands: str) -> None:
    """Run vim without a terminal: `-es` executes the Ex commands in order, then exits.

    `backupskip` is cleared by the callers: its default skips backups under /tmp (where pytest
    puts the tree), which would turn every save into an in-place write.
    """
    args = [arg for command in commands for arg in ("-c", command)]
    subprocess.run(
        ["vim", "-N", "-u", "NONE", "-i", "NONE", "-es", *args, str(file)],
        cwd=file.parent,  # the swap file `.cost.json.swp` lands next to the file, as usual
        stdin=subprocess.DEVNULL,
        check=True,
        timeout=30,
    )


def run(*argv: str | os.PathLike[str], cwd: Path | None = None) -> None:
    subprocess.run([str(a) for a in argv], cwd=cwd, check=True, timeout=60, capture_output=True)


# -- what the daemon did ---------------------------------------------------------------------------


def metric(daemon: Daemon, name: str) -> dict[str, float]:
    """Samples of one metric family from /metrics, as `name{labels}` -> value."""
    samples = {}
    for line in daemon.get("/metrics")[1].decode().splitlines():
        if line.startswith(name):
            sample, _, value = line.rpartition(" ")
            samples[sample] = float(value)
    return samples


def rejections(daemon: Daemon) -> float:
    return sum(metric(daemon, "assetmgr_rejections_total").values())


def quiesce(daemon: Daemon, client: redis.Redis, root: Path) -> None:
    """Return once every event so far was read and nothing is pending (holds, settles, queues)."""
    content = json.dumps({"barrier": time.monotonic_ns()}).encode()
    (root / BARRIER).write_bytes(content)
    wait_for(lambda: stored(client).get(BARRIER) == content, what="barrier asset in Valkey")
    idle_polls = [0]

    def idle() -> bool:
        depths = metric(daemon, "assetmgr_queue_depth")
        idle_polls[0] = idle_polls[0] + 1 if depths and not any(depths.values()) else 0
        return idle_polls[0] >= 4  # a hand-over between two stages is not idleness

    wait_for(idle, what="every queue of the daemon empty")


def mutations(commands: list[str]) -> list[tuple[str, str]]:
    """(op, key) for each change of an asset key MONITOR saw: "write" or "delete" (or the verb).

    MONITOR also shows the commands a Lua script runs (from client "lua"), so this is what
    happened to the keys whatever the shape of the writer's scripts or batches; the script
    calls themselves, and reads, are not changes.
    """
    out = []
    for line in commands:
        verb, *words = line.split(" ")
        verb = verb.upper()
        if verb not in SET_VERBS | DELETE_VERBS | OTHER_WRITE_VERBS:
            continue
        for key in words:
            if key.startswith((BLOB, MANIFEST)):
                op = "write" if verb in SET_VERBS else "delete" if verb in DELETE_VERBS else verb
                out.append((op.lower(), key))
    return out


def ops(commands: list[str], path: str) -> list[str]:
    """What happened to the blob of `path`, in order: one "write" per commit, or "delete"."""
    return [op for op, key in mutations(commands) if key == f"{BLOB}{path}"]


def logged(daemon: Daemon, outcome: str, path: str) -> int:
    """How many times the writer logged `outcome` (added/updated/deleted) for `path`."""
    return daemon.log().count(f"writer: {outcome} path={path} outcome=")


def others(published: list[str]) -> list[str]:
    return [p for p in published if p != BARRIER]


class Consumer:
    """A service reading one asset with the shipped client in a tight loop, as fast as it can.

    `seen` is every distinct value it got, in order (None = the asset was absent).
    """

    def __init__(self, url: str, path: str) -> None:
        self.client = AssetClient.from_url(url)
        self.path = path
        self.seen: list[bytes | None] = []
        self.reads = 0
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                asset = self.client.get(self.path)
                value = asset.data if asset is not None else None
                if not self.seen or self.seen[-1] != value:
                    self.seen.append(value)
                self.reads += 1
        except Exception as e:  # an integrity error is a finding: report it in the test
            self.error = e

    def __enter__(self) -> Consumer:
        self._thread.start()
        wait_for(lambda: self.reads > 0, what="consumer's first read")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        if self.error is not None:
            raise AssertionError(f"the consumer failed: {self.error!r}")


@contextmanager
def traffic(client: redis.Redis) -> Iterator[tuple[list[str], list[str]]]:
    """(published paths, MONITOR lines) recorded while the block runs."""
    with subscribe(client) as published, monitor(client) as commands:
        yield published.items, commands.items


# -- 1, 2: vim -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        # "auto": on a file we own without hard links, vim renames it to `cost.json~`, writes a
        # new `cost.json` and removes the backup: MOVED_FROM then CREATE, the hold must absorb it.
        pytest.param([], id="default-backupcopy"),
        # Copies the backup, then truncates and rewrites the file in place (MODIFY ... CLOSE_WRITE).
        pytest.param(["set backupcopy=yes"], id="backupcopy=yes"),
        # Always the rename pattern, and `cost.json~` stays on disk (it must never become a key).
        pytest.param(["set backupcopy=no backup"], id="backupcopy=no-backup-kept"),
    ],
)
def test_vim_wq_is_one_write_and_never_a_delete(valkey, root, start_daemon, settings):
    client = valkey.client()
    daemon = start_daemon(root)
    new = edited((root / COST).read_bytes())

    with traffic(client) as (published, commands), Consumer(valkey.url, COST) as consumer:
        vim(root / COST, "set backupskip=", *settings, "%s/0\\.13/0.31/", "wq")
        converge(client, lambda: disk_assets(root), what="vim's save in Valkey")
        quiesce(daemon, client, root)

    assert (root / COST).read_bytes() == new
    assert stored(client) == disk_assets(root)
    assert others(published) == [COST]
    assert ops(commands, COST) == ["write"]
    assert logged(daemon, "updated", COST) == 1
    assert logged(daemon, "deleted", COST) == 0
    assert None not in consumer.seen, "a consumer saw the asset missing during the save"
    assert consumer.seen[-1] == new


def test_vim_quit_without_saving_writes_nothing(valkey, root, start_daemon):
    client = valkey.client()
    daemon = start_daemon(root)
    before = (root / COST).read_bytes()

    with traffic(client) as (published, commands):
        vim(root / COST, "set backupskip=", "%s/0\\.13/0.31/", "q!")
        quiesce(daemon, client, root)

    assert (root / COST).read_bytes() == before
    assert stored(client) == disk_assets(root)
    assert others(published) == []
    assert [(op, key) for op, key in mutations(commands) if not key.endswith(BARRIER)] == []


# -- 3, 4: emacs, atomic replace, sed -i -----------------------------------------------------------


def test_emacs_style_save_is_one_write_without_lock_autosave_or_backup_keys(
    valkey, root, start_daemon
):
    client = valkey.client()
    daemon = start_daemon(root)
    file = root / COST
    lock = file.with_name(".#cost.json")
    autosave = file.with_name("#cost.json#")
    backup = file.with_name("cost.json~")
    new = edited(file.read_bytes())

    with traffic(client) as (published, commands):
        os.symlink("editor@host.4242:1700000000", lock)  # dangling, like emacs' lock
        autosave.write_bytes(new)
        file.rename(backup)  # the first save keeps the original as `name~`
        file.write_bytes(new)
        autosave.unlink()
        lock.unlink()
        converge(client, lambda: disk_assets(root), what="emacs' save in Valkey")
        quiesce(daemon, client, root)

    assert stored(client) == disk_assets(root)
    assert stored(client)[COST] == new
    assert backup.exists()
    assert [p for p in stored(client) if "#" in p or "~" in p or "/." in p] == []
    assert others(published) == [COST]
    assert ops(commands, COST) == ["write"]


def replace_atomically(file: Path, data: bytes) -> None:
    """What careful programs do: a temp file next to the target, fsync, rename over it."""
    fd, temp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, file)


@pytest.mark.parametrize("tool", ["os.replace", "sed -i"])
def test_atomic_replace_is_one_write(valkey, root, start_daemon, tool):
    client = valkey.client()
    daemon = start_daemon(root)
    file = root / COST
    new = edited(file.read_bytes())

    with traffic(client) as (published, commands):
        if tool == "sed -i":
            run("sed", "-i", "s/0\\.13/0.31/", file)
        else:
            replace_atomically(file, new)
        converge(client, lambda: disk_assets(root), what=f"{tool} in Valkey")
        quiesce(daemon, client, root)

    assert file.read_bytes() == new
    assert stored(client) == disk_assets(root)
    assert others(published) == [COST]
    assert ops(commands, COST) == ["write"]


# -- 5, 6: overwrite in place, slow writers --------------------------------------------------------


@pytest.mark.parametrize("tool", ["cp", "shell >"])
def test_overwrite_in_place_never_shows_empty_content(valkey, root, start_daemon, tmp_path, tool):
    client = valkey.client()
    daemon = start_daemon(root)
    file = root / COST
    old = file.read_bytes()
    source = tmp_path / "new-cost.json"
    source.write_bytes(edited(old))

    with traffic(client) as (published, commands), Consumer(valkey.url, COST) as consumer:
        if tool == "cp":
            run("cp", source, file)
        else:  # the shell truncates first; the command's output arrives later
            run("sh", "-c", '{ sleep 0.5; cat "$1"; } > "$2"', "sh", source, file)
        converge(client, lambda: disk_assets(root), what=f"{tool} in Valkey")
        quiesce(daemon, client, root)

    assert stored(client) == disk_assets(root)
    assert stored(client)[COST] == source.read_bytes()
    assert consumer.seen == [old, source.read_bytes()], "a consumer saw an intermediate state"
    assert others(published) == [COST]
    assert ops(commands, COST) == ["write"]
    assert logged(daemon, "updated", COST) == 1
    assert rejections(daemon) == 0, "the truncated file was read before it was complete"


@pytest.mark.parametrize("target", ["weights/slow.json", COST], ids=["new-file", "existing-file"])
def test_file_written_in_four_slow_chunks_is_uploaded_once_complete(
    valkey, root, start_daemon, target
):
    client = valkey.client()
    daemon = start_daemon(root)
    data = weights("slow", 0.25)
    chunks = [data[i : i + len(data) // 4 + 1] for i in range(0, len(data), len(data) // 4 + 1)]
    assert len(chunks) == 4 and b"".join(chunks) == data

    with traffic(client) as (published, commands):
        fd = os.open(root / target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for i, chunk in enumerate(chunks):
                if i:
                    time.sleep(0.3)
                os.write(fd, chunk)
        finally:
            os.close(fd)
        wait_for(lambda: stored(client).get(target) == data, what="the complete file in Valkey")
        quiesce(daemon, client, root)

    assert stored(client) == disk_assets(root)
    assert others(published) == [target]
    assert ops(commands, target) == ["write"]
    assert rejections(daemon) == 0, "the file was read while half-written"


# -- 7, 8: new directories and trees ---------------------------------------------------------------


@pytest.mark.parametrize("base", ["", "weights/"], ids=["top-level", "in-kind-dir"])
def test_mkdir_p_then_files_at_every_level_are_all_present(
    valkey, root, start_daemon, tmp_path, base
):
    client = valkey.client()
    start_daemon(root)
    template = tmp_path / "template.json"
    template.write_bytes(weights("nested"))

    run(
        "sh", "-c", 'mkdir -p a/b/c && cp "$1" a/one.json && cp "$1" a/b/two.json '
        '&& cp "$1" a/b/c/three.json', "sh", template, cwd=root / base,
    )  # fmt: skip

    expected = {f"{base}a/one.json", f"{base}a/b/two.json", f"{base}a/b/c/three.json"}
    converge(client, lambda: disk_assets(root), what="the new files in Valkey")
    assert expected <= set(stored(client))


def make_tree(top: Path, files: int = 50) -> set[str]:
    """A three-level tree: `files` valid weight tables spread over top/, top/dN/, top/dN/deep/."""
    dirs = [top, top / "d0", top / "d1", top / "d0" / "deep", top / "d1" / "deep"]
    made = set()
    for i in range(files):
        directory = dirs[i % len(dirs)]
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"t{i:02d}.json").write_bytes(weights(f"t{i:02d}", i / 10))
        made.add((directory / f"t{i:02d}.json").relative_to(top.parent).as_posix())
    return made


@pytest.mark.parametrize("tool", ["cp -r", "tar x"])
def test_copied_or_extracted_tree_is_all_present(valkey, root, start_daemon, tmp_path, tool):
    client = valkey.client()
    start_daemon(root)
    made = make_tree(tmp_path / "src" / "tree")
    assert len(made) == 50

    if tool == "cp -r":
        run("cp", "-r", tmp_path / "src" / "tree", root / "weights")
    else:
        run("tar", "-cf", tmp_path / "tree.tar", "-C", tmp_path / "src", "tree")
        run("tar", "-xf", tmp_path / "tree.tar", "-C", root / "weights")

    converge(client, lambda: disk_assets(root), what=f"the tree from {tool} in Valkey")
    assert {f"weights/{p}" for p in made} <= set(stored(client))


# -- 9, 10: rsync and git --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra", [[], ["--delay-updates"], ["--inplace"]], ids=["plain", "delay-updates", "inplace"]
)
def test_rsync_delete_makes_valkey_match_the_source(valkey, root, start_daemon, tmp_path, extra):
    client = valkey.client()
    daemon = start_daemon(root)
    source = tmp_path / "source"
    run("cp", "-a", root, source)
    (source / COST).write_bytes(edited((source / COST).read_bytes()) + b"\n")  # longer: changed
    (source / "settings.json").unlink()
    (source / "weights" / "fresh" / "a" / "b").mkdir(parents=True)
    (source / "weights" / "fresh" / "top.json").write_bytes(weights("top"))
    (source / "weights" / "fresh" / "a" / "b" / "deep.json").write_bytes(weights("deep"))

    with traffic(client) as (_, commands):
        run("rsync", "-a", "--delete", *extra, f"{source}/", f"{root}/")
        converge(client, lambda: disk_assets(source), what="Valkey matching the source")
        quiesce(daemon, client, root)

    assert disk_assets(root) == {**disk_assets(source), BARRIER: (root / BARRIER).read_bytes()}
    assert stored(client) == disk_assets(root)
    assert ops(commands, COST) == ["write"]
    assert ops(commands, "settings.json") == ["delete"]


def git(root: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    subprocess.run(
        ["git", "-C", str(root), *args], env=env, check=True, timeout=60, capture_output=True
    )


@pytest.mark.topologies()
def test_git_checkout_of_another_branch_matches_without_deleting_modified_files(
    valkey, root, start_daemon
):
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "main")
    git(root, "checkout", "-qb", "other")
    (root / COST).write_bytes(edited((root / COST).read_bytes()))
    (root / "settings.json").unlink()
    (root / "weights" / "fresh" / "deep").mkdir(parents=True)
    (root / "weights" / "fresh" / "deep" / "new.json").write_bytes(weights("new"))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "other")
    git(root, "checkout", "-q", "main")
    client = valkey.client()
    daemon = start_daemon(root)
    assert stored(client) == disk_assets(root)

    with traffic(client) as (published, commands), Consumer(valkey.url, COST) as consumer:
        git(root, "checkout", "-q", "other")  # unlinks cost.json and creates it anew
        converge(client, lambda: disk_assets(root), what="the other branch in Valkey")
        quiesce(daemon, client, root)

    assert stored(client) == disk_assets(root)
    assert "settings.json" not in stored(client)
    assert "weights/fresh/deep/new.json" in stored(client)
    assert ops(commands, COST) == ["write"]
    assert ops(commands, "settings.json") == ["delete"]
    assert sorted(others(published)) == [
        "settings.json",
        COST,
        "weights/fresh/deep/new.json",
    ]
    assert None not in consumer.seen, "a consumer saw the modified asset missing"
