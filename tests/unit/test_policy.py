"""The scaling policy, rule by rule: one pure function, so every case is a row of a table."""

from __future__ import annotations

from dataclasses import replace

import pytest

from manager.config import PoolConfig
from manager.policy import (
    HOLD,
    NONE,
    SCALE_IN,
    SCALE_OUT,
    PolicyConfig,
    PolicyState,
    PoolStats,
    desired_workers,
    wanted_workers,
)

CONFIG = PolicyConfig(min=0, max=10, jobs_per_worker=4, scale_in_window_s=60, idle_to_zero_s=120, max_step=10)


def stats(pending: int = 0, in_progress: int = 0, running: int = 0, starting: int = 0, now: float = 0.0,
          **extra: object) -> PoolStats:
    return PoolStats(pending=pending, in_progress=in_progress, running=running, starting=starting, now=now,
                     **extra)  # type: ignore[arg-type]


def run(series: list[tuple[float, int, int]], config: PolicyConfig = CONFIG,
        state: PolicyState | None = None) -> list[tuple[int, str]]:
    """Feed (time, demand, current) rows through the policy, carrying the state; (desired, action) per row."""
    state = state or PolicyState()
    out = []
    for now, demand, current in series:
        decision = desired_workers(stats(pending=demand, running=current, now=now), state, config)
        state = decision.state
        out.append((decision.desired, decision.action))
    return out


@pytest.mark.parametrize(("demand", "lo", "hi", "per", "expected"), [
    (0, 0, 10, 4, 0),
    (1, 0, 10, 4, 1),
    (4, 0, 10, 4, 1),
    (5, 0, 10, 4, 2),
    (39, 0, 10, 4, 10),
    (1000, 0, 10, 4, 10),   # no cap on what is counted: ReefGuide's 10-job poll never reached max
    (0, 2, 10, 4, 2),       # min holds with no work
    (7, 0, 3, 1, 3),        # max clamps
    (3, 3, 3, 1, 3),
])
def test_wanted_is_ceil_of_demand_over_jobs_per_worker_clamped(demand, lo, hi, per, expected):
    config = replace(CONFIG, min=lo, max=hi, jobs_per_worker=per)
    assert wanted_workers(demand, config) == expected


@pytest.mark.parametrize(("pending", "in_progress", "running", "starting", "desired", "action"), [
    (12, 0, 0, 0, 3, SCALE_OUT),     # out at once, from zero
    (8, 4, 1, 0, 3, SCALE_OUT),      # in-progress jobs count as demand
    (8, 4, 1, 2, 3, NONE),           # starting workers are capacity: not launched twice
    (100, 0, 2, 0, 10, SCALE_OUT),   # straight to max
    (4, 0, 1, 0, 1, NONE),
])
def test_scale_out_at_once(pending, in_progress, running, starting, desired, action):
    decision = desired_workers(stats(pending, in_progress, running, starting), PolicyState(), CONFIG)
    assert (decision.desired, decision.action) == (desired, action)
    assert decision.previous == running + starting


def test_draining_workers_are_not_capacity():
    # Three workers registered, two draining (leaving): 12 jobs need 3, so two more are launched.
    decision = desired_workers(stats(pending=12, running=1, draining=2), PolicyState(), CONFIG)
    assert (decision.previous, decision.desired, decision.action) == (1, 3, SCALE_OUT)


def test_scale_in_waits_for_the_whole_window():
    # 3 workers, demand drops to 4 jobs (1 wanted) at t=0 and stays there.
    rows = [(t, 4, 3) for t in range(0, 70, 10)]
    assert run(rows) == [(3, HOLD)] * 6 + [(1, SCALE_IN)]   # t=60: the 60 s window is complete


def test_a_spike_inside_the_window_keeps_the_workers_it_wanted():
    # Demand wanted 3 at t=30; at t=60 the window [0, 60] still holds that, so nothing is stopped.
    rows = [(0, 4, 3), (10, 4, 3), (20, 4, 3), (30, 12, 3), (40, 4, 3), (50, 4, 3), (60, 4, 3), (70, 4, 3),
            (80, 4, 3), (90, 4, 3)]
    result = run(rows)
    assert all(action != SCALE_IN for _, action in result[:9])
    assert result[9] == (1, SCALE_IN)   # t=90: the spike at t=30 has left the window


def test_scale_in_goes_to_the_highest_count_wanted_within_the_window():
    rows = [(0, 8, 4), (20, 4, 4), (40, 4, 4), (65, 4, 4)]   # wanted: 2, 1, 1, 1; window at t=65 is (5, 65]
    assert run(rows)[-1] == (1, SCALE_IN)
    rows = [(0, 4, 4), (20, 8, 4), (40, 4, 4), (60, 4, 4)]   # wanted: 1, 2, 1, 1 → keep 2
    assert run(rows)[-1] == (2, SCALE_IN)


