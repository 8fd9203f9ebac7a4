"""The TLS test infrastructure itself: stunnel in front of valkey-server, with the certificates
of tests/tls.py, refuses and accepts exactly what the TLS tests of assetmgr rely on.

What redis-py 8.1 raises is pinned here, since assetmgr turns it into a one-line reason: always
redis.exceptions.ConnectionError, with the ssl module's exception as `__context__` (not
`__cause__`). Each refusal takes ~30 ms with retries off; with redis-py's default Retry (10
attempts, 10 ms-1 s backoff) the same refusal takes 3-5 s, so these clients turn retries off.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from cryptography import x509
from redis.backoff import NoBackoff
from redis.retry import Retry

from conftest import Valkey
from tls import Certs, TlsValkey, stunnel_binary

NO_RETRY = Retry(NoBackoff(), 0)
Start = Callable[..., TlsValkey]


def _refusal(client: redis.Redis) -> tuple[redis.ConnectionError, BaseException]:
    """The error a PING through `client` ends with, and the ssl-level error under it."""
    with pytest.raises(redis.ConnectionError) as caught:
        client.ping()
    inner = caught.value.__context__
    assert inner is not None, caught.value
    return caught.value, inner


def test_ping_set_and_from_url_through_stunnel(
    tls_valkey: Start, valkey: Valkey, tls_certs: Certs
) -> None:
    tls = tls_valkey()
    client = tls.client()
    assert client.ping() is True
    assert client.set("tls:key", b"over tls") is True
    assert valkey.client().get("tls:key") == b"over tls"  # the backend holds it
    assert tls.plain.get("tls:key") == b"over tls"

    from_url = redis.Redis.from_url(f"{tls.url}?ssl_ca_certs={tls.ca_file}", socket_timeout=5)
    assert from_url.get("tls:key") == b"over tls"
    # Verification is on by default and the query's CA is the one trusted.
    other = f"{tls.url}?ssl_ca_certs={tls_certs.other_ca.cert}"
    _, inner = _refusal(redis.Redis.from_url(other, socket_timeout=5, retry=NO_RETRY))
    assert isinstance(inner, ssl.SSLCertVerificationError)


def test_the_tls_port_refuses_clear_text(tls_valkey: Start) -> None:
    """So a PING that passes really went through TLS, not around it."""
    tls = tls_valkey()
    error, inner = _refusal(tls.client(ssl=False, retry=NO_RETRY))
    assert isinstance(inner, ConnectionResetError)
    assert (
        str(error)
        == f"Error while reading from 127.0.0.1:{tls.port} : (104, 'Connection reset by peer')"
    )


@pytest.mark.parametrize(
    ("cert", "options", "reason"),
    [
        pytest.param(
            "server", {"ca": "other_ca"}, "unable to get local issuer certificate", id="wrong-ca"
        ),
        pytest.param("expired", {}, "certificate has expired", id="expired"),
        pytest.param(
            "wrong_host",
            {},
            "IP address mismatch, certificate is not valid for '127.0.0.1'.",
            id="wrong-host-ip",
        ),
        pytest.param(
            "wrong_host",
            {"host": "localhost"},
            "Hostname mismatch, certificate is not valid for 'localhost'.",
            id="wrong-host-name",
        ),
    ],
)
def test_verification_refuses(
    tls_valkey: Start, tls_certs: Certs, cert: str, options: dict[str, str], reason: str
) -> None:
    tls = tls_valkey(cert=cert)
    ca = getattr(tls_certs, options.get("ca", "ca")).cert
    host = options.get("host", "127.0.0.1")
    client = tls.client(host=host, ssl_ca_certs=str(ca), retry=NO_RETRY)
    error, inner = _refusal(client)
    assert isinstance(inner, ssl.SSLCertVerificationError)
    assert inner.verify_message == reason
    # Then " (_ssl.c:NNNN).", where NNNN depends on the Python build.
    assert str(error).startswith(
        f"Error 1 connecting to {host}:{tls.port}. [SSL: CERTIFICATE_VERIFY_FAILED] "
        f"certificate verify failed: {reason} (_ssl.c:"
    )


def test_each_refusal_is_the_check_not_the_setup(tls_valkey: Start) -> None:
    """The refused certificates work once their check is off: the failures above are the
    verification, not a broken stunnel."""
    assert tls_valkey(cert="wrong_host").client(ssl_check_hostname=False).ping() is True
    assert tls_valkey(cert="expired").client(ssl_cert_reqs="none").ping() is True


def test_mutual_tls_needs_a_client_certificate_from_the_ca(
    tls_valkey: Start, tls_certs: Certs
) -> None:
    tls = tls_valkey(mutual=True)
    assert tls.client().set("mtls:key", b"1") is True
    assert tls.plain.get("mtls:key") == b"1"

    # TLS 1.3: the client's handshake ends before the server checks its certificate, so the
    # refusal arrives after connecting: mostly as the server's alert on the first read, but in
    # ~1 of 6 tries the server has already closed when the client writes its first command,
    # and all the client sees is an EOF ("Error 8 while writing to socket. EOF occurred in
    # violation of protocol (_ssl.c:NNNN).").
    without = tls.client(ssl_certfile=None, ssl_keyfile=None, retry=NO_RETRY)
    _assert_alert_or_eof(*_refusal(without), "TLSV13_ALERT_CERTIFICATE_REQUIRED", tls.port)

    other = tls_certs.other_client
    foreign = tls.client(ssl_certfile=str(other.cert), ssl_keyfile=str(other.key), retry=NO_RETRY)
    _assert_alert_or_eof(*_refusal(foreign), "TLSV1_ALERT_UNKNOWN_CA", tls.port)


def _assert_alert_or_eof(
    error: redis.ConnectionError, inner: BaseException, alert: str, port: int
) -> None:
    assert isinstance(inner, ssl.SSLError), repr(inner)
    if isinstance(inner, ssl.SSLEOFError):
        assert str(error).startswith("Error 8 while writing to socket. EOF occurred"), error
    else:
        assert inner.reason == alert
        assert str(error).startswith(f"Error while reading from 127.0.0.1:{port} : (1, "), error
        assert alert.lower().replace("_", " ") in str(error)


def test_stop_and_start_keep_the_port(tls_valkey: Start) -> None:
    tls = tls_valkey()
    port = tls.port
    tls.stop()
    _, inner = _refusal(tls.client(retry=NO_RETRY))
    assert isinstance(inner, ConnectionRefusedError)
    tls.start()
    assert tls.port == port
    assert tls.client().ping() is True


def test_certificates_say_what_their_names_say(tls_certs: Certs) -> None:
    def load(pair_name: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate(getattr(tls_certs, pair_name).cert.read_bytes())

    def names(cert: x509.Certificate) -> set[object]:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return set(san.get_values_for_type(x509.DNSName)) | set(
            san.get_values_for_type(x509.IPAddress)
        )

    now = datetime.datetime.now(datetime.UTC)
    assert names(load("server")) == {"localhost", ipaddress.ip_address("127.0.0.1")}
    assert names(load("wrong_host")) == {"wrong.example"}
    assert load("expired").not_valid_after_utc < now < load("server").not_valid_after_utc
    ca, other = load("ca"), load("other_ca")
    assert {load(n).issuer for n in ("server", "expired", "wrong_host", "client")} == {ca.subject}
    assert other.subject != ca.subject and load("other_client").issuer == other.subject


def test_missing_stunnel_fails_naming_ci_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AssertionError, match=r"stunnel4 is not installed.*`\.ci/run` installs it"):
        stunnel_binary()
