"""Opening Valkey connections from a URL, and printing a URL without its secrets.

Children receive URLs, never clients, and open their connection after fork (STYLE §6).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis

# valkey:// and valkeys:// are aliases that redis-py does not know by name.
_SCHEME_ALIASES = {"valkey": "redis", "valkeys": "rediss", "valkey+unix": "unix"}
SCHEMES = ("redis", "rediss", "valkey", "valkeys", "unix", "valkey+unix")


def normalize_url(url: str) -> str:
    """Map the valkey schemes onto the redis ones; raise ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"unsupported scheme {parts.scheme!r}; use one of {', '.join(SCHEMES)}")
    if parts.scheme not in ("unix", "valkey+unix"):
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise ValueError("the port is not a number from 0 to 65535") from None
    scheme = _SCHEME_ALIASES.get(parts.scheme, parts.scheme)
    # Swap the scheme only: urlunsplit would turn `unix:///run/x.sock` into `unix:/run/x.sock`.
    return scheme + url[len(parts.scheme) :]


def redact(url: str) -> str:
    """The URL with any password replaced, fit for logs and /status."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    netloc = f"{user}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def connect(
    url: str,
    *,
    password: str | None = None,
    timeout: float = 5.0,
    client_name: str = "assetmgr",
    reply_timeout: float | None = None,
) -> redis.Redis:
    """A client for `url`; `password` (from a file) overrides one in the URL.

    `timeout` bounds connecting and, unless `reply_timeout` is given, every reply: a server
    that accepts connections but never answers is as unreachable as one that refuses them.
    """
    kwargs: dict[str, object] = {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout if reply_timeout is None else reply_timeout,
        "client_name": client_name,
        "health_check_interval": 0,
    }
    client = redis.Redis.from_url(normalize_url(url), **kwargs)
    if password is not None:
        # from_url lets the URL's options win over keyword arguments; the file must win.
        client.connection_pool.connection_kwargs["password"] = password
    return client
