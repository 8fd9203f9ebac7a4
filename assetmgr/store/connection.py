"""Valkey connections: opened from a URL, kept up with backoff, printed without secrets.

Children receive URLs, never clients, and open their connection after fork, never sharing a socket.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel

from assetmgr import metrics
from assetmgr.backoff import Backoff
from assetmgr.store.tls import TLS_SCHEMES, TlsHandshakeError, ValkeyTls

Client = redis.Redis | RedisCluster

# valkey:// and valkeys:// are aliases that redis-py does not know by name.
_SCHEME_ALIASES = {
    "valkey": "redis",
    "valkeys": "rediss",
    "valkey+unix": "unix",
    "valkey+sentinel": "redis+sentinel",
    "valkeys+sentinel": "rediss+sentinel",
}
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel", "valkey+sentinel", "valkeys+sentinel")
SCHEMES = ("redis", "rediss", "valkey", "valkeys", "unix", "valkey+unix", *SENTINEL_SCHEMES)
CLUSTER_MODES = ("auto", "on", "off")


class ValkeyMisconfigured(Exception):
    """The endpoint is not what the settings say (a cluster URL on a standalone server, an
    unknown Sentinel master): a configuration error, exit code 2, not worth retrying."""


@dataclass(frozen=True)
class Endpoint:
    """Where Valkey is and how to talk to it; picklable, so children get this, not a client.

    `cluster`: "on" uses RedisCluster, "off" a single server, "auto" asks the server
    (`CLUSTER INFO`); `?cluster=true` in the URL means "on". `tls` applies to `rediss://` and
    `valkeys://` URLs (every node of a cluster, the sentinels and the primary of a Sentinel).
    """

    url: str
    password: str | None = None
    cluster: str = "auto"
    tls: ValkeyTls = field(default_factory=ValkeyTls)

    @property
    def sentinel(self) -> bool:
        return urlsplit(self.url).scheme in SENTINEL_SCHEMES

    @property
    def uses_tls(self) -> bool:
        return urlsplit(self.url).scheme in TLS_SCHEMES

    @property
    def cluster_mode(self) -> str:
        flag = parse_qs(urlsplit(self.url).query).get("cluster", [""])[-1].lower()
        if flag in ("1", "true", "yes", "on"):
            return "on"
        if flag in ("0", "false", "no", "off"):
            return "off"
        return self.cluster

    def __repr__(self) -> str:  # never the password, whatever prints this
        return f"Endpoint({redact(self.url)!r}, cluster={self.cluster!r})"


def normalize_url(url: str) -> str:
    """Map the valkey schemes onto the redis ones; raise ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"unsupported scheme {parts.scheme!r}; use one of {', '.join(SCHEMES)}")
    if parts.scheme in SENTINEL_SCHEMES:
        sentinel_parts(url)  # raises ValueError when malformed
    elif parts.scheme not in ("unix", "valkey+unix"):
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise ValueError("the port is not a number from 0 to 65535") from None
    if "@" in url.partition("://")[2] and "@" not in parts.netloc:
        raise ValueError(  # and so would be sent as a host or a path, and printed
            "the user or password holds a character to percent-encode (/ ? # become %2F %3F %23)"
        )
    tls_options = sorted({k for k, _ in parse_qsl(parts.query) if k.startswith("ssl")})
    if tls_options:
        raise ValueError(
            f"TLS options go in the tls_* settings, not in the URL ({', '.join(tls_options)})"
        )
    scheme = _SCHEME_ALIASES.get(parts.scheme, parts.scheme)
    # Swap the scheme only: urlunsplit would turn `unix:///run/x.sock` into `unix:/run/x.sock`.
    return scheme + url[len(parts.scheme) :]


@dataclass(frozen=True)
class SentinelParts:
    sentinels: list[tuple[str, int]]
    master: str
    db: int
    username: str | None
    password: str | None
    tls: bool


