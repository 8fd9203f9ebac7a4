"""The supervisor's HTTP endpoint: /metrics, /healthz, /readyz, /status (DESIGN §6).

It runs in a thread of the supervisor and only reads a snapshot the supervisor keeps; it never
talks to the children or to Valkey itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

from . import metrics

log = logging.getLogger("assetmgr.http")

Probe = Callable[[], tuple[bool, str]]


class StatusServer:
    def __init__(
        self,
        address: str,
        health: Probe,
        ready: Probe,
        status: Callable[[], dict[str, object]],
        multiprocess_dir: str | None,
    ) -> None:
        host, _, port = address.rpartition(":")
        handler = _handler(health, ready, status, multiprocess_dir)
        self.server = ThreadingHTTPServer((host.strip("[]"), int(port)), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(
    health: Probe, ready: Probe, status: Callable[[], dict[str, object]], mp_dir: str | None
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.render(mp_dir), "text/plain; version=0.0.4; charset=utf-8")
            elif path in ("/healthz", "/readyz"):
                ok, reason = (health if path == "/healthz" else ready)()
                self._send(200 if ok else 503, (reason + "\n").encode(), "text/plain")
            elif path == "/status":
                body = orjson.dumps(status(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
                self._send(200, body, "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug(format % args)

    return Handler
