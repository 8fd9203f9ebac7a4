"""Hostile trees (issue 10): what a tree writer can do to assetmgr, against a real Valkey.

Each scenario is bounded in time (every run has a deadline) and memory (peak RSS measured),
is reported (one line per rejected path in every report format) or ignored where the asset rules
says so, never makes assetmgr read outside the root (inotify shows the kernel saw no open or
read of the outside files), and never deletes a valid key.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from fsprobe import dac_wrapper, measured, touches
from inotify_simple import INotify, flags

from conftest import (
    EXAMPLES,
    REPO,
    SCHEMAS,
    Daemon,
    barrier,
    converge,
    disk_assets,
    run_cli,
    stored,
    subscribe,
    wait_for,
)

EXAMPLE_ASSETS = disk_assets(EXAMPLES)
SECRET = b'{"token": "s3cret-do-not-publish"}'
MB = 1024**2


def hydrate(url: str, root: Path, *extra: str | Path, wrapper: list[str] | None = None):
    args = ["hydrate", "--root", root, "--schemas", SCHEMAS, "--valkey-url", url, *extra]
    return run_tree_user(wrapper or [], *args)


def verify(root: Path, *extra: str | Path, wrapper: list[str] | None = None):
    return run_tree_user(wrapper or [], "verify", "--root", root, "--schemas", SCHEMAS, *extra)


def run_tree_user(wrapper: list[str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    if not wrapper:
        return run_cli(*args, timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSETMGR_")}
    return subprocess.run(
        [*wrapper, sys.executable, "-m", "assetmgr", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )


def reported(text: str, path: str, fragment: str) -> list[str]:
    return [line for line in text.splitlines() if path in line and fragment in line]


def assert_verify_reports(root: Path, expected: dict[str, str], *extra: str) -> None:
    """`verify` names each rejected path once, on one line, in each of its three formats."""
    text = verify(root, *extra)
    assert text.returncode == 1, text.stderr
    lines = text.stdout.splitlines()
    for path, fragment in expected.items():
        assert len(reported(text.stdout, f"{path}: ", fragment)) == 1, (path, text.stdout)
    assert len(lines) == len(expected) + 1, text.stdout  # plus the summary line

    as_json = json.loads(verify(root, "--format", "json", *extra).stdout)
    assert {r["path"]: r["reason"] for r in as_json["invalid"]}.keys() == expected.keys()
    for r in as_json["invalid"]:
        assert expected[r["path"]] in r["reason"] and r["reason"].isprintable()

    github = verify(root, "--format", "github", *extra).stdout.splitlines()
    assert len(github) == len(expected), github
    assert all(line.startswith("::error file=") for line in github)


# -- symlinks: out of the root, loops ------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the root holding what a tree writer must not get published."""
    out = tmp_path / "outside"
    (out / "dir").mkdir(parents=True)
    (out / "secret.json").write_bytes(SECRET)
    (out / "dir" / "app.json").write_bytes(SECRET)
    return out


SYMLINK_REPORTS = {
    "shadow.json": "symlink points outside the root",
    "secret.json": "symlink points outside the root",
    "leak": "directory symlink points outside the root",
    "self.json": "symlink loop",
    "ping.json": "symlink loop",
    "pong.json": "symlink loop",
}


def test_symlinks_out_of_the_root_and_loops_are_reported_unopened(valkey, root, outside):
    (root / "shadow.json").symlink_to("/etc/shadow")
    (root / "secret.json").symlink_to(outside / "secret.json")
    (root / "leak").symlink_to(outside / "dir")
    (root / "self.json").symlink_to("self.json")
    (root / "ping.json").symlink_to("pong.json")
    (root / "pong.json").symlink_to("ping.json")
    (root / "weights" / "loop").symlink_to("..")  # a cycle inside: walked once, not reported
    (root / "dloop1").symlink_to("dloop2")  # a loop not named *.json: not an asset, ignored
    (root / "dloop2").symlink_to("dloop1")
    probes = [outside / "secret.json", outside / "dir" / "app.json"]

    with touches(*probes) as seen:
        result = hydrate(valkey.url, root)
    assert result.returncode == 1, result.stderr
    for path, fragment in SYMLINK_REPORTS.items():
        assert reported(result.stderr, f"path={path} ", fragment), (path, result.stderr)
    assert not seen.opened and not seen.read, seen
    assert stored(valkey.client()) == EXAMPLE_ASSETS
    assert_verify_reports(root, SYMLINK_REPORTS)