def test_to_zero_only_after_idle_time_with_nothing_pending_or_running():
    config = replace(CONFIG, scale_in_window_s=10, idle_to_zero_s=60)
    # Idle from t=0 with 2 workers: after the 10 s window down to one, to zero only at t=60.
    rows = [(t, 0, 2 if t <= 10 else 1) for t in range(0, 70, 10)]
    assert run(rows, config) == [(2, HOLD), (1, SCALE_IN), (1, HOLD), (1, HOLD), (1, HOLD), (1, HOLD),
                                 (0, SCALE_IN)]


def test_in_progress_jobs_keep_the_last_worker():
    config = replace(CONFIG, scale_in_window_s=10, idle_to_zero_s=20)
    state = PolicyState()
    for now in range(0, 100, 10):
        decision = desired_workers(stats(in_progress=1, running=1, now=now), state, config)
        state = decision.state
        assert decision.desired == 1


def test_idle_time_restarts_when_work_arrives():
    config = replace(CONFIG, scale_in_window_s=10, idle_to_zero_s=30)
    rows = [(0, 0, 1), (20, 0, 1), (25, 1, 1), (30, 0, 1), (50, 0, 1), (60, 0, 1)]
    assert [d for d, _ in run(rows, config)] == [1, 1, 1, 1, 1, 0]   # idle again from t=30: zero at t=60


def test_min_is_kept_and_zero_needs_min_zero():
    config = replace(CONFIG, min=2, scale_in_window_s=0, idle_to_zero_s=0)
    assert run([(0, 0, 5), (1, 0, 5)], config)[-1] == (2, SCALE_IN)
    assert run([(0, 0, 0)], config) == [(2, SCALE_OUT)]


@pytest.mark.parametrize(("current", "demand", "step", "expected", "limited"), [
    (0, 40, 3, 3, True),     # out: at most 3 more per tick
    (3, 40, 3, 6, True),
    (9, 40, 3, 10, False),
    (10, 0, 4, 6, True),     # in: at most 4 fewer per tick (window and idle time already over)
])
def test_max_step_bounds_the_change_per_tick(current, demand, step, expected, limited):
    config = replace(CONFIG, max_step=step, scale_in_window_s=0, idle_to_zero_s=0)
    state = PolicyState(observed_since=-100.0, idle_since=-100.0)
    decision = desired_workers(stats(pending=demand, running=current), state, config)
    assert decision.desired == expected
    assert ("at most" in decision.reason) is limited


def test_failed_inputs_hold_and_restart_the_window():
    config = replace(CONFIG, scale_in_window_s=30, idle_to_zero_s=1000)
    state = PolicyState()
    for now in (0, 10, 20):
        state = desired_workers(stats(pending=0, running=3, now=now), state, config).state
    failed = desired_workers(stats(pending=0, running=3, now=25, ok=False, error="API: 503"), state, config)
    assert (failed.desired, failed.action) == (3, HOLD)
    assert "503" in failed.reason
    # Without the failure t=30 would scale in; after it the window starts again at t=30.
    assert run([(30, 0, 3), (50, 0, 3)], config, failed.state) == [(3, HOLD), (3, HOLD)]
    assert run([(30, 0, 3), (60, 0, 3)], config, failed.state)[-1] == (1, SCALE_IN)


def test_failed_inputs_never_scale_out_either():
    decision = desired_workers(stats(pending=500, running=1, ok=False, error="ecs: throttled"), PolicyState(),
                               CONFIG)
    assert (decision.desired, decision.action) == (1, HOLD)


def test_pin_sets_the_count_outright():
    pinned = replace(CONFIG, pinned=5)
    assert desired_workers(stats(pending=0, running=1), PolicyState(), pinned).desired == 5
    # Scaling in to a pin does not wait for the window.
    pinned = replace(CONFIG, pinned=2)
    decision = desired_workers(stats(pending=400, running=8), PolicyState(), pinned)
    assert (decision.desired, decision.action) == (2, SCALE_IN)
    assert "pinned" in decision.reason
    assert desired_workers(stats(running=2), PolicyState(), pinned).action == NONE
    assert desired_workers(stats(running=0), PolicyState(), replace(CONFIG, pinned=0)).action == NONE


def test_overrides_from_the_api_replace_the_bounds():
    pool = PoolConfig(name="p", job_types=(), min=0, max=8, jobs_per_worker=1)
    assert PolicyConfig.for_pool(pool, {}).max == 8
    config = PolicyConfig.for_pool(pool, {"min_override": 2, "max_override": 4, "pinned_count": None})
    assert (config.min, config.max, config.pinned) == (2, 4, None)
    assert desired_workers(stats(pending=100), PolicyState(), config).desired == 4
    assert desired_workers(stats(pending=0), PolicyState(), config).desired == 2
    # Out-of-range overrides are kept within 0..configured max; min never above max.
    config = PolicyConfig.for_pool(pool, {"min_override": 50, "max_override": 3, "pinned_count": 99})
    assert (config.min, config.max, config.pinned) == (3, 3, 8)


def test_lowered_max_scales_in_without_waiting():
    config = replace(CONFIG, max=2)
    decision = desired_workers(stats(pending=100, running=6), PolicyState(), config)
    assert (decision.desired, decision.action) == (2, SCALE_IN)
