"""The supervisor's HTTP endpoint: /metrics, /healthz, /readyz, /status (DESIGN §6).

It runs in a thread of the supervisor and only reads snapshots: the state the supervisor keeps,
and the children's gauges in the metrics directory (the writer's `assetmgr_valkey_up`, the queue
depths), which are the only view the supervisor has of them. It never talks to the children or to
Valkey itself. Readiness is the supervisor's (first hydration done, pipeline alive) and Valkey
reachable as the writer last saw it; `assetmgr_ready` reports the same as /readyz.
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
        def do_GET(self) -> None:
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

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug(format % args)

    return Handler
