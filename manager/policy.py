"""How many workers a pool should have: a pure function of what was observed and a little history.

``desired_workers(stats, state, config)`` does no I/O and reads no clock (``stats.now`` is the
time), so every rule is a table test:

- demand = pending + in-progress jobs of the pool's types (exact counts, no cap);
  wanted = clamp(ceil(demand / jobs_per_worker), min, max);
- scale out at once (up to ``max_step`` more per tick);
- scale in only when every wanted count over the last ``scale_in_window_s`` was below the
  current count, and then only to the highest of them (so a lull between bursts does not
  stop workers that the next burst needs);
- down to zero only after ``idle_to_zero_s`` with no pending and no in-progress job;
- never more than ``max_step`` fewer per tick;
- when the observation failed, hold, and start the window again once data is back;
- an admin pin sets the count outright (still ``max_step`` per tick); admin min/max
  overrides replace the configured bounds, within 0..configured max;
- capacity is running (registered, not draining) plus starting workers: a draining worker
  is leaving, so it is not counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from manager.config import PoolConfig

SCALE_OUT = "scale_out"
SCALE_IN = "scale_in"
HOLD = "hold"
NONE = "none"


@dataclass(frozen=True)
class PoolStats:
    """One tick's observation of a pool."""

    pending: int
    in_progress: int
    #: Registered, live, not draining workers of the pool.
    running: int
    #: Launched but not registered yet (within the start timeout).
    starting: int
    #: Registered and draining: finishing their jobs, then leaving. Not capacity.
    draining: int = 0
    scheduled: int = 0
    #: False when the API or the backend could not be read; the counts are then not to be trusted.
    ok: bool = True
    error: str | None = None
    #: Seconds on any monotonic clock.
    now: float = 0.0

    @property
    def current(self) -> int:
        """Capacity the pool has or will have shortly: running plus starting."""
        return self.running + self.starting


@dataclass(frozen=True)
class PolicyConfig:
    """The effective scaling settings of a pool: configuration with the admin's overrides applied."""

    min: int
    max: int
    jobs_per_worker: int
    scale_in_window_s: float
    idle_to_zero_s: float
    max_step: int
    pinned: int | None = None

    @classmethod
    def for_pool(cls, pool: PoolConfig, overrides: Mapping[str, Any] | None = None) -> PolicyConfig:
        """``pool``'s settings with ``pinned_count``/``min_override``/``max_override`` applied.

        Overrides are kept within 0..the configured max (the admin API validates the same), and a
        min override above the effective max is lowered to it.
        """
        overrides = overrides or {}

        def bounded(value: Any) -> int | None:
            return None if value is None else max(0, min(int(value), pool.max))

        maximum = bounded(overrides.get("max_override"))
        maximum = pool.max if maximum is None else maximum
        minimum = bounded(overrides.get("min_override"))
        minimum = min(pool.min if minimum is None else minimum, maximum)
        return cls(min=minimum, max=maximum, jobs_per_worker=pool.jobs_per_worker,
                   scale_in_window_s=pool.scale_in_window_s, idle_to_zero_s=pool.idle_to_zero_s,
                   max_step=pool.max_step, pinned=bounded(overrides.get("pinned_count")))


@dataclass(frozen=True)
class PolicyState:
    """The history the policy needs; :func:`desired_workers` returns the next one in its Decision."""

    #: (time, wanted count) of the ticks within the scale-in window, oldest first.
    samples: tuple[tuple[float, int], ...] = ()
    #: Start of the unbroken run of good observations (None: the last one failed, or none yet).
    observed_since: float | None = None
    #: Since when there has been no pending and no in-progress job (None: there is work).
    idle_since: float | None = None


@dataclass(frozen=True)
class Decision:
    """What the pool should have, why, and the state to pass to the next call."""

    desired: int
    previous: int
    action: str
    reason: str
    state: PolicyState
    #: clamp(ceil(demand / jobs_per_worker), min, max) this tick (None when the inputs failed).
    wanted: int | None = None


def wanted_workers(demand: int, config: PolicyConfig) -> int:
    """clamp(ceil(demand / jobs_per_worker), min, max)."""
    return max(config.min, min(config.max, math.ceil(demand / config.jobs_per_worker)))


def desired_workers(stats: PoolStats, state: PolicyState, config: PolicyConfig) -> Decision:
    """The pool's desired worker count this tick, the action it implies and the reason."""
    current = stats.current
    if not stats.ok:
        # Never act on missing data; the scale-in window starts again once data is back.
        return Decision(current, current, HOLD, f"inputs unavailable ({stats.error or 'unknown error'}); "
                        f"holding at {current}", PolicyState())
    now = stats.now
    demand = stats.pending + stats.in_progress
    wanted = wanted_workers(demand, config)
    window = config.scale_in_window_s
    next_state = PolicyState(
        samples=tuple((t, w) for t, w in state.samples if t > now - window) + ((now, wanted),),
        observed_since=now if state.observed_since is None else state.observed_since,
        idle_since=None if demand else (now if state.idle_since is None else state.idle_since),
    )
    need = (f"{demand} jobs ({stats.pending} pending + {stats.in_progress} in progress) "
            f"want {wanted} at {config.jobs_per_worker} per worker (min {config.min}, max {config.max})")

    if config.pinned is not None:
        target, why = config.pinned, f"pinned to {config.pinned} by an admin; {need}"
    elif wanted >= current:
        target, why = wanted, need
    elif current > config.max:
        target, why = config.max, f"above max {config.max}; {need}"
    else:
        target, why = _scale_in_target(current, demand, next_state, config, now)
        why = f"{need}; {why}"

    step = config.max_step
    bounded = max(current - step, min(current + step, target))
    if bounded != target:
        why += f"; at most {step} per tick"
    if bounded > current:
        action = SCALE_OUT
    elif bounded < current:
        action = SCALE_IN
    else:
        # HOLD: more or fewer were wanted, but a rule (window, idle time) keeps the count.
        goal = wanted if config.pinned is None else config.pinned
        action = NONE if goal == current else HOLD
    return Decision(bounded, current, action, why, next_state, wanted)


def _scale_in_target(current: int, demand: int, state: PolicyState, config: PolicyConfig,
                     now: float) -> tuple[int, str]:
    """Fewer workers are wanted than there are: how many to keep, and why."""
    assert state.observed_since is not None
    if demand == 0 and config.min == 0 and state.idle_since is not None:
        idle_for = now - state.idle_since
        if idle_for >= config.idle_to_zero_s:
            return 0, f"idle for {idle_for:.0f} s (≥ {config.idle_to_zero_s:g} s): down to zero"
    observed_for = now - state.observed_since
    if observed_for < config.scale_in_window_s:
        return current, (f"scale-in waits for the {config.scale_in_window_s:g} s window "
                         f"({observed_for:.0f} s observed)")
    peak = max(w for _, w in state.samples)
    # Zero is reached only through the idle rule above; until then one worker stays.
    floor = 1 if config.min == 0 else config.min
    keep = min(current, max(peak, floor))
    if keep >= current:
        return current, f"demand wanted {peak} within the last {config.scale_in_window_s:g} s; holding"
    return keep, f"at most {peak} wanted for {config.scale_in_window_s:g} s: scaling in"
