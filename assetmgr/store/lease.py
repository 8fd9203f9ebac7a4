"""The writer lease: one active writer across hosts.

`SET lease token NX PX ttl` elects a writer; the holder renews it every third of the TTL. The
token (host:pid:random) is also checked inside every commit script, in the same atomic step as
the write, so a writer that was paused past its TTL and lost the lease can commit nothing.
"""

from __future__ import annotations

import enum
import os
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

from assetmgr.backoff import Backoff
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


class Turn(enum.Enum):
    """What one `Lease.step` did to the role."""

    SAME = "same"  # nothing changed: still held, or still not
    TOOK = "took"  # acquired now: raise the fences before the first commit
    LOST = "lost"  # a renewal failed: someone else has it, or it expired


RETRY_MAX = 0.5  # seconds at most between a standby's tries to take the lease


class Lease:
    """The lease of one writer: its token, whether it holds it, when to renew it.

    The one keeper of that state: only its methods change it, and only it knows the token's
    format (`identity`, `holder`). Every call that depends on time takes the caller's `now`.
    """

    def __init__(self, key: str, epoch_key: str, ttl: float) -> None:
        self.key = key
        self.epoch_key = epoch_key
        self.ttl_ms = max(int(ttl * 1000), 100)
        self._token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"
        self._epoch = 0  # which acquisition of the lease this is; the cluster fence
        self._held = False
        self._due = 0.0  # when to renew it (held) or try to take it (not held)

    def bind(self, client: Any) -> None:
        """Use this connection (again after a reconnect); the token and the role stay."""
        self.client = client
        self._acquire = client.register_script(scripts.ACQUIRE)
        self._renew = client.register_script(scripts.RENEW)
        self._release = client.register_script(scripts.RELEASE)
        self._advance = client.register_script(scripts.ADVANCE)

    @property
    def held(self) -> bool:
        return self._held

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def identity(self) -> str:
        """Who this writer is, as the lease value names it: `host:pid`."""
        return self._token.rsplit(":", 1)[0]

    @property
    def fence(self) -> str:
        """The token the commit scripts check: ours while held, else one that never matches."""
        return self._token if self._held else STANDBY_TOKEN

    @property
    def epoch_fence(self) -> int:
        """The epoch the cluster scripts check: ours while held, else one always refused."""
        return self._epoch if self._held else -1

    @property
    def renew_every(self) -> float:
        return self.ttl_ms / 3000

    def step(self, now: float, take: bool = True) -> Turn:
        """Renew the lease when due; or, not holding it and `take`, try to take it when due
        (a standby tries again every third of the TTL, at most every RETRY_MAX)."""
        if self._held:
            if now >= self._due and not self.renew(now):
                return Turn.LOST
            return Turn.SAME
        if now < self._due or not take:
            return Turn.SAME
        if self.acquire(now):
            return Turn.TOOK
        self._due = now + min(self.renew_every, RETRY_MAX)
        return Turn.SAME

    def acquire(self, now: float | None = None) -> bool:
        epoch = int(self._acquire(keys=[self.key, self.epoch_key], args=[self._token, self.ttl_ms]))
        self._held = epoch > 0
        if self._held:
            self._epoch = epoch
            self._due = (time.monotonic() if now is None else now) + self.renew_every
        return self._held

    def advance(self, floor: int) -> bool:
        """Take an epoch above `floor`, a fence's: the counter was behind the fences (see
        scripts.ADVANCE). False, and not held, when the lease is no longer ours."""
        epoch = int(self._advance(keys=[self.key, self.epoch_key], args=[self._token, floor]))
        self._held = epoch > 0
        if self._held:
            self._epoch = epoch
        return self._held

    def renew(self, now: float | None = None) -> bool:
        """Extend the lease; False (and not held) when someone else has it or it expired.

        A lease lost because it expired, or because Valkey restarted empty, may be free: the
        next try to take it is due at once, not a renewal period later, so a daemon that was
        alone does not leave the keyspace without a writer for a third of the TTL.
        """
        now = time.monotonic() if now is None else now
        self._held = bool(self._renew(keys=[self.key], args=[self._token, self.ttl_ms]))
        self._due = now + self.renew_every if self._held else now
        return self._held

    def drop(self) -> None:
        """Stop acting as the holder (fenced out, lost, or the fences are not up yet); the
        key is left to expire or to whoever holds it, and the next try is when it was due."""
        self._held = False

    def release(self) -> None:
        if self._held:
            self._release(keys=[self.key], args=[self._token])
            self._held = False

    def holder(self) -> Holder | None:
        raw = self.client.get(self.key)
        if raw is None:
            return None
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        host, _, rest = text.partition(":")
        return Holder(host, rest.partition(":")[0])

    def wait(self, seconds: float) -> bool:
        """Try to acquire until `seconds` have passed (a one-shot hydrate's --wait-lease)."""
        backoff = Backoff(min(0.2, self.ttl_ms / 5000))
        deadline = backoff.clock() + seconds
        while not self.acquire():
            if not backoff.pause(deadline):
                return False
        return True
