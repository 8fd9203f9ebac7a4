"""The reader's per-path schedule on a clock the test holds: no processes, no inotify, no Valkey.

Each test plays what the reader does (mark on an event, report a read back, run the timers)
and asserts on what the schedule decides: which reads to submit and which deletes to send.
"""

from __future__ import annotations

import pytest

from assetmgr.messages import Delete
from assetmgr.pipeline.schedule import BURST_MAX, BURST_QUIET, Schedule

HOLD = 0.3
SETTLE = 2.0
T0 = 1000.0  # CLOCK_MONOTONIC seconds: a machine up for a while
A = "weights/cost.json"
B = "routes/api.json"


@pytest.fixture
def schedule() -> Schedule:
    return Schedule(delete_hold=HOLD, settle=SETTLE)


def ns(seconds: float) -> int:
    return int(seconds * 1e9)


def paths(tasks: list[tuple[str, int, str | None]]) -> list[str]:
    return [path for path, _, _ in tasks]


def on_disk(*present: str):
    return lambda path: path in present


# -- sequence numbers ---------------------------------------------------------------------


def test_a_sequence_number_is_the_mark_time_in_nanoseconds(schedule):
    schedule.mark_dirty(A, T0)
    assert schedule.take_tasks() == [(A, ns(T0), None)]


def test_sequence_numbers_grow_per_path_even_on_one_clock_reading(schedule):
    seqs = []
    for _ in range(5):
        schedule.mark_dirty(A, T0)  # the same `now`: one loop iteration, several events
        schedule.done(A, T0)
        seqs.append(schedule.seq[A])
    assert seqs == sorted(set(seqs)) and len(seqs) == 5, seqs


def test_sequence_numbers_never_go_back_when_the_clock_does(schedule):
    schedule.mark_dirty(A, T0)
    first = schedule.seq[A]
    schedule.done(A, T0)
    schedule.mark_dirty(A, T0 - 5.0)
    assert schedule.seq[A] > first


def test_sequence_numbers_are_per_path(schedule):
    schedule.mark_dirty(A, T0 + 1.0)
    schedule.mark_dirty(B, T0)
    assert schedule.take_tasks() == [(A, ns(T0 + 1.0), None), (B, ns(T0), None)]


def test_a_delete_carries_a_newer_sequence_number_than_the_last_read(schedule):
    schedule.mark_dirty(A, T0)
    read_seq = schedule.take_tasks()[0][1]
    schedule.done(A, T0 + 0.01)
    schedule.mark_gone(A, T0 + 0.02)
    due = schedule.due(T0 + 0.02 + HOLD)
    deletes = schedule.confirm(due, T0 + 0.02 + HOLD, on_disk())
    assert deletes == [Delete(A, ns(T0 + 0.02 + HOLD))]
    assert deletes[0].seq > read_seq


# -- one read in flight, coalescing, bursts --------------------------------------------------


def test_the_expected_hash_rides_with_the_task(schedule):
    schedule.mark_dirty(A, T0, expect="ab" * 32)
    assert schedule.take_tasks() == [(A, ns(T0), "ab" * 32)]


def test_take_tasks_hands_each_task_out_once(schedule):
    schedule.mark_dirty(A, T0)
    assert schedule.has_tasks
    assert paths(schedule.take_tasks()) == [A]
    assert not schedule.has_tasks
    assert schedule.take_tasks() == []


def test_marks_while_a_read_is_in_flight_coalesce_into_one_reread(schedule):
    schedule.mark_dirty(A, T0)
    assert paths(schedule.take_tasks()) == [A]
    for i in range(1, 10):
        schedule.mark_dirty(A, T0 + i * 0.001)
    assert schedule.take_tasks() == []  # one read in flight per path
    last = schedule.seq[A]

    schedule.done(A, T0 + 0.02)  # the read came back; the path was marked meanwhile
    assert schedule.due(T0 + 0.02) == []
    assert schedule.take_tasks() == []  # cooling: not straight away
    schedule.due(T0 + 0.02 + BURST_QUIET)
    assert schedule.take_tasks() == [(A, last, None)]  # one re-read, with the newest seq


