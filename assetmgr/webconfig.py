"""Who may use the HTTP endpoint, and over what: basic-auth users and HTTPS, the way Prometheus
exporters do it (exporter-toolkit's web configuration).

`metrics_auth_file` is a Prometheus web config file of which assetmgr reads `basic_auth_users`
(user: bcrypt hash), so the file an operator already writes for an exporter, and checks with
`promtool check web-config`, works here. Any other key is refused rather than ignored: TLS is
`metrics_tls_cert` / `metrics_tls_key`. The file is read by a strict reader of that one
mapping (comments, plain or quoted scalars), which needs no YAML library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt

from assetmgr.store.tls import chain_problem, load_chain

# $2a$/$2b$/$2y$, cost 04-31, 22 characters of salt and 31 of hash: what Go's bcrypt.Cost takes.
BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
MAX_PASSWORD = 72  # bcrypt's limit: Go's bcrypt refuses longer ones; bcrypt<5 truncated them
# Checked when the user is unknown, so a wrong user costs the time a wrong password does.
_DUMMY = b"$2b$10$edUvhiEOfmqeAIdTMr0.tOSzav0skIJCypPhEf6wHzVjvbyMadGdu"
_CACHE_MAX = 256
_ENTRY = re.compile(r"(?P<user>'[^']*'|\"[^\"\\]*\"|[^\s'\"#:][^:#]*?)\s*:\s+(?P<hash>\S+)")


class WebConfigError(ValueError):
    """The auth file or the TLS files do not load: a configuration error."""


def load_users(path: str) -> dict[str, bytes]:
    """`basic_auth_users` of a Prometheus web config file: user -> bcrypt hash."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not UTF-8"
        raise WebConfigError(f"metrics_auth_file: cannot read {path}: {why}") from None
    users: dict[str, bytes] = {}
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        where = f"metrics_auth_file: {path} line {number}"
        content = line.split(" #", 1)[0].rstrip() if not line.lstrip().startswith("#") else ""
        if not content:
            continue
        if not line[0].isspace():
            inside = content in ("basic_auth_users:", "basic_auth_users: {}")
            if not inside:
                raise WebConfigError(
                    f"{where}: only basic_auth_users is read from this file "
                    "(HTTPS is metrics_tls_cert and metrics_tls_key)"
                )
            continue
        match = _ENTRY.fullmatch(content.strip())
        if not inside or match is None:
            raise WebConfigError(f"{where}: expected `  USER: BCRYPT-HASH`")
        user, hashed = _scalar(match["user"]), _scalar(match["hash"])
        if not BCRYPT_HASH.fullmatch(hashed):
            raise WebConfigError(f"{where}: the password of {user!r} is not a bcrypt hash")
        if user in users:
            raise WebConfigError(f"{where}: {user!r} is listed twice")
        users[user] = hashed.encode()
    if not users:
        raise WebConfigError(f"metrics_auth_file: {path} lists no basic_auth_users")
    return users


def _scalar(text: str) -> str:
    return text[1:-1] if text[:1] in "'\"" and len(text) > 1 and text[-1] == text[0] else text


@dataclass
class BasicAuth:
    """Checks `Authorization: Basic` headers against bcrypt hashes. bcrypt costs ~0.1 s a
    check, so checks run one at a time (a flood of wrong passwords burns one core, not all)
    and a login that passed is remembered by a digest of its password."""

    users: dict[str, bytes]
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _passed: set[tuple[str, bytes]] = field(default_factory=set, repr=False)

    def allows(self, header: str | None) -> bool:
        login = _credentials(header)
        if login is None:
            return False
        user, password = login
        key = (user, hashlib.sha256(password).digest())
        if key in self._passed:
            return True
        hashed = self.users.get(user)
        with self._lock:
            try:
                ok = bcrypt.checkpw(password, hashed or _DUMMY) and hashed is not None
            except ValueError:  # bcrypt 5 raises for a password over 72 bytes
                return False
        if ok:
            if len(self._passed) >= _CACHE_MAX:
                self._passed.clear()
            self._passed.add(key)
        return ok


def _credentials(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) of a Basic header; None for anything malformed or over-long."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "basic" or not token or len(token) > 1024:
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
        user, sep, password = raw.partition(b":")
        name = user.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not sep or len(password) > MAX_PASSWORD:
        return None
    return name, password


@dataclass(frozen=True)
class WebSecurity:
    """What the endpoint requires: a login (`auth`) and HTTPS (`context`); None is off."""

    auth: BasicAuth | None = None
    context: ssl.SSLContext | None = None


def load(auth_file: str | None, cert: str | None, key: str | None) -> WebSecurity:
    """The endpoint's security from its settings; WebConfigError names what does not load."""
    auth = BasicAuth(load_users(auth_file)) if auth_file else None
    if bool(cert) != bool(key):
        raise WebConfigError("metrics_tls_cert and metrics_tls_key go together")
    if not cert:
        return WebSecurity(auth)
    for name, path in (("metrics_tls_cert", cert), ("metrics_tls_key", key)):
        try:
            open(str(path), "rb").close()
        except OSError as e:
            raise WebConfigError(f"{name}: cannot read {path}: {e.strerror}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    problem = chain_problem(
        lambda: load_chain(context, cert, key), cert, key, "metrics_tls_cert", "metrics_tls_key"
    )
    if problem:
        raise WebConfigError(problem)
    return WebSecurity(auth, context)
