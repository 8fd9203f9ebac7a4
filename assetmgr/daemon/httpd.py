"""The supervisor's HTTP endpoint: /metrics, /healthz, /readyz, /status.

It runs in a thread of the supervisor and only reads snapshots: the state the supervisor keeps,
and the children's gauges in the metrics directory (the writer's `assetmgr_valkey_up`, the queue
depths), which are the only view the supervisor has of them. It never talks to the children or to
Valkey itself. Readiness is the supervisor's (first hydration done, pipeline alive) and Valkey
reachable as the writer last saw it; `assetmgr_ready` reports the same as /readyz.

Hostile clients cannot stall it: every connection has its own thread, each read a timeout, and
the request line and headers must arrive whole within REQUEST_DEADLINE (a client that sends
nothing, or a header a byte at a time, is cut off); http.server refuses lines over 64 KiB and
more than 100 headers. The TLS handshake runs in the connection's thread, never in the
accepting one. Optional basic auth and HTTPS come from webconfig.py.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from assetmgr import metrics
from assetmgr.webconfig import WebSecurity

log = logging.getLogger("assetmgr.http")

Probe = Callable[[], tuple[bool, str]]
READ_TIMEOUT = 10.0  # seconds any one read may wait
REQUEST_DEADLINE = 10.0  # seconds the request line and headers may take in all
MAX_CONNECTIONS = 128  # served at once; more are closed unanswered


class Deadlines:
    """Shuts the connections whose request is overdue; one thread for all of them."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._due: dict[socket.socket, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="http-deadlines", daemon=True)
        self._thread.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._due[sock] = time.monotonic() + self.seconds

    def release(self, sock: socket.socket) -> None:
        with self._lock:
            self._due.pop(sock, None)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            now = time.monotonic()
            with self._lock:
                late = [sock for sock, due in self._due.items() if due <= now]
                for sock in late:
                    del self._due[sock]
            for sock in late:  # the blocked read in the connection's thread then ends
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], deadline: float
    ) -> None:
        super().__init__(address, handler)
        self.web = WebSecurity()
        self.deadlines = Deadlines(deadline)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        context = self.web.context
        if context is None:
            return sock, address
        # The handshake waits for the first read, in the connection's own thread.
        return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.deadlines.release(request)
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up, timed out or failed the handshake: one debug line, not the
        traceback socketserver prints."""
        log.debug("HTTP connection from %s ended: %r", client_address[0], sys.exc_info()[1])

    def server_close(self) -> None:
        self.deadlines.stop()
        super().server_close()


class StatusServer:
    def __init__(
        self,
        address: str,
        health: Probe,
        ready: Probe,
        status: Callable[[], dict[str, object]],
        multiprocess_dir: str | None,
        web: WebSecurity | None = None,
        request_deadline: float = REQUEST_DEADLINE,
    ) -> None:
        host, _, port = address.rpartition(":")
        handler = _handler(health, ready, status, multiprocess_dir)
        self.server = _Server((host.strip("[]"), int(port)), handler, request_deadline)
        self.server.web = web or WebSecurity()
        self.thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def secure(self, web: WebSecurity) -> None:
        """New users and certificate (a reload), for the connections that come next."""
        self.server.web = web

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def ready_probe(ready: Probe, mp_dir: str | None) -> Probe:
    """The supervisor's readiness, withdrawn while the writer cannot reach Valkey."""

    def probe() -> tuple[bool, str]:
        ok, reason = ready()
        if ok and metrics.live(mp_dir).valkey_up is False:
            return False, "Valkey unreachable"
        return ok, reason

    return probe


def status_doc(status: Callable[[], dict[str, object]], mp_dir: str | None) -> dict[str, object]:
    """The supervisor's /status plus what only the children's gauges tell."""
    doc = dict(status())
    seen = metrics.live(mp_dir)
    doc["queues"] = seen.queues
    doc["valkey_up"] = seen.valkey_up
    return doc


def _handler(
    health: Probe, ready: Probe, status: Callable[[], dict[str, object]], mp_dir: str | None
) -> type[BaseHTTPRequestHandler]:
    is_ready = ready_probe(ready, mp_dir)

    class Handler(BaseHTTPRequestHandler):
        server: _Server
        timeout = READ_TIMEOUT

        def setup(self) -> None:
            self.server.deadlines.watch(self.request)
            super().setup()
            if hasattr(self.request, "do_handshake"):
                self.request.do_handshake()

        def parse_request(self) -> bool:
            parsed = super().parse_request()  # reads the headers
            self.server.deadlines.release(self.request)
            return parsed

        def do_GET(self) -> None:
            auth = self.server.web.auth
            if auth is not None and not auth.allows(self.headers.get("Authorization")):
                self._send(401, b"unauthorized\n", "text/plain", realm=True)
                return
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body = metrics.render(mp_dir, ready=is_ready()[0])
                self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
            elif path in ("/healthz", "/readyz"):
                ok, reason = (health if path == "/healthz" else is_ready)()
                self._send(200 if ok else 503, (reason + "\n").encode(), "text/plain")
            elif path == "/status":
                body = orjson.dumps(
                    status_doc(status, mp_dir), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
                )
                self._send(200, body, "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, code: int, body: bytes, content_type: str, realm: bool = False) -> None:
            self.send_response(code)
            if realm:
                self.send_header("WWW-Authenticate", 'Basic realm="assetmgr", charset="UTF-8"')
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug(format % args)

    return Handler