def sentinel_parts(url: str) -> SentinelParts:
    """`redis+sentinel://[user:pass@]host:port,host:port/MASTER[/DB]`, parsed by hand:
    urlsplit cannot take a list of hosts."""
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    user, _, password = credentials.partition(":")
    sentinels = []
    for item in filter(None, hosts.split(",")):
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"sentinel address {item!r} is not HOST:PORT")
        sentinels.append((host.strip("[]"), int(port)))
    segments = [s for s in parts.path.split("/") if s]
    if not sentinels or not segments or len(segments) > 2:
        raise ValueError("expected redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB]")
    if len(segments) == 2 and not segments[1].isdigit():
        raise ValueError(f"database {segments[1]!r} is not a number")
    return SentinelParts(
        sentinels,
        unquote(segments[0]),
        int(segments[1]) if len(segments) == 2 else 0,
        unquote(user) or None,
        unquote(password) if credentials and ":" in credentials else None,
        parts.scheme.startswith(("rediss", "valkeys")),
    )


def redact(url: str) -> str:
    """The URL with any password masked, fit for logs and /status. Everything between `://`
    and the last `@` counts as credentials (so does a `password=` query option): a password
    with an unescaped `/`, `?` or `#`, which urlsplit reads as a path, is masked too."""
    scheme, sep, rest = url.partition("://")
    credentials, at, hosts = rest.rpartition("@")
    if sep and at and ":" in credentials:
        rest = f"{credentials.partition(':')[0]}:***@{hosts}"
    return scheme + sep + _QUERY_PASSWORD.sub(r"\1***", rest)


_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def _without_secret(url: str) -> str:
    """The URL with its password and the `cluster` query option removed (redis-py lets a
    URL's password win over a keyword argument, and knows no `cluster` option), and `rediss`
    as `redis`: with TLS, assetmgr's connection class wraps the socket (tls.py), and
    RedisCluster would let the scheme's class win over it."""
    parts = urlsplit(url)
    credentials, at, hosts = parts.netloc.rpartition("@")
    netloc = (credentials.partition(":")[0] + "@" + hosts) if at else hosts
    pairs = parse_qsl(parts.query)
    query = urlencode([(k, v) for k, v in pairs if k != "cluster"])
    scheme = "redis" if parts.scheme == "rediss" else parts.scheme
    if netloc == parts.netloc and query == parts.query and scheme == parts.scheme:
        return url  # as given: urlunsplit would turn `unix:///run/x.sock` into `unix:/run/x.sock`
    rest = url[len(parts.scheme) + 3 + len(parts.netloc) :].split("?", 1)[0].split("#", 1)[0]
    return f"{scheme}://{netloc}{rest}" + (f"?{query}" if query else "")


def connect(
    endpoint: Endpoint | str,
    *,
    password: str | None = None,
    timeout: float = 5.0,
    client_name: str = "assetmgr",
    reply_timeout: float | None = None,
) -> Client:
    """A client for the endpoint: one server, a cluster, or the primary Sentinel names.

    `timeout` bounds connecting and, unless `reply_timeout` is given, every reply: a server
    that accepts connections but never answers is as unreachable as one that refuses them.
    Raises ValkeyMisconfigured when the server is not the topology the settings name.
    """
    if isinstance(endpoint, str):
        endpoint = Endpoint(endpoint, password)
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout if reply_timeout is None else reply_timeout,
        "client_name": client_name,
        "health_check_interval": 0,
    }
    url = normalize_url(endpoint.url)
    secret = endpoint.password if endpoint.password is not None else urlsplit(url).password
    if secret is not None:
        kwargs["password"] = unquote(secret)
    if endpoint.sentinel:
        return _sentinel_primary(url, kwargs, endpoint.tls if endpoint.uses_tls else None)
    if endpoint.uses_tls:
        kwargs["connection_class"] = endpoint.tls.connection_class()
    mode = endpoint.cluster_mode
    if mode == "on":
        return _cluster(url, kwargs)
    # The client owns its pool (from_pool): closing the client closes its connections.
    single = redis.Redis.from_pool(redis.ConnectionPool.from_url(_without_secret(url), **kwargs))
    if mode == "off":
        return single
    if _cluster_enabled(single):
        single.close()
        return _cluster(url, kwargs)
    return single


