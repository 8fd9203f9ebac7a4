"""The writer loop on a clock the test holds: lease renewal, losing the lease, standing by.

`WriterLoop.step(now)` is one iteration; every lease decision follows the `now` it is given,
so a test plays minutes of lease timing in a few steps. Valkey is a real server, the inbox
and the outbox are real pipes; what another writer does is played on the lease key itself.
The lease TTL is long, so real time never expires a lease during a test.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from multiprocessing import Pipe

import pytest
import zstandard

from assetmgr import config
from assetmgr.messages import Accepted, Outcome, Report, ReportKind
from assetmgr.store.connection import Endpoint, Link
from assetmgr.store.lease import RETRY_MAX
from assetmgr.store.writer import WriterOptions
from assetmgr.store.writer_loop import WriterLoop
from conftest import sha256, wait_for

TTL = 60.0
RENEW = TTL / 3
T0 = 1000.0  # the test's clock: any start will do
OURS = f"{socket.gethostname()}:{os.getpid()}:"
OTHER = "other-host:4242:0123456789abcdef"  # another writer's lease value
COST = "weights/cost.json"


class Harness:
    """A writer loop with the test on the other end of its pipes."""

    def __init__(self, opts: WriterOptions) -> None:
        inbox, self.to_loop = Pipe(duplex=False)
        self.from_loop, outbox = Pipe(duplex=False)
        self.loop = WriterLoop(inbox, outbox, opts)
        self.lease_key = opts.keyspace.lease

    def send(self, message: object) -> None:
        self.to_loop.send(message)

    def reports(self) -> list[Report]:
        """What the loop reported since the last call."""
        seen = []
        while self.from_loop.poll(0):
            seen.append(self.from_loop.recv())
        return seen

    def close(self) -> None:
        self.loop.link.close()
        for end in (self.to_loop, self.from_loop, self.loop.inbox, self.loop.outbox):
            end.close()


def options(url: str, *, oneshot: bool = False) -> WriterOptions:
    cfg = config.load("hydrate" if oneshot else "daemon", {"valkey_url": url}, environ={})
    return WriterOptions.from_config(cfg.replace(lease_ttl=TTL), oneshot=oneshot)


@pytest.fixture
def harness(valkey) -> Iterator[Harness]:
    h = Harness(options(valkey.url))
    yield h
    h.close()


def asset(path: str, data: bytes = b'{"cost": 1}\n') -> list[Accepted]:
    blob = zstandard.ZstdCompressor().compress(data)
    return [Accepted(path, blob, sha256(data), len(data), "weights.schema.json")]


def kinds(reports: list[Report]) -> list[ReportKind]:
    return [r.kind for r in reports]


def stored_blobs(client) -> list[bytes]:
    return sorted(client.scan_iter(match="asset:blob:*"))


# -- the leader ---------------------------------------------------------------------------------


def test_the_leader_renews_its_lease_every_third_of_the_ttl_of_its_clock(valkey, harness):
    client = valkey.client()
    harness.loop.step(T0)
    assert harness.loop.leader and client.get(harness.lease_key).decode().startswith(OURS)
    [took] = harness.reports()
    assert took.kind is ReportKind.ROLE and took.role == "leader"

    client.pexpire(harness.lease_key, 3_600_000)  # a renewal brings it back to the TTL
    harness.loop.step(T0 + RENEW - 0.01)
    assert client.pttl(harness.lease_key) > TTL * 1000  # not due: not renewed
    harness.loop.step(T0 + RENEW)
    assert 0 < client.pttl(harness.lease_key) <= TTL * 1000

    client.pexpire(harness.lease_key, 3_600_000)
    harness.loop.step(T0 + 2 * RENEW - 0.01)  # due a third of the TTL after the last renewal
    assert client.pttl(harness.lease_key) > TTL * 1000
    harness.loop.step(T0 + 2 * RENEW)
    assert 0 < client.pttl(harness.lease_key) <= TTL * 1000
    assert harness.loop.leader and harness.reports() == []


def test_the_leader_commits_what_it_receives(valkey, harness):
    client = valkey.client()
    harness.loop.step(T0)
    harness.send(asset(COST))
    wait_for(lambda: harness.loop.step(T0 + 1) or stored_blobs(client), 10, what="the commit")
    assert stored_blobs(client) == [f"asset:blob:{COST}".encode()]


@pytest.mark.parametrize("noticed", ["by the fenced commit", "at the renewal"])
def test_a_leader_that_lost_its_lease_commits_nothing_and_stands_by(valkey, harness, noticed):
    client = valkey.client()
    harness.loop.step(T0)
    assert harness.loop.leader
    harness.reports()
    # Paused past its TTL, it lost the lease to another writer; it still believes it leads.
    client.set(harness.lease_key, OTHER, px=int(TTL * 1000))
    harness.send(asset(COST))
    now = T0 + 0.1 if noticed == "by the fenced commit" else T0 + RENEW
    wait_for(lambda: harness.loop.step(now) or not harness.loop.leader, 10, what="standing by")

    assert stored_blobs(client) == []
    assert [(r.kind, r.role) for r in harness.reports()] == [(ReportKind.ROLE, "standby")]
    harness.loop.step(now + RENEW)  # the other writer still holds it: nothing is retried
    assert stored_blobs(client) == [] and not harness.loop.leader
    assert client.get(harness.lease_key).decode() == OTHER


# -- the standby --------------------------------------------------------------------------------


def test_a_standby_waits_for_its_next_try_then_takes_over_and_asks_for_a_rescan(valkey, harness):
    client = valkey.client()
    client.set(harness.lease_key, OTHER, px=int(TTL * 1000))
    harness.loop.step(T0)
    assert not harness.loop.leader
    harness.send(asset(COST))  # a standby keeps the view of the disk and writes nothing
    harness.loop.step(T0 + 0.01)
    assert stored_blobs(client) == [] and harness.reports() == []

    client.delete(harness.lease_key)  # the other writer's lease expired
    harness.loop.step(T0 + RETRY_MAX - 0.01)
    assert not harness.loop.leader and not client.exists(harness.lease_key)  # not due yet
    harness.loop.step(T0 + RETRY_MAX)
    assert harness.loop.leader and client.get(harness.lease_key).decode().startswith(OURS)
    reports = harness.reports()
    assert kinds(reports) == [ReportKind.ROLE, ReportKind.RESCAN]  # the discarded write
    assert reports[0].role == "leader"


def test_a_one_shot_run_never_takes_over_a_lease_that_frees_later(valkey):
    client = valkey.client()
    harness = Harness(options(valkey.url, oneshot=True))
    try:
        client.set(harness.lease_key, OTHER, px=int(TTL * 1000))
        harness.loop.step(T0)
        client.delete(harness.lease_key)
        for later in (T0 + RETRY_MAX, T0 + RENEW, T0 + TTL):
            harness.loop.step(later)
        assert not harness.loop.leader and not client.exists(harness.lease_key)
    finally:
        harness.close()


def test_a_one_shot_run_refuses_a_held_lease_and_names_its_holder(valkey):
    client = valkey.client()
    harness = Harness(options(valkey.url, oneshot=True))
    try:
        client.set(harness.lease_key, OTHER, px=int(TTL * 1000))
        report = harness.loop.run()
    finally:
        harness.close()
    assert report.outcome is Outcome.REFUSED
    assert "other-host pid 4242" in str(report.error)
    assert client.get(harness.lease_key).decode() == OTHER


def test_a_one_shot_run_that_loses_its_lease_stops_without_committing(valkey):
    client = valkey.client()
    harness = Harness(options(valkey.url, oneshot=True))
    result: list[Report] = []
    runner = threading.Thread(target=lambda: result.append(harness.loop.run()), daemon=True)
    try:
        runner.start()
        wait_for(
            lambda: (client.get(harness.lease_key) or b"").decode().startswith(OURS),
            10,
            what="the run to take the lease",
        )
        client.set(harness.lease_key, OTHER, px=int(TTL * 1000))
        harness.send(asset(COST))
        runner.join(10)
        assert not runner.is_alive(), "the run went on without its lease"
    finally:
        harness.close()
    [report] = result
    assert report.outcome is Outcome.REFUSED
    assert "lost the writer lease during the run" in str(report.error)
    assert stored_blobs(client) == []


# -- the link -----------------------------------------------------------------------------------


def assetmgr_clients(client) -> int:
    return sum(1 for c in client.client_list() if c.get("name") == "assetmgr")


def test_the_link_closes_the_client_it_replaces_and_the_last_one(valkey):
    client = valkey.client()
    link = Link(Endpoint(valkey.url), 5.0, logging.getLogger("test"))
    first = link.retry(T0)
    assert first is not None and first.ping()
    link.lost("the connection was cut", T0)
    second = link.retry(T0)
    assert second is not None and second is not first and second.ping()
    assert link.client is second
    wait_for(lambda: assetmgr_clients(client) == 1, 10, what="only the new client connected")
    link.close()
    assert not link.online and link.client is None
    wait_for(lambda: assetmgr_clients(client) == 0, 10, what="no client left connected")


def test_the_link_retries_an_unreachable_valkey_later_and_later(tmp_path):
    # A socket nobody listens on: a free TCP port may be taken by another test's server.
    absent = Endpoint(f"unix://{tmp_path}/absent.sock")
    link = Link(absent, 1.0, logging.getLogger("test"))
    gaps = []
    now = T0
    for _ in range(5):
        assert link.retry(now) is None and not link.online
        assert link.retry(now) is None  # not due: no new try, the same next one
        gaps.append(link.next_attempt - now)
        now = link.next_attempt
    # Each gap is its pause (0.1 s, doubling) times a jitter of 0.5 to 1.
    for i, gap in enumerate(gaps):
        assert 0.1 * 2**i * 0.5 <= gap <= 0.1 * 2**i, gaps
