"""The sd_notify protocol against a real datagram socket, and the shipped unit file."""

import configparser
import re
import shutil
import signal
import socket
import subprocess

import pytest

from conftest import REPO, disk_assets, stored, wait_for

UNIT = REPO / "systemd" / "assetmgr.service"
INSTALLED = "/opt/assetmgr/.venv/bin/assetmgr"  # where the README's install puts the program
EXPOSURE = 1.7  # `systemd-analyze security`: "OK"; a change may lower it, never raise it
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (.ci/run installs systemd)"
)


def _listen(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.1)
    return sock


def _received(sock, into):
    try:
        while True:
            into.extend(sock.recv(4096).decode().splitlines())
    except (TimeoutError, BlockingIOError):
        pass
    return into


def test_ready_after_hydration_watchdog_pings_and_stopping(valkey, root, start_daemon, tmp_path):
    sock = _listen(tmp_path / "notify.sock")
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "400000"}
    daemon = start_daemon(root, env=env, ready=False)
    messages: list[str] = []
    wait_for(lambda: "READY=1" in _received(sock, messages), what="READY=1")
    # READY comes only once Valkey holds the tree.
    assert stored(valkey.client()) == disk_assets(root)
    assert messages.index("STATUS=hydrating") < messages.index("READY=1")
    before = messages.count("WATCHDOG=1")
    wait_for(lambda: _received(sock, messages).count("WATCHDOG=1") >= before + 2, what="pings")

    assert daemon.stop(signal.SIGTERM) == 0
    assert "STOPPING=1" in _received(sock, messages)


def test_abstract_notify_socket(valkey, root, start_daemon):
    name = f"assetmgr-test-{id(root)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(0.1)
    start_daemon(root, env={"NOTIFY_SOCKET": "@" + name}, ready=False)
    messages: list[str] = []
    wait_for(lambda: "READY=1" in _received(sock, messages), what="READY=1 on @socket")


def test_unit_file_is_a_hardened_notify_service():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(UNIT)
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["ExecReload"].endswith("kill -HUP $MAINPID")
    assert service["Restart"] == "on-failure"
    assert service["User"] == "assetmgr"
    for key in ("NoNewPrivileges", "PrivateTmp"):
        assert service[key] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert "AF_INET" in service["RestrictAddressFamilies"]
    assert "WatchdogSec" in service


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, "--no-pager", *args], capture_output=True, text=True, timeout=60, check=False
    )


@needs_analyze
def test_systemd_analyze_verify_has_nothing_to_say_about_the_unit(tmp_path):
    """verify exits 0 on a misspelt or unknown directive (a hardening line silently ignored),
    so any output fails. It also checks that ExecStart's program exists, which is only true
    once installed: the copy it checks differs in that path alone, naming a stand-in."""
    stand_in = tmp_path / "assetmgr"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    text = UNIT.read_text()
    assert text.count(INSTALLED) == 1
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED, str(stand_in)))

    result = analyze("verify", str(copy))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_analyze
def test_systemd_analyze_security_rates_the_unit_ok_at_1_7_or_better():
    threshold = round(EXPOSURE * 10)  # --threshold counts in tenths of the printed level
    result = analyze("security", "--offline=true", f"--threshold={threshold}", str(UNIT))
    overall = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert overall, result.stdout + result.stderr
    assert float(overall.group(1)) <= EXPOSURE, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr
