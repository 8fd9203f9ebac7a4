"""The writer lease: one active writer across hosts.

`SET lease token NX PX ttl` elects a writer; the holder renews it every third of the TTL. The
token (host:pid:random) is also checked inside every commit script, in the same atomic step as
the write, so a writer that was paused past its TTL and lost the lease can commit nothing.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

from assetmgr.store import scripts


@dataclass
class Holder:
    host: str
    pid: str

    def __str__(self) -> str:
        return f"{self.host} pid {self.pid}"


# Never a lease value: what a writer that does not hold the lease sends as its fencing token,
# so a stray commit from a standby is refused by the commit script too.
STANDBY_TOKEN = "!"


class Lease:
    """The lease of one writer: its token, whether it holds it, when to renew it."""

    def __init__(self, key: str, epoch_key: str, ttl: float) -> None:
        self.key = key
        self.epoch_key = epoch_key
        self.epoch = 0  # which acquisition of the lease this is; the cluster fence
        self.ttl_ms = max(int(ttl * 1000), 100)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"
        self.held = False
        self.next_renew = 0.0

    def bind(self, client: Any) -> None:
        """Use this connection (again after a reconnect); the token and the role stay."""
        self.client = client
        self._acquire = client.register_script(scripts.ACQUIRE)
        self._renew = client.register_script(scripts.RENEW)
        self._release = client.register_script(scripts.RELEASE)
        self._advance = client.register_script(scripts.ADVANCE)

    @property
    def fence(self) -> str:
        """The token the commit scripts check: ours while held, else one that never matches."""
        return self.token if self.held else STANDBY_TOKEN

    @property
    def epoch_fence(self) -> int:
        """The epoch the cluster scripts check: ours while held, else one always refused."""
        return self.epoch if self.held else -1

    @property
    def renew_every(self) -> float:
        return self.ttl_ms / 3000

    def acquire(self, now: float | None = None) -> bool:
        epoch = int(self._acquire(keys=[self.key, self.epoch_key], args=[self.token, self.ttl_ms]))
        self.held = epoch > 0
        if self.held:
            self.epoch = epoch
            self.next_renew = (time.monotonic() if now is None else now) + self.renew_every
        return self.held

    def advance(self, floor: int) -> bool:
        """Take an epoch above `floor`, a fence's: the counter was behind the fences (see
        scripts.ADVANCE). False, and not held, when the lease is no longer ours."""
        epoch = int(self._advance(keys=[self.key, self.epoch_key], args=[self.token, floor]))
        self.held = epoch > 0
        if self.held:
            self.epoch = epoch
        return self.held

    def renew(self, now: float | None = None) -> bool:
        """Extend the lease; False (and not held) when someone else has it or it expired.

        A lease lost because it expired, or because Valkey restarted empty, may be free: the
        next try to take it is due at once, not a renewal period later, so a daemon that was
        alone does not leave the keyspace without a writer for a third of the TTL.
        """
        now = time.monotonic() if now is None else now
        self.held = bool(self._renew(keys=[self.key], args=[self.token, self.ttl_ms]))
        self.next_renew = now + self.renew_every if self.held else now
        return self.held

    def release(self) -> None:
        if self.held:
            self._release(keys=[self.key], args=[self.token])
            self.held = False

    def holder(self) -> Holder | None:
        raw = self.client.get(self.key)
        if raw is None:
            return None
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        host, _, rest = text.partition(":")
        return Holder(host, rest.partition(":")[0])

    def wait(self, seconds: float) -> bool:
        """Try to acquire until `seconds` have passed (a one-shot hydrate's --wait-lease)."""
        deadline = time.monotonic() + seconds
        while not self.acquire():
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.2, self.ttl_ms / 5000))
        return True