def test_a_directory_swapped_for_a_symlink_out_under_the_daemon(
    valkey, root, outside, tmp_path, start_daemon
):
    # A tree writer replaces weights/ by a symlink to a directory of the same shape outside.
    # Nothing under it is read or published; the symlink is reported.
    (outside / "dir" / "cost.json").write_bytes((root / "weights" / "cost.json").read_bytes())
    client = valkey.client()
    daemon = start_daemon(root)
    with touches(outside / "dir" / "cost.json", outside / "dir" / "app.json") as seen:
        shutil.move(root / "weights", tmp_path / "weights.away")
        (root / "weights").symlink_to(outside / "dir")
        expected = {p: d for p, d in EXAMPLE_ASSETS.items() if not p.startswith("weights/")}
        converge(client, lambda: expected, what="weights/ gone from Valkey")
        wait_for(lambda: "weights" in status(daemon)["rejected"], what="the symlink reported")
    assert not seen.read, seen
    assert "outside the root" in status(daemon)["rejected"]["weights"]
    assert SECRET not in stored(client).values()

    # A new symlink loop below the root is walked once, like a full scan walks it.
    (root / "extra").mkdir()
    (root / "extra" / "a.json").write_bytes(b"{}")
    (root / "extra" / "loop").symlink_to("..")
    converge(client, lambda: {**expected, "extra/a.json": b"{}"}, what="extra/a.json only")
    assert not [p for p in stored(client) if "loop/" in p]


def status(daemon: Daemon) -> dict:
    code, body = daemon.get("/status")
    assert code == 200, body
    return json.loads(body)


# -- names ----------------------------------------------------------------------------------

LONG = "l" * 250 + ".json"  # a 255-byte component, the most a Linux file system allows
NAMES = {
    "new\nline.json": ("new\\nline.json", "file name has a control character"),
    "tab\there.json": ("tab\\there.json", "file name has a control character"),
    "esc\x1b[2J.json": ("esc\\x1b[2J.json", "file name has a control character"),
    os.fsdecode(b"caf\xe9.json"): ("caf\\xe9.json", "file name is not valid UTF-8"),
    f"{'d' * 255}/{LONG}": (f"{'d' * 255}/{LONG}", "invalid JSON"),
}


@pytest.fixture
def named(root: Path) -> Path:
    for name in NAMES:
        target = root / name
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(b"{broken" if name.endswith(LONG) else b"{}")
    (root / LONG).write_bytes(b'{"long": true}')
    return root


def test_odd_names_are_reported_one_line_each_and_long_names_work(valkey, named):
    result = hydrate(valkey.url, named)
    assert result.returncode == 1, result.stderr
    for shown, fragment in NAMES.values():
        assert len(reported(result.stderr, shown, fragment)) == 1, (shown, result.stderr)
    assert all(line.isprintable() for line in result.stderr.splitlines())
    assert stored(valkey.client()) == {**EXAMPLE_ASSETS, LONG: b'{"long": true}'}
    assert_verify_reports(named, dict(NAMES.values()))


def test_a_name_that_is_not_utf8_does_not_stop_the_daemon_getting_ready(
    valkey, named, start_daemon
):
    # Its rejection named an escaped path the reader did not know: the first full scan never
    # finished, so the daemon never became ready and never pruned.
    daemon = start_daemon(named)  # waits for /readyz 200
    rejected = status(daemon)["rejected"]
    for shown, fragment in NAMES.values():
        assert fragment in rejected[shown], rejected
    assert stored(valkey.client()) == {**EXAMPLE_ASSETS, LONG: b'{"long": true}'}


# -- size: a sparse gigabyte, a 100 MB string; JSON bombs ------------------------------------


def test_a_sparse_gigabyte_and_a_100mb_string_are_refused_by_size_unopened(valkey, root, tmp_path):
    sparse, string = root / "sparse.json", root / "string.json"
    with open(sparse, "wb") as f:
        f.truncate(1024 * MB)
    string.write_bytes(b'{"s": "' + b"x" * (100 * MB) + b'"}')
    with touches(sparse, string) as seen:
        run = measured(
            [sys.executable, "-m", "assetmgr", "hydrate", "--root", root, "--schemas", SCHEMAS,
             "--valkey-url", valkey.url],
            tmp_path / "rss", REPO,
        )  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert reported(run.stderr, "sparse.json", "1073741824 bytes is over the 16777216-byte")
    assert reported(run.stderr, "string.json", "is over the 16777216-byte limit")
    assert not seen.opened, seen
    assert run.peak_rss_mb < 150, run.peak_rss_mb
    assert stored(valkey.client()) == EXAMPLE_ASSETS


