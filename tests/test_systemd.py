"""The sd_notify protocol against a real datagram socket, and the shipped unit file."""

import configparser
import signal
import socket

from conftest import REPO, disk_assets, stored, wait_for


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
    unit.read(REPO / "systemd" / "assetmgr.service")
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