def test_a_read_back_without_marks_meanwhile_leaves_the_path_idle(schedule):
    schedule.mark_dirty(A, T0)
    schedule.take_tasks()
    schedule.done(A, T0 + 0.01)
    assert schedule.next_due() is None
    assert not schedule.busy
    schedule.mark_dirty(A, T0 + 0.02)  # the next event is read at once
    assert paths(schedule.take_tasks()) == [A]


def test_other_paths_are_not_held_up_by_one_in_flight(schedule):
    schedule.mark_dirty(A, T0)
    schedule.mark_dirty(A, T0 + 0.001)
    schedule.mark_dirty(B, T0 + 0.002)
    assert paths(schedule.take_tasks()) == [A, B]


def test_a_burst_is_reread_once_quiet(schedule):
    schedule.mark_dirty(A, T0)
    schedule.take_tasks()
    schedule.mark_dirty(A, T0 + 0.001)
    schedule.done(A, T0 + 0.01)  # cooling until T0 + 0.01 + BURST_QUIET
    schedule.mark_dirty(A, T0 + 0.03)  # still writing: wait for quiet after this mark
    schedule.due(T0 + 0.01 + BURST_QUIET)
    assert schedule.take_tasks() == []
    assert schedule.next_due() == pytest.approx(T0 + 0.03 + BURST_QUIET)
    schedule.due(T0 + 0.03 + BURST_QUIET)
    assert paths(schedule.take_tasks()) == [A]


def test_a_burst_that_never_pauses_is_reread_by_burst_max(schedule):
    schedule.mark_dirty(A, T0)
    schedule.take_tasks()
    schedule.mark_dirty(A, T0 + 0.001)
    noticed = T0 + 0.01
    schedule.done(A, noticed)
    reads = []
    now = noticed
    while now < noticed + 2 * BURST_MAX:  # a mark every 10 ms, never quiet for BURST_QUIET
        now += 0.01
        schedule.mark_dirty(A, now)
        schedule.due(now)
        reads += [(now, task) for task in schedule.take_tasks()]
        if reads:
            break
    assert len(reads) == 1, reads
    at, (path, seq, _) = reads[0]
    assert path == A
    assert noticed + BURST_MAX - 0.011 <= at <= noticed + BURST_MAX + 0.011
    assert seq == schedule.seq[A]  # the newest mark, so the final content wins


def test_marks_during_a_cooldown_do_not_start_a_read(schedule):
    schedule.mark_dirty(A, T0)
    schedule.take_tasks()
    schedule.mark_dirty(A, T0 + 0.001)
    schedule.done(A, T0 + 0.01)
    schedule.mark_dirty(A, T0 + 0.02)
    assert schedule.take_tasks() == []
    assert schedule.busy


# -- settling --------------------------------------------------------------------------------


def test_a_file_being_written_is_read_at_the_settle_deadline(schedule):
    schedule.settle(A, T0)
    assert schedule.next_due() == T0 + SETTLE
    assert schedule.due(T0 + SETTLE - 0.01) == []
    assert schedule.take_tasks() == []
    schedule.due(T0 + SETTLE)
    assert schedule.take_tasks() == [(A, ns(T0 + SETTLE), None)]
    assert schedule.next_due() is None


def test_a_close_ends_settling_with_one_read(schedule):
    schedule.settle(A, T0)
    schedule.mark_dirty(A, T0 + 0.5)  # IN_CLOSE_WRITE
    assert paths(schedule.take_tasks()) == [A]
    schedule.done(A, T0 + 0.6)
    schedule.due(T0 + SETTLE + 1)
    assert schedule.take_tasks() == []  # no second read at the old deadline


