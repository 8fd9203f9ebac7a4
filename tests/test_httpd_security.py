"""The HTTP endpoint for hosts that expose it: basic auth with bcrypt hashes from a Prometheus
web config file, HTTPS, and clients that try to stall it.

The daemon test runs the real daemon; the hostile-client tests run the same StatusServer the
supervisor runs, in this process, on a real socket (with a 2 s request deadline instead of
10 s, so they wait less), and check that a normal GET /healthz answers meanwhile.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import orjson
import pytest
import yaml

from assetmgr import webconfig
from assetmgr.daemon.httpd import StatusServer
from assetmgr.webconfig import BasicAuth, WebSecurity
from conftest import SCHEMAS, Daemon, run_cli, wait_for
from tls import Certs

PASSWORD = "scrape-Pw-3b9d"
# exporter-toolkit's documented example: user prometheus, password "fakepassword", cost 10
TOOLKIT_HASH = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


def _auth_file(path: Path, users: dict[str, str]) -> Path:
    lines = ["# assetmgr's endpoint users", "basic_auth_users:"]
    lines += [f"  {user}: {hashed}" for user, hashed in users.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _basic(user: str, password: str | bytes) -> str:
    raw = password if isinstance(password, bytes) else password.encode()
    return "Basic " + base64.b64encode(user.encode() + b":" + raw).decode()


def _get(url: str, header: str | None = None, context: ssl.SSLContext | None = None):
    request = urllib.request.Request(url, headers={"Authorization": header} if header else {})
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


# The daemon with auth and HTTPS, from its settings.


def test_daemon_endpoint_with_basic_auth_and_https(root, tmp_path, tls_certs: Certs, valkey):
    auth = _auth_file(tmp_path / "web.yml", {"prometheus": _hash(PASSWORD)})
    if shutil.which("promtool"):  # the file is a Prometheus web config, as promtool sees it
        check = subprocess.run(["promtool", "check", "web-config", str(auth)], capture_output=True)
        assert check.returncode == 0, check.stderr
    server = tls_certs.server
    args = ["--root", str(root), "--schemas", str(SCHEMAS), "--valkey-url", valkey.url]
    args += ["--metrics-auth-file", str(auth)]
    args += ["--metrics-tls-cert", str(server.cert), "--metrics-tls-key", str(server.key)]
    daemon = Daemon(args, tmp_path / "daemon.log")
    https = f"https://127.0.0.1:{daemon.port}"
    trust = ssl.create_default_context(cafile=str(tls_certs.ca.cert))
    good = _basic("prometheus", PASSWORD)
    try:
        wait_for(
            lambda: (
                daemon.proc.poll() is None
                and _try(lambda: _get(https + "/readyz", good, trust)[0] == 200)
            ),
            30,
            what="the daemon ready over HTTPS",
        )
        code, headers, body = _get(https + "/metrics", good, trust)
        assert code == 200 and b"assetmgr_ready 1.0" in body
        assert orjson.loads(_get(https + "/status", good, trust)[2])["ready"] is True

        refused = [None, _basic("prometheus", "wrong"), _basic("nobody", PASSWORD)]
        refused += [_basic("prometheus", "x" * 73), _basic("prometheus", b"\xff" * 80)]
        refused += ["Basic !!!not-base64", "Basic " + base64.b64encode(b"no-colon").decode()]
        refused += ["Bearer abc", _basic("prometheus", PASSWORD[:-1])]
        for header in refused:
            code, headers, _ = _get(https + "/metrics", header, trust)
            assert code == 401, header
            assert headers["WWW-Authenticate"].startswith('Basic realm="assetmgr"'), headers
        with pytest.raises(OSError):  # clear HTTP to the HTTPS port: dropped
            urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/healthz", timeout=5)

        # A reload reads the users again.
        _auth_file(auth, {"grafana": _hash("other-Pw")})
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: _get(https + "/healthz", _basic("grafana", "other-Pw"), trust)[0] == 200,
            what="the new user after SIGHUP",
        )
        assert _get(https + "/healthz", good, trust)[0] == 401
    finally:
        assert daemon.stop() == 0, daemon.log()
    assert PASSWORD not in daemon.log() and "Traceback" not in daemon.log()


def _try(probe) -> bool:
    try:
        return bool(probe())
    except (OSError, ssl.SSLError):
        return False


def test_endpoint_settings_are_checked_at_start_exit_2(tmp_path, tls_certs: Certs):
    plaintext = tmp_path / "plain.yml"
    plaintext.write_text("basic_auth_users:\n  prometheus: fakepassword\n")
    with_tls = tmp_path / "with-tls.yml"
    with_tls.write_text(
        f"tls_server_config:\n  cert_file: x\nbasic_auth_users:\n  a: {TOOLKIT_HASH}\n"
    )
    empty = tmp_path / "empty.yml"
    empty.write_text("basic_auth_users:\n")
    server, client = tls_certs.server, tls_certs.client
    cases = {
        "metrics_auth_file: cannot read /nonexistent.yml: No such file or directory": [
            "--metrics-auth-file", "/nonexistent.yml",
        ],
        f"metrics_auth_file: {plaintext} line 2: the password of 'prometheus' is not a bcrypt"
        " hash": ["--metrics-auth-file", plaintext],
        f"metrics_auth_file: {with_tls} line 1: only basic_auth_users is read from this file": [
            "--metrics-auth-file", with_tls,
        ],
        f"metrics_auth_file: {empty} lists no basic_auth_users": ["--metrics-auth-file", empty],
        "metrics_tls_cert and metrics_tls_key go together": ["--metrics-tls-cert", server.cert],
        "metrics_tls_key: the key does not match the certificate": [
            "--metrics-tls-cert", server.cert, "--metrics-tls-key", client.key,
        ],
    }  # fmt: skip
    for message, options in cases.items():
        result = run_cli("daemon", "--root", tmp_path, "--schemas", SCHEMAS, *options, timeout=30)
        assert result.returncode == 2, (options, result.stderr)
        assert result.stderr.startswith(f"assetmgr: configuration error: {message}"), result.stderr


H = TOOLKIT_HASH
ACCEPTED = {
    "plain": f"basic_auth_users:\n  prometheus: {H}\n",
    "quoted": f"# c\nbasic_auth_users:\n  'a b': \"{H}\"  # note\n  \"c\": '{H}'\n",
    "indented-deeper": f"\n\nbasic_auth_users:   # users\n    x: {H}\n    y-1: {H}\n",
}


@pytest.mark.parametrize("text", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_the_auth_file_reads_as_yaml_and_promtool_read_it(tmp_path, text):
    path = tmp_path / "web.yml"
    path.write_text(text)
    users = webconfig.load_users(str(path))
    assert users == {k: v.encode() for k, v in yaml.safe_load(text)["basic_auth_users"].items()}
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "web-config", str(path)], capture_output=True)
        assert check.returncode == 0, check.stderr
    assert BasicAuth(users).allows(_basic(next(iter(users)), "fakepassword"))


def test_a_password_over_72_bytes_is_refused_even_when_its_first_72_match():
    """bcrypt looks at 72 bytes only (bcrypt<5 silently cut longer passwords there)."""
    long_password = "p" * 72
    auth = BasicAuth({"u": _hash(long_password).encode()})
    assert auth.allows(_basic("u", long_password))
    assert not auth.allows(_basic("u", long_password + "anything"))


# Hostile clients against the endpoint the supervisor runs.


@pytest.fixture(params=["http", "https"])
def endpoint(request, tls_certs: Certs) -> Iterator[tuple[StatusServer, str, ssl.SSLContext]]:
    web = WebSecurity()
    if request.param == "https":
        web = webconfig.load(None, str(tls_certs.server.cert), str(tls_certs.server.key))
    server = StatusServer(
        "127.0.0.1:0", lambda: (True, "ok"), lambda: (True, "ready"), dict, None, web, 2.0
    )
    server.start()
    trust = ssl.create_default_context(cafile=str(tls_certs.ca.cert))
    yield server, request.param, trust
    server.stop()


def _healthz_answers(server: StatusServer, scheme: str, trust: ssl.SSLContext) -> None:
    """A normal client meanwhile: answered, well within its 2 s timeout."""
    url = f"{scheme}://127.0.0.1:{server.port}/healthz"
    request = urllib.request.Request(url)
    with urllib.request.urlopen(request, timeout=2, context=trust) as response:
        assert response.status == 200 and response.read() == b"ok\n"


def _connect(server: StatusServer, scheme: str, trust: ssl.SSLContext, handshake: bool = True):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    if scheme == "https" and handshake:
        sock = trust.wrap_socket(sock, server_hostname="localhost")
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """Read until the server hangs up (True) or 30 s pass (False)."""
    try:
        while sock.recv(65536):
            pass
        return True
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError):
        return True


def test_a_client_that_sends_nothing_is_cut_off_and_stalls_no_one(endpoint):
    server, scheme, trust = endpoint
    silent = [_connect(server, scheme, trust, handshake=False) for _ in range(20)]
    _healthz_answers(server, scheme, trust)
    assert all(_closed_by_server(sock) for sock in silent)
    for sock in silent:
        sock.close()


def test_a_header_that_never_ends_is_refused(endpoint):
    server, scheme, trust = endpoint
    sock = _connect(server, scheme, trust)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: ")
    stop = threading.Event()

    def flood() -> None:
        try:
            while not stop.is_set():
                sock.sendall(b"a" * 4096)
        except (OSError, ssl.SSLError):
            pass

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    _healthz_answers(server, scheme, trust)
    sender.join(30)
    stop.set()
    assert not sender.is_alive(), "the server kept reading a header that never ends"
    sock.close()


def test_a_header_sent_a_byte_at_a_time_hits_the_request_deadline(endpoint):
    """Each byte comes well within the read timeout and the header stays far below the line
    limit: only the deadline on the whole request cuts this client off."""
    server, scheme, trust = endpoint
    sock = _connect(server, scheme, trust)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
    closed = threading.Event()

    def drip() -> None:
        try:
            for _ in range(600):  # two minutes of one header
                sock.sendall(b"y")
                if closed.wait(0.2):
                    return
        except (OSError, ssl.SSLError):
            closed.set()

    threading.Thread(target=drip, daemon=True).start()
    _healthz_answers(server, scheme, trust)
    wait_for(closed.is_set, 30, what="the dripping client to be cut off")
    sock.close()


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(b"GET /" + b"a" * 1_000_000 + b" HTTP/1.1\r\n\r\n", b" 414 ", id="huge-line"),
        pytest.param(os.urandom(8192).replace(b"\n", b"") + b"\r\n\r\n", b"", id="garbage"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01" + b"\x00" * 500, b"", id="tls-to-clear"),
        pytest.param(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n", b" 431 ", id="headers"),
    ],
)  # fmt: skip
def test_malformed_requests_are_answered_or_dropped(endpoint, payload, expected):
    server, scheme, trust = endpoint
    sock = _connect(server, scheme, trust)
    with contextlib.suppress(OSError, ssl.SSLError):  # it may hang up before reading it all
        sock.sendall(payload)
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except (OSError, ssl.SSLError):
        pass
    sock.close()
    assert expected in answer.split(b"\r\n", 1)[0] + b" ", answer[:200]
    _healthz_answers(server, scheme, trust)
