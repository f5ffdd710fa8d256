"""The wake-up hub wakes as many parked claims as there is work for, and never loses a wake."""

from __future__ import annotations

import datetime as dt

from api.queue.wakeup import WakeHub


def test_a_count_wakes_that_many_waiters_of_the_type_longest_parked_first():
    hub = WakeHub()
    waiters = [hub.park(worker_id, ["noop"]) for worker_id in range(5)]
    other = hub.park(99, ["sleep"])
    hub.dispatch("noop:2")
    assert [w.woken for w in waiters] == [True, True, False, False, False]
    assert not other.woken
    assert waiters[0].woken_for == "noop"


def test_a_woken_waiter_is_not_woken_twice_for_two_arrivals():
    hub = WakeHub()
    first, second = hub.park(1, ["noop"]), hub.park(2, ["noop"])
    hub.wake("noop")
    hub.wake("noop")
    assert first.woken and second.woken


def test_a_waiter_back_in_line_after_its_claim_can_be_woken_again():
    hub = WakeHub()
    waiter = hub.park(1, ["noop", "sleep"])
    hub.wake("noop")
    waiter.clear()
    assert hub.wake("sleep") == 1  # still queued for its other type
    waiter.clear()
    assert hub.wake("noop") == 0
    hub.requeue(waiter)
    assert hub.wake("noop") == 1


def test_a_wake_not_acted_on_passes_to_another_waiter_when_its_claim_leaves():
    hub = WakeHub()
    leaving, staying = hub.park(1, ["noop"]), hub.park(2, ["noop"])
    hub.wake("noop")
    assert leaving.woken and not staying.woken
    hub.leave(leaving)
    assert staying.woken
    assert hub.parked() == 1


def test_a_claim_that_acted_on_its_wake_passes_nothing_on():
    hub = WakeHub()
    leaving, staying = hub.park(1, ["noop"]), hub.park(2, ["noop"])
    hub.wake("noop")
    leaving.clear()  # it claimed
    hub.leave(leaving)
    assert not staying.woken


def test_drains_wake_their_worker_and_reconnects_wake_everyone():
    hub = WakeHub()
    one, two = hub.park(1, ["noop"]), hub.park(2, ["noop"])
    hub.dispatch("worker:2")
    assert two.woken and not one.woken
    hub.wake_all()
    assert one.woken


def test_one_waiter_of_a_kind_takes_a_due_turn():
    hub = WakeHub()
    a, b, c = hub.park(1, ["noop"]), hub.park(2, ["noop"]), hub.park(3, ["sleep"])
    due = dt.datetime(2026, 12, 4, tzinfo=dt.UTC)
    assert hub.take_due_turn(a, due, now=0.0)
    assert not hub.take_due_turn(b, due, now=0.0)
    assert hub.take_due_turn(c, due, now=0.0)  # other types: its own turn


def test_leaving_waiters_do_not_pile_up_in_the_queues():
    hub = WakeHub()
    for worker_id in range(1000):
        hub.leave(hub.park(worker_id, ["noop", "sleep"]))
    assert hub.parked() == 0
    assert not hub._queues


def test_malformed_payloads_wake_one_claim_of_that_name():
    hub = WakeHub()
    waiter = hub.park(1, ["noop"])
    hub.dispatch("worker:x")
    hub.dispatch("noop:many")
    assert waiter.woken