def checked(endpoint: Endpoint, timeout: float, client_name: str = "assetmgr") -> Client:
    """A client for a one-shot command, after the checks the writer makes: reachable, the
    topology the settings name (ValkeyMisconfigured), a cluster that is up."""
    client = connect(endpoint, timeout=timeout, client_name=client_name)
    trouble = unusable(client)
    if trouble:
        raise redis.ConnectionError(trouble)
    return client


def unusable(client: Client) -> str | None:
    """Why a connected client cannot be written through, or None: a cluster that is down
    (`cluster_state:fail`), a server that is a cluster node while cluster mode is off."""
    client.ping()
    if isinstance(client, RedisCluster):
        state = client.cluster_info().get("cluster_state")
        return None if state == "ok" else f"the cluster is down (cluster_state:{state})"
    if _cluster_enabled(client):
        raise ValkeyMisconfigured(
            "the server is a cluster node but cluster mode is off (set cluster = auto or on)"
        )
    return None


def _cluster_enabled(client: redis.Redis) -> bool:
    """Asked in "auto" mode with CLUSTER INFO, which the shipped ACL lets both users run (INFO
    it does not give consumers); a standalone server refuses it. Unreachable or not allowed:
    assume not, so connecting stays lazy (the writer probes again before it writes)."""
    try:
        client.execute_command("CLUSTER INFO")
    except (redis.ResponseError, redis.ConnectionError, redis.TimeoutError, TlsHandshakeError):
        return False
    return True


def _cluster(url: str, kwargs: dict[str, Any]) -> RedisCluster:
    try:
        return RedisCluster.from_url(_without_secret(url), **kwargs)
    except RedisClusterException as e:
        if isinstance(e.__cause__, TlsHandshakeError):
            raise e.__cause__ from None
        text = one_line(e)
        if "not enabled" in text or "db" in text or "Unix" in text:
            raise ValkeyMisconfigured(f"cluster mode: {text}") from None
        raise redis.ConnectionError(text) from None


def _sentinel_primary(url: str, kwargs: dict[str, Any], tls: ValkeyTls | None) -> redis.Redis:
    """With TLS, both the sentinels and the primary are spoken to over TLS."""
    parts = sentinel_parts(url)
    node_kwargs = {**kwargs, "db": parts.db, "username": parts.username}
    timeouts: dict[str, Any] = {k: kwargs[k] for k in ("socket_connect_timeout", "socket_timeout")}
    # One try per sentinel: redis-py's default retries, with backoff, made "no sentinel
    # answered" take 4 s per sentinel whatever connect_timeout says (callers retry anyway).
    timeouts["retry"] = Retry(NoBackoff(), 0)
    if tls is not None:
        node_kwargs["connection_class"] = tls.connection_class(sentinel=True)
    sentinel = Sentinel(parts.sentinels, sentinel_kwargs=timeouts, **node_kwargs)
    if tls is not None:  # Sentinel's own clients know no connection class: make them here
        plain = tls.connection_class()
        sentinel.sentinels = [
            redis.Redis(connection_pool=redis.ConnectionPool(plain, host=h, port=p, **timeouts))
            for h, p in parts.sentinels
        ]
    failed: TlsHandshakeError | None = None
    for (host, port), asked in zip(parts.sentinels, sentinel.sentinels, strict=True):
        try:
            address = asked.sentinel_get_master_addr_by_name(parts.master)
        except TlsHandshakeError as e:
            failed = e
            continue
        except (redis.ConnectionError, redis.TimeoutError):
            continue  # the next sentinel may answer; none answering is "unreachable"
        if address is None:
            raise ValkeyMisconfigured(f"sentinel {host}:{port} knows no master {parts.master!r}")
        break
    else:
        if failed is not None:
            raise failed
        listed = ",".join(f"{h}:{p}" for h, p in parts.sentinels)
        raise redis.ConnectionError(f"no sentinel answered ({listed})")
    return sentinel.master_for(parts.master, **node_kwargs)


