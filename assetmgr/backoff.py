"""Pauses between retries: the one rule every retry loop of the project follows.

A pause starts at `first` and, after each one taken, grows (times `factor`, plus `step`) up to
`cap`; each is jittered by a random factor drawn from `jitter`, so the clients that lost a
server together do not all come back in the same instant. A leaf: the store, the public client
and the lease all retry, so it imports nothing of the project. The clock, the sleep and the
random draw are injectable, so tests run a backoff without waiting.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    first: float
    cap: float | None = None  # None: `first`, so a pause that does not grow needs no cap
    factor: float = 1.0
    step: float = 0.0
    jitter: tuple[float, float] = (1.0, 1.0)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    draw: Callable[[float, float], float] = random.uniform
    delay: float = field(init=False)  # the next pause before its jitter

    def __post_init__(self) -> None:
        self.delay = self.first

    def next(self) -> float:
        """The pause to take now, jittered; the one after it grows."""
        pause = self.delay * self.draw(*self.jitter)
        cap = self.first if self.cap is None else self.cap
        self.delay = min(self.delay * self.factor + self.step, cap)
        return pause

    def pause(self, deadline: float | None = None) -> bool:
        """Sleep the next pause; False, without sleeping, when it would end after `deadline`
        (on `clock`): a retry loop never waits past the time it was given."""
        if deadline is not None and self.clock() + self.delay > deadline:
            return False
        self.sleep(self.next())
        return True

    def reset(self) -> None:
        """The retried thing worked: the next trouble starts again from `first`."""
        self.delay = self.first