def test_each_write_pushes_the_settle_deadline(schedule):
    schedule.settle(A, T0)
    schedule.settle(A, T0 + 1.5)
    schedule.due(T0 + SETTLE)
    assert schedule.take_tasks() == []
    schedule.due(T0 + 1.5 + SETTLE)
    assert paths(schedule.take_tasks()) == [A]


def test_settling_counts_as_waiting(schedule):
    schedule.settle(A, T0)
    schedule.mark_gone(B, T0)
    assert schedule.waiting == 2


def test_a_burst_cooling_down_counts_as_waiting(schedule):
    schedule.mark_dirty(A, T0)
    schedule.take_tasks()
    schedule.mark_dirty(A, T0 + 0.001)  # rewritten while being read
    assert schedule.waiting == 0  # in flight: the pool's count, not this one
    schedule.done(A, T0 + 0.01)
    assert schedule.waiting == 1  # its re-read is still to come
    schedule.due(T0 + 0.01 + BURST_QUIET)
    assert paths(schedule.take_tasks()) == [A]
    assert schedule.waiting == 0


# -- delete holds ----------------------------------------------------------------------------


def gone_after_read(schedule: Schedule, path: str, at: float) -> None:
    schedule.mark_dirty(path, at)
    schedule.take_tasks()
    schedule.done(path, at)
    schedule.mark_gone(path, at)


def test_a_delete_is_held_then_sent_when_the_disk_confirms_it(schedule):
    gone_after_read(schedule, A, T0)
    assert schedule.next_due() == T0 + HOLD
    assert schedule.due(T0 + HOLD - 0.01) == []
    due = schedule.due(T0 + HOLD)
    assert due == [A]
    assert schedule.confirm(due, T0 + HOLD, on_disk()) == [Delete(A, ns(T0 + HOLD))]
    assert A not in schedule.known
    assert schedule.next_due() is None and not schedule.busy


def test_a_file_recreated_during_the_hold_is_read_again_not_deleted(schedule):
    gone_after_read(schedule, A, T0)  # vim: rename away, write anew
    due = schedule.due(T0 + HOLD)
    assert schedule.confirm(due, T0 + HOLD, on_disk(A)) == []
    assert schedule.take_tasks() == [(A, ns(T0 + HOLD), None)]
    assert A in schedule.known
    assert schedule.due(T0 + 10 * HOLD) == []  # the hold is over for good


def test_a_delete_of_a_path_still_being_read_is_held_again(schedule):
    gone_after_read(schedule, A, T0)
    schedule.mark_dirty(B, T0)
    schedule.mark_gone(B, T0)  # deleted while its read is in flight
    schedule.take_tasks()
    due = schedule.due(T0 + HOLD)
    assert set(due) == {A, B}
    assert schedule.confirm(due, T0 + HOLD, on_disk()) == [Delete(A, ns(T0 + HOLD))]
    assert schedule.next_due() == pytest.approx(T0 + 2 * HOLD)  # B held again
    schedule.done(B, T0 + HOLD + 0.01, missing=True)
    due = schedule.due(T0 + 2 * HOLD + 0.01)
    assert due == [B]
    deletes = schedule.confirm(due, T0 + 2 * HOLD + 0.01, on_disk())
    assert [d.path for d in deletes] == [B]


def test_a_delete_of_a_path_cooling_after_a_burst_is_held_again():
    short = Schedule(delete_hold=BURST_QUIET / 5, settle=SETTLE)
    short.mark_dirty(A, T0)
    short.take_tasks()
    short.mark_dirty(A, T0 + 0.001)
    short.done(A, T0 + 0.01)  # cooling until T0 + 0.01 + BURST_QUIET
    short.mark_gone(A, T0 + 0.01)
    at = T0 + 0.01 + short.delete_hold
    due = short.due(at)
    assert due == [A]
    assert short.confirm(due, at, on_disk()) == []  # its re-read is still to come
    assert A in short.known
    assert short.next_due() == pytest.approx(at + short.delete_hold)


