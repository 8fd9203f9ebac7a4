"""Secrets never leak: the Valkey password, however it is given (in the URL on the command line,
in ASSETMGR_VALKEY_URL, in a password file, as a systemd credential), appears in no log line
(text or JSON, at DEBUG), no HTTP answer (/status, /metrics, ...), no child process's command
line or environment, no crash report, and no message of a failure path: wrong password,
unreachable server, TLS refused.

Each check could fail: the supervisor's own command line does hold the password when the
operator typed it there, and the test finds it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import (
    MANAGER_PASSWORD,
    SCHEMAS,
    Daemon,
    Valkey,
    disk_assets,
    free_port,
    http_get,
    run_cli,
    start_acl_valkey,
    stored,
    wait_for,
)
from tls import TlsValkey

SECRET = MANAGER_PASSWORD
WRONG = "Wr0ng-Pa55-c41e"
ENDPOINTS = ("/status", "/metrics", "/healthz", "/readyz", "/nope")


@pytest.fixture
def locked(tmp_path: Path):
    """The shipped ACL: the `assetmgr` user's password is SECRET."""
    handle = start_acl_valkey(tmp_path)
    yield handle
    handle.server._cleanup()


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            kids = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        out += map(int, kids)
        todo += map(int, kids)
    return out


def _proc(pid: int, name: str) -> str:
    try:
        return (
            Path(f"/proc/{pid}/{name}").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _sources(valkey: Valkey, tmp_path: Path, source: str) -> tuple[list[str], dict[str, str]]:
    """The daemon's Valkey options and environment for one way of giving the password."""
    url = f"redis://assetmgr@127.0.0.1:{valkey.port}/0"
    if source == "url-on-the-command-line":
        return ["--valkey-url", valkey.url], {}
    if source == "url-in-the-environment":
        return [], {"ASSETMGR_VALKEY_URL": valkey.url}
    if source == "password-file":
        path = tmp_path / "password"
        path.write_text(SECRET + "\n")
        return ["--valkey-url", url, "--valkey-password-file", str(path)], {}
    credentials = tmp_path / "credentials"  # what systemd's LoadCredential= makes
    credentials.mkdir()
    (credentials / "valkey-password").write_text(SECRET)
    env = {
        "CREDENTIALS_DIRECTORY": str(credentials),
        "ASSETMGR_VALKEY_PASSWORD_FILE": str(credentials / "valkey-password"),
        "ASSETMGR_VALKEY_URL": url,
    }
    return [], env


@pytest.mark.parametrize(
    ("source", "log_format"),
    [
        ("url-on-the-command-line", "text"),
        ("url-in-the-environment", "json"),
        ("password-file", "json"),
        ("systemd-credential", "text"),
    ],
)
def test_a_running_daemon_shows_the_password_nowhere(locked, root, tmp_path, source, log_format):
    options, env = _sources(locked, tmp_path, source)
    env["PYTHONFAULTHANDLER"] = "1"  # a crashed child prints its stacks: a crash report
    args = ["--root", str(root), "--schemas", str(SCHEMAS), "--workers", "2", *options]
    args += ["--log-format", log_format, "--log-level", "DEBUG"]
    daemon = Daemon(args, tmp_path / "daemon.log", env)
    try:
        daemon.wait_ready()
        assert stored(locked.client()) == disk_assets(root)
        (root / "settings.json").write_bytes(b'{"seen": true}\n')
        wait_for(lambda: stored(locked.client()) == disk_assets(root), what="the edit")
        shown = {path: daemon.get(path)[1].decode(errors="replace") for path in ENDPOINTS}
        processes = {pid: _proc(pid, "cmdline") for pid in _descendants(daemon.proc.pid)}
        environments = {pid: _proc(pid, "environ") for pid in processes}
        supervisor = _proc(daemon.proc.pid, "cmdline")
        assert {"reader", "writer", "worker"} <= set(daemon.children()), processes

        worker, writer = daemon.children()["worker"][0], daemon.children()["writer"][0]
        os.kill(worker, signal.SIGSEGV)  # crash reports: faulthandler's, the supervisor's
        os.kill(writer, signal.SIGSEGV)
        wait_for(lambda: "writer died" in daemon.log(), what="the writer's crash to be seen")
        daemon.wait_ready()
    finally:
        code = daemon.stop()
    log = daemon.log()
    assert code == 0, log
    assert "Fatal Python error: Segmentation fault" in log  # the crash report is in the log
    assert SECRET not in log
    for path, body in shown.items():
        assert body and SECRET not in body, path
    for pid, cmdline in processes.items():
        assert cmdline and SECRET not in cmdline, (pid, cmdline)
        assert SECRET not in environments[pid], pid
    # The operator's own command line is the operator's: there, and only there, it shows.
    assert (SECRET in supervisor) == (source == "url-on-the-command-line"), supervisor


def _failure_paths(locked: Valkey, tls: TlsValkey, tmp_path: Path) -> dict[str, list[str]]:
    wrong_file = tmp_path / "wrong"
    wrong_file.write_text(WRONG + "\n")
    closed = free_port()
    return {
        "wrong password in the URL": [
            "--valkey-url", f"redis://assetmgr:{WRONG}@127.0.0.1:{locked.port}/0",
        ],
        "wrong password in a file": [
            "--valkey-url", f"redis://assetmgr@127.0.0.1:{locked.port}/0",
            "--valkey-password-file", str(wrong_file),
        ],
        "unreachable": ["--valkey-url", f"redis://assetmgr:{SECRET}@127.0.0.1:{closed}/0"],
        "TLS refused": [
            "--valkey-url", tls.url.replace("rediss://", f"rediss://assetmgr:{SECRET}@"),
            "--tls-ca-file", str(tls.ca_file),
        ],
    }  # fmt: skip


def test_failure_paths_print_no_password(
    locked, tls_valkey: Callable[..., TlsValkey], root, tmp_path
):
    paths = _failure_paths(locked, tls_valkey(cert="expired"), tmp_path)
    scan = ["--root", str(root), "--schemas", str(SCHEMAS)]
    commands = {
        "hydrate": ["hydrate", *scan],
        "status": ["status", *scan],
        "get": ["get", "x.json"],
    }
    for what, options in paths.items():
        for name, command in commands.items():
            for log_format in ("text", "json"):
                result = run_cli(
                    *command, *options, "--connect-timeout", "1", "--log-level", "DEBUG",
                    "--log-format", log_format, timeout=60,
                )  # fmt: skip
                output = result.stdout + result.stderr
                assert result.returncode == 3, (what, name, output)
                assert SECRET not in output and WRONG not in output, (what, name, output)
                assert "Traceback" not in output, (what, name, output)
    env_url = {"ASSETMGR_VALKEY_URL": f"redis://assetmgr:{WRONG}@127.0.0.1:{locked.port}/0"}
    result = run_cli("get", "x.json", "--log-level", "DEBUG", env=env_url)
    assert result.returncode == 3 and WRONG not in result.stdout + result.stderr


@pytest.mark.parametrize("what", ["wrong password in the URL", "unreachable", "TLS refused"])
def test_a_failing_daemon_prints_no_password(
    locked, tls_valkey: Callable[..., TlsValkey], root, tmp_path, what
):
    options = _failure_paths(locked, tls_valkey(cert="expired"), tmp_path)[what]
    args = ["--root", str(root), "--schemas", str(SCHEMAS), *options, "--log-level", "DEBUG"]
    daemon = Daemon([*args, "--connect-timeout", "1"], tmp_path / "daemon.log")
    try:
        if what == "unreachable":  # alive, not ready, retrying: what does it show meanwhile?
            wait_for(lambda: "cannot reach Valkey" in daemon.log(), what="the outage logged")
            bodies = [http_get(daemon.http + path)[1].decode() for path in ENDPOINTS]
            assert all(bodies) and not [b for b in bodies if SECRET in b], bodies
        else:  # refused for good: exit 3, saying why
            wait_for(lambda: daemon.proc.poll() is not None, 30, what="the daemon to give up")
    finally:
        code = daemon.stop()
    log = daemon.log()
    assert code == (0 if what == "unreachable" else 3), log
    assert SECRET not in log and WRONG not in log, log
    assert "Traceback" not in log, log