def test_a_100mb_string_under_a_raised_limit_parses_in_bounded_memory(tmp_path):
    root = tmp_path / "tree"
    root.mkdir()
    data = b'{"s": "' + b"x" * (100 * MB) + b'"}'
    (root / "string.json").write_bytes(data)
    run = measured(
        [sys.executable, "-m", "assetmgr", "verify", "--root", root, "--schemas", SCHEMAS,
         "--max-size", "200M", "--workers", "1"],
        tmp_path / "rss", REPO,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout == "1 checked: 1 valid, 0 invalid\n"
    # The file, its parsed string and the fast path's proof of no duplicate key: a few
    # copies of 100 MB, not a multiple of the input per nesting level.
    assert run.peak_rss_mb < 8 * len(data) / MB, run.peak_rss_mb


BOMBS = {
    "deep.json": (b"[" * 1_000_000 + b"]" * 1_000_000, "nesting deeper than 64"),
    "deep_objects.json": (b'{"a":' * 300_000 + b"1" + b"}" * 300_000, "nesting deeper than"),
    "inf.json": (b'{"a": 1e400}', "out of range"),
    "digits.json": (b'{"a": 1' + b"0" * 100_000 + b"}", "100001 digits is out of range"),
    "wide.json": (b"[" + b"[]," * 2_000_000 + b"[]]", "more than 1000000 JSON values"),
    "wide_under_the_limit.json": (b"[" + b"[]," * 450_000 + b"[]]", "must be object"),
    "keys.json": (b"{" + b",".join(b'"k%d":0' % i for i in range(300_000)) + b',"k7":1}',
                  "duplicate object key 'k7'"),
}  # fmt: skip


def test_json_bombs_are_rejected_in_bounded_time_and_memory(valkey, root, tmp_path):
    for name, (data, _) in BOMBS.items():
        (root / "bombs").mkdir(exist_ok=True)
        (root / "bombs" / name).write_bytes(data)
    for extra in ([], ["--max-depth", "1000000"]):
        client = valkey.client()
        client.flushall()
        run = measured(
            [sys.executable, "-m", "assetmgr", "hydrate", "--root", root, "--schemas", SCHEMAS,
             "--valkey-url", valkey.url, *extra],
            tmp_path / "rss", REPO, timeout=60,
        )  # fmt: skip
        assert run.returncode == 1, run.stderr
        for name, (_, fragment) in BOMBS.items():
            if extra and "deep" in name:
                fragment = "nesting deeper than"  # the parser's own limit, named as such
            assert reported(run.stderr, f"bombs/{name}", fragment), (name, run.stderr)
        assert run.peak_rss_mb < 300, run.peak_rss_mb
        assert stored(client) == EXAMPLE_ASSETS


# -- hard links -----------------------------------------------------------------------------


def protected_hardlinks() -> bool:
    return Path("/proc/sys/fs/protected_hardlinks").read_text().strip() != "0"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root+setpriv")
def test_hard_links_show_a_tree_writer_nothing_they_could_not_read(valkey):
    # A hard link is a regular file inside the root to the kernel. The policy (docs/security.md,
    # Security): with fs.protected_hardlinks on, only a file's owner or someone who may read
    # and write it can link it, so a link exposes nothing its maker could not copy; assetmgr
    # accepts it. With the sysctl off it rejects every file with more than one link.
    if not protected_hardlinks():
        pytest.skip("fs.protected_hardlinks is off here: assetmgr rejects hard links")
    base = Path(tempfile.mkdtemp(prefix="assetmgr-links-"))
    try:
        base.chmod(0o755)
        secret, public = base / "secret.json", base / "public.json"
        secret.write_bytes(SECRET)
        secret.chmod(0o600)
        public.write_bytes(b'{"public": true}')
        public.chmod(0o644)
        tree = base / "tree"
        shutil.copytree(EXAMPLES, tree)
        tree.chmod(0o777)
        for target in (secret, public):  # readable, not writable: still refused
            made = subprocess.run(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                 "ln", target, tree / f"{target.stem}-link.json"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert made.returncode != 0 and "Operation not permitted" in made.stderr, made
        os.link(public, tree / "linked.json")  # made by the file's owner: allowed, accepted
        result = hydrate(valkey.url, tree)
        assert result.returncode == 0, result.stderr
        assert stored(valkey.client()) == {**EXAMPLE_ASSETS, "linked.json": b'{"public": true}'}
    finally:
        shutil.rmtree(base)


# -- 100,000 files in one directory ----------------------------------------------------------


def test_100000_files_in_one_directory_hydrate_in_bounded_memory(valkey, tmp_path):
    root = tmp_path / "tree"
    bulk = root / "bulk"
    bulk.mkdir(parents=True)
    for i in range(100_000):
        (bulk / f"f{i:06}.json").write_bytes(b'{"i": %d}' % i)
    run = measured(
        [sys.executable, "-m", "assetmgr", "hydrate", "--root", root, "--schemas", SCHEMAS,
         "--valkey-url", valkey.url],
        tmp_path / "rss", REPO, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "100000 files" in run.stderr and "added=100000" in run.stderr, run.stderr
    client = valkey.client()
    assert client.get("asset:blob:bulk/f099999.json") is not None
    assert sum(1 for _ in client.scan_iter(match="v4:manifest:*", count=10_000)) == 100_000
    assert run.peak_rss_mb < 300, run.peak_rss_mb  # the target: all processes under 300 MB


# -- a directory made unreadable before and during a scan ------------------------------------


def dac() -> list[str]:
    wrapper = dac_wrapper()
    if wrapper is None:
        pytest.skip("running as root and setpriv (util-linux) is not installed")
    return wrapper


@pytest.fixture
def spread(root: Path) -> Path:
    """The examples and 40 directories of 25 assets each, so a scan takes a while."""
    for d in range(40):
        (root / f"d{d:02}").mkdir()
        for i in range(25):
            (root / f"d{d:02}" / f"f{i}.json").write_bytes(b'{"i": %d}' % i)
    return root


def test_a_directory_unreadable_before_and_during_hydrate_deletes_nothing(valkey, spread):
    wrapper = dac()
    client = valkey.client()
    assert hydrate(valkey.url, spread).returncode == 0
    before = stored(client)
    (spread / "cards").chmod(0)  # before the scan
    racing = spread / "weights"
    watch = INotify()
    for d in range(40):
        watch.add_watch(spread / f"d{d:02}", flags.OPEN)
    chmodded = threading.Event()

    def chmod_when_the_scan_runs() -> None:
        if watch.read(timeout=20_000):  # the walk opened one of the dNN directories
            racing.chmod(0)
            chmodded.set()

    thread = threading.Thread(target=chmod_when_the_scan_runs, daemon=True)
    thread.start()
    try:
        result = hydrate(valkey.url, spread, wrapper=wrapper)
    finally:
        thread.join(25)
        watch.close()
        (spread / "cards").chmod(0o755)
        racing.chmod(0o755)
    assert chmodded.is_set()
    assert result.returncode == 1, result.stderr
    assert reported(result.stderr, "path=cards ", "cannot list directory: Permission denied")
    # weights/ went unreadable while the walk ran: listed already (its files cannot be
    # read) or not yet (it cannot be listed). Either way it is reported and nothing goes.
    assert reported(result.stderr, "path=weights", "Permission denied"), result.stderr
    assert "not pruning" in result.stderr
    assert "Traceback" not in result.stderr
    assert stored(client) == before

    again = hydrate(valkey.url, spread, wrapper=wrapper)
    assert again.returncode == 0, again.stderr
    assert stored(client) == before


def test_the_daemon_keeps_an_unreadable_directory_and_root_and_says_so(
    valkey, spread, tmp_path, start_daemon, monkeypatch
):
    wrapper = dac()
    if wrapper:  # the daemon, run as a user the mode bits bind
        python = tmp_path / "python-without-dac"
        python.write_text(f'#!/bin/sh\nexec {" ".join(wrapper)} {sys.executable} "$@"\n')
        python.chmod(0o755)
        monkeypatch.setattr(sys, "executable", str(python))
    client = valkey.client()
    daemon = start_daemon(spread, "--reconcile-interval", "1")
    before = stored(client)
    try:
        (spread / "cards").chmod(0)
        wait_for(lambda: "cards" in status(daemon)["rejected"], what="cards/ reported")
        assert "cannot list directory" in status(daemon)["rejected"]["cards"]
        # Two more reconciles: each starts a second after the one before, so the deletes the
        # first one could decide were confirmed (or not) before the barrier's marker.
        reconciles = daemon.metric("assetmgr_rescans_total", reason="reconcile")
        wait_for(
            lambda: daemon.metric("assetmgr_rescans_total", reason="reconcile") >= reconciles + 2,
            what="two reconciles",
        )
        barrier(daemon, spread)
        assert stored(client) == before
        (spread / "cards").chmod(0o755)
        wait_for(lambda: "cards" not in status(daemon)["rejected"], what="cards/ cleared")

        with subscribe(client) as published:
            spread.chmod(0)
            alarm = f"root {spread} cannot be read: Permission denied; keeping every key"
            wait_for(lambda: daemon.get("/readyz")[1].startswith(alarm.encode()), what=alarm)
            assert alarm in daemon.log()
            assert stored(client) == before
            spread.chmod(0o755)
            # Every delete decided while the root was unreadable was sent before the marker.
            barrier(daemon, spread)
        assert published.items == [], "keys deleted while the root was unreadable"
    finally:
        (spread / "cards").chmod(0o755)
        spread.chmod(0o755)
    wait_for(lambda: daemon.get("/readyz")[0] == 200, what="ready again")
    assert stored(client) == before
