"""TLS to Valkey: the tls_* settings, the client context they make, the connection class that
uses it, and a one-line reason for every failed handshake, which retrying cannot fix.

redis-py builds a context per connection and can neither send nor verify a server name other
than the host it connects to (redis/redis-py#3340), so assetmgr builds the context itself, once
per client, and wraps the socket with it. A failed handshake is a `TlsHandshakeError` rather
than a ConnectionError, so neither redis-py's retries nor the writer's backoff wait on it: it
is final.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.connection import Connection
from redis.sentinel import SentinelManagedConnection

TLS_SCHEMES = ("rediss", "valkeys", "rediss+sentinel", "valkeys+sentinel")


class TlsHandshakeError(redis.RedisError):
    """The TLS handshake with Valkey was refused by either side: a setup error, not an outage."""


class _Encrypted(Exception):
    pass


def _no_passphrase() -> bytes:
    """OpenSSL would prompt on the terminal for an encrypted key; a daemon must not."""
    raise _Encrypted


@dataclass(frozen=True)
class ValkeyTls:
    """How assetmgr verifies the server and presents itself. Picklable: part of an Endpoint.

    `ca_file` None trusts the system store; `server_name` None checks the URL's host;
    `insecure` turns verification off (the command line warns about it).
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure: bool = False

    @property
    def configured(self) -> bool:
        return any((self.ca_file, self.cert_file, self.key_file, self.server_name, self.insecure))

    def context(self) -> ssl.SSLContext:
        """The client context; raises OSError or ssl.SSLError for files that do not load."""
        context = ssl.create_default_context(cafile=self.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_file:
            load_chain(context, self.cert_file, self.key_file)
        return context

    def problem(self, url: str) -> str | None:
        """Why these settings do not go with `url` or their files do not make a context, in
        one line naming the setting; else None."""
        if not self.configured:
            return None
        if url.partition(":")[0] not in TLS_SCHEMES:
            return (
                f"tls_* settings are set but valkey_url is not a TLS URL ({', '.join(TLS_SCHEMES)})"
            )
        named = (("tls_ca_file", self.ca_file), ("tls_cert_file", self.cert_file))
        for name, path in (*named, ("tls_key_file", self.key_file)):
            if path:
                try:
                    open(path, "rb").close()
                except OSError as e:
                    return f"{name}: cannot read {path}: {e.strerror}"
        if self.key_file and not self.cert_file:
            return "tls_key_file is set without tls_cert_file"
        try:
            ssl.create_default_context(cafile=self.ca_file)
        except ssl.SSLError:
            return f"tls_ca_file: {self.ca_file} holds no PEM certificate"
        return chain_problem(
            self.context, self.cert_file, self.key_file, "tls_cert_file", "tls_key_file"
        )

    def connection_class(self, sentinel: bool = False) -> type[Connection]:
        """A redis-py connection class bound to this context: class attributes, since
        RedisCluster drops any keyword argument it does not know."""
        base = SentinelTlsConnection if sentinel else TlsConnection
        attrs = {"tls_context": self.context(), "tls_server_name": self.server_name}
        return type(base.__name__, (base,), attrs)


def load_chain(context: ssl.SSLContext, cert: str, key: str | None) -> None:
    """A certificate and key into `context`, never prompting for a passphrase."""
    context.load_cert_chain(cert, key, password=_no_passphrase)


def chain_problem(
    make: Callable[[], object], cert: str | None, key: str | None, cert_name: str, key_name: str
) -> str | None:
    """Why `make()` (which loads `cert` and `key`) fails, in one line naming the settings."""
    try:
        make()
    except _Encrypted:
        return f"{key_name}: the key is encrypted; assetmgr takes an unencrypted key file"
    except ssl.SSLError as e:
        files = f"{cert}, {key or 'no ' + key_name}"
        if e.reason == "KEY_VALUES_MISMATCH":
            return f"{key_name}: the key does not match the certificate ({files})"
        return f"{cert_name} / {key_name}: not a PEM certificate and key ({files})"
    return None


class TlsConnection(Connection):
    """A TCP connection wrapped in the client's context; a failed handshake raises
    TlsHandshakeError."""

    tls_context: ssl.SSLContext
    tls_server_name: str | None = None

    def _connect(self) -> Any:
        sock = super()._connect()
        try:
            return self.tls_context.wrap_socket(
                sock, server_hostname=self.tls_server_name or self.host
            )
        except ssl.SSLError as e:
            sock.close()
            if isinstance(e, _TRANSIENT):
                raise  # the server went away mid-handshake: an outage, redis-py retries it
            raise TlsHandshakeError(handshake_problem(e, self._host_error())) from None
        except BaseException:
            sock.close()
            raise

    def on_connect_check_health(self, check_health: bool = True) -> None:
        # TLS 1.3: the server checks our certificate after the handshake, so its refusal
        # arrives on the first command (AUTH, CLIENT SETNAME): an alert, or just an EOF.
        try:
            super().on_connect_check_health(check_health)
        except redis.ConnectionError as e:
            cause = _ssl_error(e)
            if cause is None or isinstance(cause, ssl.SSLZeroReturnError):
                raise
            raise TlsHandshakeError(
                handshake_problem(cause, self._host_error(), setup=True)
            ) from None


class SentinelTlsConnection(TlsConnection, SentinelManagedConnection):
    """The same, for the primary a Sentinel names."""


_TRANSIENT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)

# OpenSSL verify codes with a hint at the setting that fixes them.
_HINTS = {
    18: "is tls_ca_file the CA that signed it?",
    19: "is tls_ca_file the CA that signed it?",
    20: "is tls_ca_file the CA that signed it?",
    21: "is tls_ca_file the CA that signed it?",
    62: "tls_server_name sets the name to check",
    64: "tls_server_name sets the name to check",
}
_CLIENT_CERT_ALERTS = (
    "TLSV1_ALERT_UNKNOWN_CA",
    "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_REVOKED",
    "TLSV1_ALERT_ACCESS_DENIED",
)


def handshake_problem(error: ssl.SSLError, where: str, setup: bool = False) -> str:
    """One line saying which side refused what (no `_ssl.c:NNNN`, which varies by build)."""
    if isinstance(error, ssl.SSLCertVerificationError):
        why = str(error.verify_message).rstrip(".")
        hint = _HINTS.get(error.verify_code)
        return f"TLS to {where}: the server's certificate was refused: {why}" + (
            f" ({hint})" if hint else ""
        )
    reason = error.reason or ""
    if reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED":
        return (
            f"TLS to {where}: the server requires a client certificate "
            "(set tls_cert_file and tls_key_file)"
        )
    if reason in _CLIENT_CERT_ALERTS:
        return f"TLS to {where}: the server refused our client certificate ({_words(reason)})"
    if reason == "WRONG_VERSION_NUMBER":
        return f"TLS to {where}: the server did not answer in TLS (is it a clear-text port?)"
    if setup and isinstance(error, ssl.SSLEOFError):
        return (
            f"TLS to {where}: the server closed the connection during set-up "
            "(does it require a client certificate, or refuse ours?)"
        )
    return f"TLS to {where} failed: {_words(reason) if reason else type(error).__name__}"


def _words(reason: str) -> str:
    return reason.lower().replace("_", " ")


def _ssl_error(error: BaseException) -> ssl.SSLError | None:
    """The ssl error under a redis-py ConnectionError (it is the `__context__`)."""
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
