"""A real Valkey Cluster for tests and the faults a test inflicts on it: kill, restart empty,
failover, a live slot migration stopped halfway, cluster_state:fail."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from redis.cluster import RedisCluster
from redis.crc import key_slot
from topology import NODE_TIMEOUT_MS, Node, free_ports, launch_retrying, wait_until

SLOTS = 16384


@dataclass(frozen=True)
class NodeInfo:
    """One line of CLUSTER NODES as some node sees it."""

    node_id: str
    port: int
    role: str  # "primary" or "replica"
    primary_id: str  # "-" for a primary
    slots: tuple[tuple[int, int], ...]
    flags: frozenset[str]

    @property
    def failed(self) -> bool:
        """Known dead (FAIL) or suspected by this node (PFAIL, flag "fail?")."""
        return bool(self.flags & {"fail", "fail?", "noaddr"})

    @property
    def myself(self) -> bool:
        return "myself" in self.flags

    def owns(self, slot: int) -> bool:
        return any(lo <= slot <= hi for lo, hi in self.slots)


def parse_cluster_nodes(text: str) -> list[NodeInfo]:
    out = []
    for line in text.strip().splitlines():
        parts = line.split()
        node_id, addr, flags, primary = parts[:4]
        ranges = []
        for part in parts[8:]:
            if not part.startswith("["):  # "[slot->-id]": a migration in progress, not owned
                lo, _, hi = part.partition("-")
                ranges.append((int(lo), int(hi or lo)))
        flag_set = frozenset(flags.split(","))
        role = "replica" if "slave" in flag_set else "primary"
        port = int(addr.split("@")[0].rsplit(":", 1)[1])
        out.append(NodeInfo(node_id, port, role, primary, tuple(ranges), flag_set))
    return out


class Cluster:
    """A running Valkey Cluster and the faults a test can inflict on it."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes

    @property
    def seed_url(self) -> str:
        return f"redis://127.0.0.1:{self.alive()[0].port}/0"

    def alive(self) -> list[Node]:
        return [n for n in self.nodes if n.alive]

    def client(self, **kwargs: object) -> RedisCluster:
        seed = next(n for n in self.nodes if n.alive)
        options: dict[str, object] = {"socket_timeout": 5, **kwargs}
        return RedisCluster(host="127.0.0.1", port=seed.port, **options)  # type: ignore[arg-type]

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def view(self, node: Node) -> list[NodeInfo]:
        """CLUSTER NODES as `node` sees the cluster."""
        return parse_cluster_nodes(node.admin.execute_command("CLUSTER", "NODES"))

    def me(self, node: Node) -> NodeInfo:
        """The node's view of itself: its id, its role, its slots."""
        return next(i for i in self.view(node) if i.myself)

    def topology(self) -> list[NodeInfo]:
        """Every node (port, role, slots) as the first live node sees it; dead ones `failed`."""
        return self.view(self.alive()[0])

    def primaries(self) -> list[Node]:
        return [n for n in self.alive() if self.me(n).role == "primary"]

    def replicas_of(self, primary: Node) -> list[Node]:
        pid = self.me(primary).node_id
        return [n for n in self.alive() if self.me(n).primary_id == pid]

    def node_for_key(self, key: str | bytes) -> Node:
        """The primary that owns the key's slot (the migration source while one is in flight)."""
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        owner = next(i for i in self.topology() if i.role == "primary" and i.owns(slot))
        return self.node(owner.port)

    def state(self, node: Node) -> str:
        return str(node.admin.cluster("info")["cluster_state"])

    def wait_ok(self, timeout: float = 20.0) -> None:
        """Every live node says ok, covers all slots, knows every node, and replicas are synced."""

        def ok(node: Node) -> bool:
            info = node.admin.cluster("info")
            if info["cluster_state"] != "ok" or int(info["cluster_slots_ok"]) != SLOTS:
                return False
            if int(info["cluster_known_nodes"]) < len(self.nodes):
                return False
            repl = node.admin.info("replication")
            return repl["role"] == "master" or repl.get("master_link_status") == "up"

        wait_until(lambda: all(ok(n) for n in self.alive()), timeout, "cluster_state:ok")

    def kill(self, node: Node) -> None:
        node.kill()

    def flushall(self) -> None:
        """Empty every primary (replicas follow), for reuse of one cluster between scenarios."""
        for node in self.primaries():
            node.admin.flushall()

    def force_fail_state(self, primary: Node | None = None, timeout: float = 20.0) -> Node:
        """Kill a primary without replicas and wait until the others say cluster_state:fail."""
        victim = primary or next(p for p in self.primaries() if not self.replicas_of(p))
        assert not self.replicas_of(victim), f"{victim} has a replica, it would fail over"
        victim.kill()
        wait_until(
            lambda: all(self.state(n) == "fail" for n in self.alive()),
            timeout,
            "cluster_state:fail",
        )
        return victim

    def restart_empty(self, node: Node, new_identity: bool = False) -> None:
        """Restart on the same port with no data. By default the node keeps nodes.conf (a node
        without persistence rebooted) and rejoins by itself; `new_identity` wipes nodes.conf too
        and hands the new node the old one's slots (a replaced machine; primaries without
        replicas only, since a replica cannot forget its primary)."""
        witness = next(n for n in self.alive() if n is not node)
        old = next(i for i in self.view(witness) if i.port == node.port)
        node.kill()
        if new_identity:
            assert not old.slots or not any(i.primary_id == old.node_id for i in self.topology())
            (node.dir / "nodes.conf").unlink(missing_ok=True)
            for other in self.alive():
                other.admin.execute_command("CLUSTER", "FORGET", old.node_id)
        node.start()
        if new_identity:
            for lo, hi in old.slots:
                node.admin.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
            node.admin.execute_command("CLUSTER", "BUMPEPOCH")
            seed = next(n for n in self.alive() if n is not node)
            seed.admin.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)
        self.wait_ok()

    def failover(self, primary: Node, how: str = "kill", timeout: float = 20.0) -> Node:
        """Promote the primary's replica: "kill" the primary (a crash, the cluster elects the
        replica) or "takeover"/"force"/"graceful" (CLUSTER FAILOVER on the replica)."""
        replica = self.replicas_of(primary)[0]
        if how == "kill":
            primary.kill()
        else:
            mode = [] if how == "graceful" else [how.upper()]
            replica.admin.execute_command("CLUSTER", "FAILOVER", *mode)
        wait_until(lambda: self.me(replica).role == "primary", timeout, f"{replica} promoted")
        if primary.alive:
            wait_until(lambda: self.me(primary).role == "replica", timeout, f"{primary} demoted")
        self.wait_ok(timeout)
        return replica

    def begin_migration(self, slot: int, src: Node, dst: Node) -> SlotMigration:
        """SETSLOT IMPORTING on dst and MIGRATING on src: from here on, src answers ASK for
        the slot's keys it no longer holds."""
        migration = SlotMigration(self, slot, src, dst, self.me(src).node_id, self.me(dst).node_id)
        dst.admin.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", migration.src_id)
        src.admin.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", migration.dst_id)
        return migration

    def migrate_slot(
        self, slot: int, src: Node, dst: Node, during: Callable[[SlotMigration], None] | None = None
    ) -> None:
        """Move a slot with its keys; `during` runs with half the keys moved (ASK is live)."""
        migration = self.begin_migration(slot, src, dst)
        held = int(src.admin.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))
        migration.move_keys(limit=held // 2)
        if during is not None:
            during(migration)
        migration.move_keys()
        migration.finish()


@dataclass
class SlotMigration:
    """One live slot migration, step by step, so a test can act between the steps."""

    cluster: Cluster
    slot: int
    src: Node
    dst: Node
    src_id: str
    dst_id: str

    def keys_left(self) -> int:
        return int(self.src.admin.execute_command("CLUSTER", "COUNTKEYSINSLOT", self.slot))

    def move_keys(self, limit: int | None = None, batch: int = 100) -> int:
        """MIGRATE the slot's keys from src to dst in batches; at most `limit` of them."""
        moved = 0
        while limit is None or moved < limit:
            count = batch if limit is None else min(batch, limit - moved)
            keys = self.src.admin.execute_command("CLUSTER", "GETKEYSINSLOT", self.slot, count)
            if not keys:
                break
            self.src.admin.execute_command(
                "MIGRATE", "127.0.0.1", self.dst.port, "", 0, 5000, "KEYS", *keys
            )
            moved += len(keys)
        return moved

    def finish(self) -> None:
        """SETSLOT NODE on dst, then src, then every other primary; wait until all agree."""
        order = [
            self.dst,
            self.src,
            *(p for p in self.cluster.primaries() if p not in (self.src, self.dst)),
        ]
        for node in order:
            node.admin.execute_command("CLUSTER", "SETSLOT", self.slot, "NODE", self.dst_id)

        def agreed() -> bool:
            return all(
                any(i.node_id == self.dst_id and i.owns(self.slot) for i in self.cluster.view(n))
                for n in self.cluster.alive()
            )

        wait_until(agreed, 20.0, f"slot {self.slot} owned by {self.dst} everywhere")


def _cluster_conf(bus_port: int) -> list[str]:
    return [
        "cluster-enabled yes",
        "cluster-config-file nodes.conf",
        f"cluster-port {bus_port}",  # not port+10000: that may be taken, or past 65535
        f"cluster-node-timeout {NODE_TIMEOUT_MS}",
        "cluster-replica-validity-factor 0",  # a replica may always be promoted
        "cluster-allow-replica-migration no",
    ]


def start_cluster(base: Path, primaries: int = 3, replicas: int = 0) -> Cluster:
    """Slots split evenly over `primaries`, `replicas` replicas each, all nodes met; returns
    once every node says cluster_state:ok."""

    def build(attempt: int) -> tuple[list[Node], Callable[[], Cluster]]:
        count = primaries * (1 + replicas)
        ports = free_ports(2 * count)
        nodes = []
        for i in range(count):
            node = Node(ports[i], base / f"a{attempt}-node{i}", _cluster_conf(ports[count + i]))
            node.bus_port = ports[count + i]
            nodes.append(node)

        def finish() -> Cluster:
            _form(nodes, primaries)
            cluster = Cluster(nodes)
            cluster.wait_ok()
            return cluster

        return nodes, finish

    return launch_retrying(build)


def _form(nodes: list[Node], primaries: int) -> None:
    """Assign slots and distinct config epochs, meet every node, attach the replicas."""
    for i, node in enumerate(nodes[:primaries]):
        lo, hi = i * SLOTS // primaries, (i + 1) * SLOTS // primaries - 1
        node.admin.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
        node.admin.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
    for node in nodes[1:]:
        nodes[0].admin.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)
    ids = [node.admin.execute_command("CLUSTER", "MYID") for node in nodes[:primaries]]
    for j, replica in enumerate(nodes[primaries:]):
        primary_id = ids[j % primaries]
        wait_until(
            lambda r=replica, p=primary_id: p in r.admin.execute_command("CLUSTER", "NODES"),
            10,
            "replica meets",
        )
        replica.admin.execute_command("CLUSTER", "REPLICATE", primary_id)
