"""The one backoff rule, on a clock and a sleep the test holds: no test here waits."""

from __future__ import annotations

import pytest

from assetmgr.backoff import Backoff


class Clock:
    """A monotonic clock that only `sleep` moves; records every pause taken."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def steady(low: float, high: float) -> float:
    return 1.0  # no jitter: the pauses themselves


def pauses(backoff: Backoff, count: int) -> list[float]:
    return [round(backoff.next(), 6) for _ in range(count)]


def test_an_exponential_backoff_doubles_up_to_its_cap():
    backoff = Backoff(0.1, 5.0, factor=2.0, draw=steady)
    assert pauses(backoff, 9) == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]


def test_a_linear_backoff_grows_by_its_step_up_to_its_cap():
    backoff = Backoff(0.005, 0.02, step=0.005, draw=steady)
    assert pauses(backoff, 6) == [0.005, 0.01, 0.015, 0.02, 0.02, 0.02]


def test_without_growth_every_pause_is_the_first():
    assert pauses(Backoff(0.5, draw=steady), 3) == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("edge", [0, 1])
def test_jitter_scales_each_pause_by_a_factor_drawn_from_its_range(edge):
    drawn: list[tuple[float, float]] = []

    def draw(low: float, high: float) -> float:
        drawn.append((low, high))
        return (low, high)[edge]

    backoff = Backoff(0.4, 1.6, factor=2.0, jitter=(0.5, 1.5), draw=draw)
    expected = [[0.2, 0.4, 0.8], [0.6, 1.2, 2.4]][edge]
    assert pauses(backoff, 3) == expected
    assert drawn == [(0.5, 1.5)] * 3


def test_the_real_draw_stays_inside_the_jitter_range():
    backoff = Backoff(1.0, jitter=(0.5, 1.0))
    assert all(0.5 <= backoff.next() <= 1.0 for _ in range(200))


def test_a_pause_never_ends_after_the_deadline():
    clock = Clock()
    backoff = Backoff(1.0, 8.0, factor=2.0, clock=lambda: clock.now, sleep=clock.sleep, draw=steady)
    deadline = 5.0
    tries = 1
    while backoff.pause(deadline):
        tries += 1
    assert clock.slept == [1.0, 2.0]  # then 3 + 4 would end past 5: give up without sleeping
    assert clock.now <= deadline and tries == 3


def test_a_pause_without_deadline_always_sleeps():
    clock = Clock()
    backoff = Backoff(0.25, clock=lambda: clock.now, sleep=clock.sleep, draw=steady)
    assert all(backoff.pause() for _ in range(4))
    assert clock.slept == [0.25] * 4


def test_reset_starts_again_from_the_first_pause():
    backoff = Backoff(0.1, 5.0, factor=2.0, draw=steady)
    pauses(backoff, 4)
    backoff.reset()
    assert pauses(backoff, 2) == [0.1, 0.2]
