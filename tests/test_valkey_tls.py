"""TLS to Valkey for real: stunnel in front of valkey-server (tests/tls.py), the CLI and the
daemon pointed at the TLS port only, and every refusal a one-line reason with exit code 3.

"Promptly" is shown without timing anything: the refusals run with a connect timeout longer
than the subprocess may take, so a refusal treated as an outage (retried until the timeout)
fails the test; and stunnel's log counts the handshakes tried.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard
from cryptography.hazmat.primitives import serialization

from assetmgr.client import AssetClient
from assetmgr.store.connection import Endpoint
from assetmgr.store.tls import ValkeyTls
from conftest import SCHEMAS, Daemon, Valkey, disk_assets, run_cli, stored, wait_for
from tls import Certs, TlsValkey

Start = Callable[..., TlsValkey]
PATIENT = ("--connect-timeout", "60")  # a refusal retried as an outage would outlive run_cli
QUICK = 40  # seconds run_cli may take


def cli(command: str, url: str, *extra: str | Path, timeout: float = QUICK):
    args: list[str | Path] = [command]
    if command in ("hydrate", "status"):
        args += ["--root", extra[0], "--schemas", SCHEMAS]
        extra = extra[1:]
    return run_cli(*args, "--valkey-url", url, *extra, timeout=timeout)


def trusted(tls: TlsValkey) -> list[str]:
    return ["--tls-ca-file", str(tls.ca_file)]


def handshakes(tls: TlsValkey) -> int:
    return tls.stunnel.log().count("accepted connection from")


def test_hydrate_status_get_and_the_client_over_tls(tls_valkey: Start, valkey: Valkey, root):
    tls = tls_valkey()
    result = cli("hydrate", tls.url, root, *trusted(tls))
    assert result.returncode == 0, result.stderr
    assert stored(valkey.client()) == disk_assets(root)

    status = cli("status", tls.url, root, *trusted(tls))
    assert status.returncode == 0, status.stderr
    got = cli("get", tls.url, "weights/cost.json", *trusted(tls))
    assert got.returncode == 0 and got.stdout == (root / "weights/cost.json").read_text()

    valkeys = tls.url.replace("rediss://", "valkeys://")
    endpoint = Endpoint(valkeys, tls=ValkeyTls(ca_file=str(tls.ca_file)))
    asset = AssetClient.from_url(endpoint).get("routes/api.json")
    assert asset is not None and asset.data == (root / "routes/api.json").read_bytes()


def test_daemon_over_tls_propagates_an_edit_and_stops_cleanly(
    tls_valkey: Start, valkey: Valkey, root, start_daemon
):
    tls = tls_valkey()
    daemon = start_daemon(root, "--valkey-url", tls.url, *trusted(tls))  # the last URL wins
    client = valkey.client()
    assert stored(client) == disk_assets(root)
    (root / "settings.json").write_bytes(b'{"mode": "tls"}\n')
    dctx = zstandard.ZstdDecompressor()

    def edited() -> bool:
        blob = client.get("asset:blob:settings.json")
        return blob is not None and dctx.decompress(blob) == b'{"mode": "tls"}\n'

    wait_for(edited, what="the edit to arrive over TLS")
    assert daemon.stop(signal.SIGTERM) == 0, daemon.log()
    assert "Traceback" not in daemon.log()


def test_mutual_tls_with_a_client_certificate(tls_valkey: Start, valkey: Valkey, root):
    tls = tls_valkey(mutual=True)
    client = ["--tls-cert-file", str(tls.client_cert), "--tls-key-file", str(tls.client_key)]
    result = cli("hydrate", tls.url, root, *trusted(tls), *client)
    assert result.returncode == 0, result.stderr
    assert stored(valkey.client()) == disk_assets(root)


def _refusal_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if "TLS to 127.0.0.1:" in line]
    assert len(lines) == 1, stderr
    return lines[0]


REFUSALS = [
    pytest.param(
        "server", False, "other_ca", [],
        "the server's certificate was refused: unable to get local issuer certificate "
        "(is tls_ca_file the CA that signed it?)",
        id="wrong-ca",
    ),
    pytest.param(
        "expired", False, "ca", [],
        "the server's certificate was refused: certificate has expired",
        id="expired",
    ),
    pytest.param(
        "wrong_host", False, "ca", [],
        "the server's certificate was refused: IP address mismatch, certificate is not valid "
        "for '127.0.0.1' (tls_server_name sets the name to check)",
        id="wrong-host",
    ),
    pytest.param(
        "wrong_host", False, "ca", ["--tls-server-name", "other.example"],
        "the server's certificate was refused: Hostname mismatch, certificate is not valid "
        "for 'other.example' (tls_server_name sets the name to check)",
        id="wrong-server-name",
    ),
    pytest.param(
        "server", True, "ca", ["other_client"],
        "the server refused our client certificate (tlsv1 alert unknown ca)",
        id="client-cert-from-another-ca",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("cert", "mutual", "ca", "extra", "reason"), REFUSALS)
def test_refusals_are_one_line_and_exit_3_without_retries(
    tls_valkey: Start, tls_certs: Certs, root, cert, mutual, ca, extra, reason
):
    tls = tls_valkey(cert=cert, mutual=mutual)
    if extra == ["other_client"]:
        pair = tls_certs.other_client
        extra = ["--tls-cert-file", str(pair.cert), "--tls-key-file", str(pair.key)]
    options = ["--tls-ca-file", str(getattr(tls_certs, ca).cert), *extra, *PATIENT]
    expected = f"TLS to 127.0.0.1:{tls.port}: {reason}"
    for command, target in (("hydrate", root), ("status", root), ("get", "settings.json")):
        before = handshakes(tls)
        result = cli(command, tls.url, target, *options)
        assert result.returncode == 3, (command, result.stderr)
        line = _refusal_line(result.stderr)
        if mutual and "closed the connection during set-up" in line:
            continue  # TLS 1.3: the alert may be lost to an EOF (test_tls_infra.py)
        assert line.endswith(expected), (command, line)
        # Each client of the command tries once (at most 4 of them); redis-py's default
        # retries would make that 11 handshakes per client.
        assert handshakes(tls) - before <= 6, tls.stunnel.log()


def test_mutual_tls_without_a_client_certificate_is_refused(tls_valkey: Start, root):
    tls = tls_valkey(mutual=True)
    result = cli("hydrate", tls.url, root, *trusted(tls), *PATIENT)
    assert result.returncode == 3, result.stderr
    line = _refusal_line(result.stderr)
    assert line.endswith(
        (
            "the server requires a client certificate (set tls_cert_file and tls_key_file)",
            "the server closed the connection during set-up "
            "(does it require a client certificate, or refuse ours?)",
        )
    ), line


def test_a_tls_url_to_a_clear_text_port_is_unreachable_exit_3(valkey: Valkey, root):
    """Valkey reads a TLS hello as the start of a command and waits for the rest: the
    handshake times out, as any server that does not answer."""
    url = f"rediss://127.0.0.1:{valkey.port}/0"
    result = cli("hydrate", url, root, "--connect-timeout", "1")
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"assetmgr: error: cannot reach Valkey at {url}: Timeout connecting to server"
    )


def test_a_daemon_refused_by_tls_exits_3_saying_why(tls_valkey: Start, root, tmp_path):
    tls = tls_valkey(cert="expired")
    args = ["--root", str(root), "--schemas", str(SCHEMAS), "--valkey-url", tls.url]
    daemon = Daemon([*args, *trusted(tls)], tmp_path / "daemon.log")
    try:
        wait_for(lambda: daemon.proc.poll() is not None, 30, what="the daemon to give up")
    finally:
        code = daemon.stop()
    log = daemon.log()
    assert code == 3, log
    assert "Traceback" not in log
    assert "the server's certificate was refused: certificate has expired" in log
    assert "writer cannot start (exit code 3); giving up" in log


def test_server_name_and_insecure_opt_outs(tls_valkey: Start, valkey: Valkey, root):
    named = tls_valkey(cert="wrong_host")
    result = cli("hydrate", named.url, root, *trusted(named), "--tls-server-name", "wrong.example")
    assert result.returncode == 0, result.stderr
    assert stored(valkey.client()) == disk_assets(root)

    expired = tls_valkey(cert="expired")
    result = cli("status", expired.url, root, "--tls-insecure")
    assert result.returncode == 0, result.stderr
    assert "WARNING" in result.stderr and "tls_insecure is set" in result.stderr


def _encrypted_key(tls_certs: Certs, path: Path) -> Path:
    key = serialization.load_pem_private_key(tls_certs.client.key.read_bytes(), None)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return path


def test_tls_files_are_checked_at_start_exit_2(tls_certs: Certs, root, tmp_path):
    url = "rediss://127.0.0.1:1/0"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    client, server = tls_certs.client, tls_certs.server
    cases = {
        "tls_ca_file: cannot read /nonexistent/ca.pem: No such file or directory": [
            "--tls-ca-file", "/nonexistent/ca.pem",
        ],
        f"tls_ca_file: cannot read {tmp_path}: Is a directory": ["--tls-ca-file", tmp_path],
        f"tls_ca_file: {garbage} holds no PEM certificate": ["--tls-ca-file", garbage],
        "tls_key_file is set without tls_cert_file": ["--tls-key-file", client.key],
        "tls_key_file: the key does not match the certificate": [
            "--tls-cert-file", client.cert, "--tls-key-file", server.key,
        ],
        "tls_cert_file / tls_key_file: not a PEM certificate and key": [
            "--tls-cert-file", garbage, "--tls-key-file", client.key,
        ],
        "tls_key_file: the key is encrypted; assetmgr takes an unencrypted key file": [
            "--tls-cert-file", client.cert,
            "--tls-key-file", _encrypted_key(tls_certs, tmp_path / "encrypted.key"),
        ],
    }  # fmt: skip
    for message, options in cases.items():
        for command, target in (("hydrate", root), ("get", "x.json")):
            result = cli(command, url, target, *options)
            assert result.returncode == 2, (options, result.stderr)
            assert result.stderr.startswith(f"assetmgr: configuration error: {message}"), (
                result.stderr
            )
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_tls_settings_need_a_tls_url_and_the_url_takes_no_ssl_options(tls_certs: Certs, root):
    ca = str(tls_certs.ca.cert)
    clear = run_cli("get", "x.json", "--valkey-url", "redis://127.0.0.1:1/0", "--tls-ca-file", ca)
    assert clear.returncode == 2
    assert "tls_* settings are set but valkey_url is not a TLS URL" in clear.stderr
    with_query = f"rediss://127.0.0.1:1/0?ssl_cert_reqs=none&ssl_ca_certs={ca}"
    query = run_cli("get", "x.json", "--valkey-url", with_query)
    assert query.returncode == 2
    assert query.stderr.strip() == (
        "assetmgr: configuration error: valkey_url (from command line): TLS options go in the "
        "tls_* settings, not in the URL (ssl_ca_certs, ssl_cert_reqs)"
    )
    env = run_cli(
        "get", "x.json", env={"ASSETMGR_VALKEY_URL": "valkeys://127.0.0.1:1/0",
                              "ASSETMGR_TLS_CA_FILE": "/nonexistent/ca.pem"},
    )  # fmt: skip
    assert env.returncode == 2 and "tls_ca_file: cannot read /nonexistent/ca.pem" in env.stderr
