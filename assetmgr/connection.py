"""Valkey connections: opened from a URL, kept up with backoff, printed without secrets.

Children receive URLs, never clients, and open their connection after fork (STYLE §6).
"""

from __future__ import annotations

import logging
import random
import time
from urllib.parse import urlsplit, urlunsplit

import redis

from . import metrics

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


class ValkeyUnavailable(Exception):
    """Valkey cannot be used: it refused the credentials, or stayed unreachable past a deadline."""


BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0


class Link:
    """A writing connection to Valkey that may come and go.

    Retries with capped, jittered exponential backoff, logs an outage once and its end once,
    and keeps `assetmgr_valkey_up` current. Bad credentials are final (ValkeyUnavailable).
    """

    def __init__(self, url: str, password: str | None, timeout: float, log: logging.Logger):
        self.url = url
        self.password = password
        self.timeout = timeout
        self.log = log
        self.online = False
        self.delay = BACKOFF_MIN
        self.next_attempt = 0.0
        self._down_logged = False

    def open(self) -> redis.Redis | str:
        """One try: a connected client, or why not."""
        try:
            # A probe bounded by the timeout, then the writing connection, whose replies
            # (a large batch) may take longer.
            probe = connect(self.url, password=self.password, timeout=self.timeout)
            probe.ping()
            probe.close()
            client = connect(
                self.url,
                password=self.password,
                timeout=self.timeout,
                reply_timeout=max(self.timeout, 30.0),
            )
            client.ping()
            return client
        except redis.AuthenticationError as e:
            raise ValkeyUnavailable(f"Valkey refused the credentials: {one_line(e)}") from None
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            return f"cannot reach Valkey at {redact(self.url)}: {one_line(e)}"

    def wait_online(self, deadline: float) -> redis.Redis:
        """Connect, retrying with backoff until `deadline` (a one-shot run), else fail."""
        delay = BACKOFF_MIN
        while isinstance(outcome := self.open(), str):
            self.lost(outcome)
            if time.monotonic() + delay > deadline:
                raise ValkeyUnavailable(outcome)
            time.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, BACKOFF_MAX)
        return self._up(outcome)

    def retry(self, now: float) -> redis.Redis | None:
        """A daemon's non-blocking retry, when due: input keeps being read while Valkey is away."""
        if now < self.next_attempt:
            return None
        outcome = self.open()
        if isinstance(outcome, str):
            self.lost(outcome)
            self.next_attempt = now + self.delay * random.uniform(0.5, 1.0)
            self.delay = min(self.delay * 2, BACKOFF_MAX)
            return None
        return self._up(outcome)

    def lost(self, reason: str, now: float | None = None) -> None:
        """The connection is down; with `now`, the next retry is due at once."""
        self.online = False
        metrics.VALKEY_UP.set(0)
        if now is not None:
            self.next_attempt = now
        if not self._down_logged:
            self.log.error(reason + "; retrying")
            self._down_logged = True

    def _up(self, client: redis.Redis) -> redis.Redis:
        self.online = True
        self.delay = BACKOFF_MIN
        metrics.VALKEY_UP.set(1)
        if self._down_logged:
            self.log.warning("Valkey reachable again", extra={"url": redact(self.url)})
        self._down_logged = False
        return client


def one_line(error: BaseException | str) -> str:
    """An error's text folded onto one line, for a log line or a stderr message."""
    return " ".join(str(error).split())
