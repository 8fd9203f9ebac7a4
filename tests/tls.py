"""TLS in front of a real valkey-server for the tests: certificates made here, stunnel4 as the
terminator, since the bundled valkey-server has no TLS ("Failed finding TLS support").

Certificates come from the `cryptography` package rather than the openssl CLI: an expired
certificate (notAfter in the past) is one argument here, while the CLI needs `openssl ca` with a
config file and database (or OpenSSL 3.4's -not_after); and it runs in-process, in milliseconds.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

STUNNEL = "stunnel4"
SERVER_CERTS = ("server", "expired", "wrong_host")
_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Pair:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Certs:
    """Everything the TLS tests present or trust; `other_ca` is unrelated to `ca`."""

    ca: Pair
    other_ca: Pair
    server: Pair  # 127.0.0.1 (IP SAN) and localhost, signed by `ca`
    expired: Pair  # as `server`, but notAfter is yesterday
    wrong_host: Pair  # SAN wrong.example only, signed by `ca`
    client: Pair  # clientAuth, signed by `ca`: mutual TLS
    other_client: Pair  # clientAuth, signed by `other_ca`: refused by mutual TLS


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Pair:
    pair = Pair(directory / f"{stem}.pem", directory / f"{stem}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pair.key.chmod(0o600)
    return pair


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA with the extensions strict verifiers (Python 3.13+) insist on."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + 30 * _DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    common_name: str,
    names: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    expired: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate signed by `ca` for `names`; `expired` puts its whole validity in the past."""
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    start, end = (now - 3 * _DAY, now - _DAY) if expired else (now - _DAY, now + 30 * _DAY)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_certs(directory: Path) -> Certs:
    """Write every certificate and key the TLS tests use into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, other_ca = _ca("assetmgr test CA"), _ca("unrelated test CA")
    local = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    server_auth, client_auth = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    return Certs(
        ca=_write(directory, "ca", *ca),
        other_ca=_write(directory, "other-ca", *other_ca),
        server=_write(directory, "server", *_leaf(ca, "localhost", local, server_auth)),
        expired=_write(
            directory, "expired", *_leaf(ca, "localhost", local, server_auth, expired=True)
        ),
        wrong_host=_write(
            directory,
            "wrong-host",
            *_leaf(ca, "wrong.example", [x509.DNSName("wrong.example")], server_auth),
        ),
        client=_write(directory, "client", *_leaf(ca, "assetmgr", [], client_auth)),
        other_client=_write(
            directory, "other-client", *_leaf(other_ca, "assetmgr", [], client_auth)
        ),
    )


def stunnel_binary() -> str:
    """The stunnel4 executable; a clear failure (not a skip) when it is not installed."""
    found = shutil.which(STUNNEL)
    if found is None:
        raise AssertionError(
            f"{STUNNEL} is not installed: the TLS tests terminate TLS with it in front of "
            "valkey-server. `.ci/run` installs it (apt-get install stunnel4)."
        )
    return found


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Stunnel:
    """One stunnel4 process accepting TLS on `port` and forwarding to `backend_port` in clear.

    `cert` names the server certificate it presents (one of SERVER_CERTS); `mutual` makes it
    require a client certificate signed by the test CA (`verify = 2`)."""

    def __init__(
        self, certs: Certs, directory: Path, backend_port: int, cert: str, mutual: bool, port: int
    ) -> None:
        if cert not in SERVER_CERTS:
            raise ValueError(f"cert must be one of {SERVER_CERTS}, not {cert!r}")
        self.certs = certs
        self.directory = directory
        self.backend_port = backend_port
        self.cert = cert
        self.mutual = mutual
        self.port = port
        self.config = directory / "stunnel.conf"
        self.pid_file = directory / "stunnel.pid"
        self.log_path = directory / "stunnel.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> None:
        pair: Pair = getattr(self.certs, self.cert)
        lines = [
            "foreground = yes",
            f"pid = {self.pid_file}",
            "debug = info",
            "[valkey]",
            f"accept = 127.0.0.1:{self.port}",
            f"connect = 127.0.0.1:{self.backend_port}",
            f"cert = {pair.cert}",
            f"key = {pair.key}",
        ]
        if self.mutual:
            lines += ["verify = 2", f"CAfile = {self.certs.ca.cert}"]
        self.config.write_text("\n".join(lines) + "\n")

    def log(self, since: int = 0) -> str:
        """stunnel's log (all of it, or from byte `since`: one run after a restart)."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[since:].decode(errors="replace")

    def start(self, timeout: float = 10.0) -> None:
        """Start stunnel and wait until it says it bound the port and the port accepts
        connections: a port some other process took would accept too."""
        self._write_config()
        since = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [stunnel_binary(), str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        bound = f"bound to 127.0.0.1:{self.port}\n"
        deadline = time.monotonic() + timeout
        while bound not in self.log(since) or not _listening(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"stunnel exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"stunnel not listening after {timeout}s:\n{self.log()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; the port stays ours for a `start` again."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@dataclass
class TlsValkey:
    """A valkey-server reachable over TLS through stunnel, and in clear for assertions."""

    stunnel: Stunnel
    certs: Certs
    backend_port: int

    @property
    def port(self) -> int:
        return self.stunnel.port

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    @property
    def ca_file(self) -> Path:
        return self.certs.ca.cert

    @property
    def client_cert(self) -> Path:
        return self.certs.client.cert

    @property
    def client_key(self) -> Path:
        return self.certs.client.key

    @property
    def plain(self) -> redis.Redis:
        """A clear-text client straight to the backend, bypassing TLS."""
        return redis.Redis(host="127.0.0.1", port=self.backend_port, socket_timeout=10)

    def client(self, **kwargs: object) -> redis.Redis:
        """A redis-py client over TLS trusting the test CA (and, for mutual TLS, presenting
        the client certificate); `kwargs` override any of it."""
        options: dict[str, object] = {
            "host": "127.0.0.1",
            "port": self.port,
            "ssl": True,
            "ssl_ca_certs": str(self.ca_file),
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": True,
            "socket_timeout": 5,
            "socket_connect_timeout": 5,
        }
        if self.stunnel.mutual:
            options.update(ssl_certfile=str(self.client_cert), ssl_keyfile=str(self.client_key))
        options.update(kwargs)
        return redis.Redis(**options)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.stunnel.stop()

    def start(self) -> None:
        """Start stunnel again on the same port, e.g. after `stop` in a reconnect test."""
        self.stunnel.start()


def start_stunnel(
    certs: Certs,
    directory: Path,
    backend_port: int,
    free_port: Callable[[], int],
    cert: str = "server",
    mutual: bool = False,
) -> TlsValkey:
    """stunnel on a free port in front of `backend_port`; retried, since another process may
    take the port between the search for a free one and stunnel's bind."""
    directory.mkdir(parents=True, exist_ok=True)
    for attempt in range(5):
        stunnel = Stunnel(certs, directory, backend_port, cert, mutual, free_port())
        try:
            stunnel.start()
            return TlsValkey(stunnel, certs, backend_port)
        except RuntimeError:
            stunnel.stop()
            if attempt == 4:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")