class ValkeyUnavailable(Exception):
    """Valkey cannot be used: it refused the credentials, or stayed unreachable past a deadline."""


BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0


def link_backoff() -> Backoff:
    """Capped, jittered exponential backoff between connection attempts."""
    return Backoff(BACKOFF_MIN, BACKOFF_MAX, factor=2.0, jitter=(0.5, 1.0))


class Link:
    """A writing connection to Valkey that may come and go, and the client it hands out.

    Retries with capped, jittered exponential backoff, logs an outage once and its end once,
    and keeps `assetmgr_valkey_up` current. Bad credentials are final (ValkeyUnavailable).
    The client is the link's: a reconnect closes the one it replaces, and so does `close`.
    """

    def __init__(self, endpoint: Endpoint, timeout: float, log: logging.Logger) -> None:
        self.endpoint = endpoint
        self.url = endpoint.url
        self.timeout = timeout
        self.log = log
        self.online = False
        self.client: Client | None = None
        self.backoff = link_backoff()
        self.next_attempt = 0.0
        self._down_logged = False

    def open(self) -> Client | str:
        """One try: a connected client, or why not."""
        try:
            # A probe bounded by the timeout, then the writing connection, whose replies
            # (a large batch) may take longer.
            probe = connect(self.endpoint, timeout=self.timeout)
            trouble = unusable(probe)
            probe.close()
            if trouble:
                return f"Valkey at {redact(self.url)} cannot take writes: {trouble}"
            return connect(
                self.endpoint, timeout=self.timeout, reply_timeout=max(self.timeout, 30.0)
            )
        except redis.AuthenticationError as e:
            raise ValkeyUnavailable(f"Valkey refused the credentials: {one_line(e)}") from None
        except TlsHandshakeError as e:
            raise ValkeyUnavailable(f"Valkey at {redact(self.url)}: {one_line(e)}") from None
        except (redis.ConnectionError, redis.TimeoutError, RedisClusterException, OSError) as e:
            return f"cannot reach Valkey at {redact(self.url)}: {one_line(e)}"

    def wait_online(self, deadline: float) -> Client:
        """Connect, retrying with backoff until `deadline` (a one-shot run), else fail."""
        backoff = link_backoff()
        while isinstance(outcome := self.open(), str):
            self.lost(outcome)
            if not backoff.pause(deadline):
                raise ValkeyUnavailable(outcome)
        return self._up(outcome)

    def retry(self, now: float) -> Client | None:
        """A daemon's non-blocking retry, when due: input keeps being read while Valkey is away."""
        if now < self.next_attempt:
            return None
        outcome = self.open()
        if isinstance(outcome, str):
            self.lost(outcome)
            self.next_attempt = now + self.backoff.next()
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

    def close(self) -> None:
        """Close the client handed out last; the link is offline until it reconnects."""
        self.online = False
        self._replace(None)

    def _up(self, client: Client) -> Client:
        self._replace(client)
        self.online = True
        self.backoff.reset()
        metrics.VALKEY_UP.set(1)
        if self._down_logged:
            self.log.warning("Valkey reachable again", extra={"url": redact(self.url)})
        self._down_logged = False
        return client

    def _replace(self, client: Client | None) -> None:
        """Hand out `client` from now on; the one before it is closed (its sockets, a
        cluster's to every node), whatever state a cut connection left it in."""
        old, self.client = self.client, client
        if old is not None and old is not client:
            with contextlib.suppress(redis.RedisError, OSError):
                old.close()


def one_line(error: BaseException | str) -> str:
    """An error's text folded onto one line, for a log line or a stderr message."""
    return " ".join(str(error).split())
