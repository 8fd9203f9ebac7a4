"""A loopback TCP proxy in front of valkey-server that cuts connections by volume, not by time.

Each connection through it is cut (both sides closed, mid-command if it falls there) once the
client has sent `budget` bytes, until `most` cuts were made; then connections pass untouched.
Where a cut lands in the stream does not depend on how fast the code under test is: a batch
bigger than what is left of the budget is cut in the middle, however quickly it is sent.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class CuttingProxy:
    def __init__(self, upstream_port: int, budget: int, most: int = 25) -> None:
        self.upstream_port = upstream_port
        self.budget = budget
        self.most = most
        self.cuts = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._open: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone does not)
        self._listener.close()
        self._thread.join(5)
        with self._lock:
            for sock in self._open:
                _close(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed by __exit__
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                _close(client)  # Valkey is down: so is the connection
                continue
            with self._lock:
                self.connections += 1
                self._open |= {client, server}
            threading.Thread(target=self._upstream, args=(client, server), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client), daemon=True).start()

    def _upstream(self, client: socket.socket, server: socket.socket) -> None:
        """Client to Valkey: forward up to the budget, then cut (while cuts are left)."""
        sent = 0
        while chunk := _recv(client):
            with self._lock:
                cutting = self.cuts < self.most
            if cutting and sent + len(chunk) >= self.budget:
                _sendall(server, chunk[: self.budget - sent])
                with self._lock:
                    self.cuts += 1
                break
            if not _sendall(server, chunk):
                break
            sent += len(chunk)
        self._hang_up(client, server)

    def _downstream(self, server: socket.socket, client: socket.socket) -> None:
        while (chunk := _recv(server)) and _sendall(client, chunk):
            pass
        self._hang_up(client, server)

    def _hang_up(self, *socks: socket.socket) -> None:
        with self._lock:
            for sock in socks:
                _close(sock)
                self._open.discard(sock)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _sendall(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