def test_a_mark_cancels_a_held_delete(schedule):
    gone_after_read(schedule, A, T0)
    schedule.mark_dirty(A, T0 + 0.1)  # IN_MOVED_TO: back under its name
    assert schedule.due(T0 + HOLD) == []
    assert paths(schedule.take_tasks()) == [A]


def test_a_missing_read_holds_a_delete(schedule):
    schedule.mark_dirty(A, T0)
    schedule.take_tasks()
    schedule.done(A, T0 + 0.01, missing=True)
    assert schedule.due(T0 + 0.01 + HOLD) == [A]


def test_a_gone_hint_ends_settling(schedule):
    schedule.settle(A, T0)
    schedule.mark_gone(A, T0 + 0.1)
    schedule.due(T0 + SETTLE)
    assert schedule.take_tasks() == []
    assert schedule.due(T0 + SETTLE) == [A]


@pytest.mark.parametrize(
    "path", ["weights/.cost.json.swp", "weights/cost.json~", ".git/x.json", "a"]
)
def test_only_asset_names_can_be_deleted(schedule, path):
    schedule.mark_gone(path, T0)
    assert schedule.due(T0 + HOLD) == []
    assert schedule.waiting == 0


def test_forget_waits_drops_holds_and_settling_but_not_reads(schedule):
    gone_after_read(schedule, A, T0)
    schedule.settle(B, T0)
    schedule.mark_dirty("cards/x.json", T0)
    schedule.forget_waits()  # the root vanished: no delete is worth confirming
    assert schedule.waiting == 0
    assert schedule.due(T0 + SETTLE) == []
    assert paths(schedule.take_tasks()) == ["cards/x.json"]


# -- drain -----------------------------------------------------------------------------------


def test_hurry_makes_every_wait_due_now(schedule):
    schedule.settle(A, T0)
    gone_after_read(schedule, B, T0)
    schedule.mark_dirty("cards/x.json", T0)
    schedule.take_tasks()
    schedule.mark_dirty("cards/x.json", T0 + 0.001)
    schedule.done("cards/x.json", T0 + 0.002)  # cooling after a burst
    stop = T0 + 0.01
    schedule.hurry(stop)
    assert schedule.take_tasks() == [(A, ns(stop), None)]  # settling: read now
    assert schedule.busy  # a hold and a cool-down are left, due now
    assert schedule.next_due() == stop
    due = schedule.due(stop)
    assert paths(schedule.take_tasks()) == ["cards/x.json"]
    assert schedule.confirm(due, stop, on_disk()) == [Delete(B, ns(stop))]
    schedule.done("cards/x.json", stop + 0.01)
    assert not schedule.busy


def test_a_drain_waits_for_a_delete_held_behind_a_read(schedule):
    schedule.mark_dirty(A, T0)
    schedule.mark_gone(A, T0)
    schedule.hurry(T0 + 0.01)
    due = schedule.due(T0 + 0.01)
    assert schedule.confirm(due, T0 + 0.01, on_disk()) == []  # read in flight: held
    assert schedule.busy


# -- what the loop waits for -----------------------------------------------------------------


def test_next_due_is_the_earliest_timer(schedule):
    assert schedule.next_due() is None
    schedule.settle(A, T0)
    assert schedule.next_due() == T0 + SETTLE
    gone_after_read(schedule, B, T0 + 0.5)
    assert schedule.next_due() == T0 + 0.5 + HOLD
    schedule.mark_dirty("cards/x.json", T0 + 0.6)
    schedule.mark_dirty("cards/x.json", T0 + 0.61)
    schedule.done("cards/x.json", T0 + 0.62)
    assert schedule.next_due() == pytest.approx(T0 + 0.62 + BURST_QUIET)


def test_nothing_is_due_before_its_time(schedule):
    schedule.settle(A, T0)
    gone_after_read(schedule, B, T0)
    assert schedule.due(schedule.next_due() - 1e-6) == []
    assert schedule.take_tasks() == []
