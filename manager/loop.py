"""The control loop: per tick renew the lease, then per pool observe → decide → act → record.

Like rq's worker-pool check, but every count comes from the API (exact queue depth, live
workers) and the backend (what was launched), and the decision is the pure
:func:`manager.policy.desired_workers`. Rules the loop itself keeps:

- only the lease holder acts; a second manager waits;
- scale in by draining *idle* workers (``only_idle``: the API's UPDATE refuses a busy one);
  a drained worker exits by itself. SIGTERM / StopTask only for an instance whose worker is
  draining with no job for ``drain_grace_s``, that never registered within ``start_timeout_s``,
  or whose worker is gone while the process/task lingers;
- an instance that disappears before registering, or exits non-zero unasked, is a launch
  failure: launches back off exponentially (per pool) until an instance registers again;
- a redeploy generation change: workers launched for an older generation are drained (the
  API drained those it knew of); replacements come from the current command or the latest
  task-definition revision, since draining workers are not capacity.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from skyfleet_client.errors import Rejected, SkyfleetError

from manager.backends.base import Backend, Instance, Observation, revision_generation
from manager.config import ManagerSettings, PoolConfig
from manager.errors import BackendError
from manager.policy import (
    SCALE_IN,
    SCALE_OUT,
    Decision,
    PolicyConfig,
    PolicyState,
    PoolStats,
    desired_workers,
)
from settings import DECISION_REASON_CHARS

log = logging.getLogger(__name__)

LAUNCH_BACKOFF_BASE_S = 2.0
LAUNCH_BACKOFF_CAP_S = 300.0


class Api(Protocol):
    """What the loop needs of the API (:class:`manager.api_client.ManagerApi`, or a fake in tests)."""

    def report_pools(self, pools: list[dict[str, Any]]) -> list[dict[str, Any]]: ...
    def pools(self) -> list[dict[str, Any]]: ...
    def queues(self) -> dict[str, dict[str, int]]: ...
    def workers(self) -> list[dict[str, Any]]: ...
    def drain(self, worker_ids: list[int], only_idle: bool = True) -> list[int]: ...
    def record_decisions(self, decisions: list[dict[str, Any]]) -> int: ...
    def acquire_lease(self, holder: str, ttl_s: float) -> tuple[bool, dict[str, Any]]: ...
    def release_lease(self, holder: str) -> None: ...


@dataclass
class LaunchBackoff:
    """Exponential delay between launches after failures: base, 2×base, … up to the cap."""

    base_s: float = LAUNCH_BACKOFF_BASE_S
    cap_s: float = LAUNCH_BACKOFF_CAP_S
    failures: int = 0
    until: float = 0.0
    last_error: str | None = None

    def failed(self, now: float, error: str) -> None:
        """Count a failure and push the next allowed launch out."""
        self.failures += 1
        self.last_error = error
        self.until = now + min(self.cap_s, self.base_s * 2 ** (self.failures - 1))

    def healthy(self) -> None:
        """An instance registered: launching works again."""
        self.failures, self.until = 0, 0.0

    def wait_s(self, now: float) -> float:
        """Seconds until launching is allowed again (0: now)."""
        return max(0.0, self.until - now)


@dataclass
class PoolRuntime:
    """What the loop remembers about one pool between ticks."""

    pool: PoolConfig
    backend: Backend
    state: PolicyState = field(default_factory=PolicyState)
    backoff: LaunchBackoff = field(default_factory=LaunchBackoff)
    generation: int | None = None
    #: Instances whose worker has registered at least once.
    registered: set[str] = field(default_factory=set)
    #: Instance → since when its worker has been draining with no job (or gone while it lingers).
    idle_leaving_since: dict[str, float] = field(default_factory=dict)
    #: (running, starting, draining) of the last good observation.
    last_counts: tuple[int, int, int] = (0, 0, 0)
    last_recorded: tuple[Any, ...] | None = None
    last_recorded_at: float = float("-inf")


@dataclass
class _View:
    """One pool's instances and workers, matched up."""

    running: list[dict[str, Any]] = field(default_factory=list)
    draining: list[dict[str, Any]] = field(default_factory=list)
    starting: list[Instance] = field(default_factory=list)
    stop: list[tuple[Instance, str]] = field(default_factory=list)
    instance_of: dict[int, Instance] = field(default_factory=dict)
    #: Launches found to have failed (never registered in time).
    failures: list[str] = field(default_factory=list)


class Manager:
    """The loop around the pools; :meth:`tick` does one pass and returns the decisions it made."""

    def __init__(self, settings: ManagerSettings, api: Api, backends: Mapping[str, Backend],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings, self.api, self.clock = settings, api, clock
        self.pools = {p.name: PoolRuntime(p, backends[p.name]) for p in settings.pools}
        self.leader = False
        self._reported = False

    # -- the loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Tick every ``tick_s`` until ``stop`` is set; errors are logged and the loop carries on."""
        log.info("manager %s: %d pool(s) %s, tick %.1f s", self.settings.holder, len(self.pools),
                 ", ".join(f"{p.name}[{p.backend} {p.min}..{p.max}]" for p in self.settings.pools),
                 self.settings.tick_s)
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.tick()
            except Exception:  # a loop boundary: log with the traceback, tick again
                log.exception("tick failed")
            stop.wait(max(0.0, self.settings.tick_s - (time.monotonic() - started)))

    def close(self) -> None:
        """Release the lease (if held) and the backends (local workers are stopped)."""
        if self.leader:
            try:
                self.api.release_lease(self.settings.holder)
            except SkyfleetError as exc:
                log.warning("could not release the manager lease: %s", exc)
            self.leader = False
        for runtime in self.pools.values():
            try:
                runtime.backend.close()
            except Exception:  # shutting down: close the others regardless
                log.exception("closing the %s backend of pool %s failed", runtime.backend.name,
                              runtime.pool.name)

    def tick(self) -> list[dict[str, Any]]:
        """One pass over every pool; the decisions made (also sent to the API). [] when not the holder."""
        if not self._hold_lease():
            return []
        overrides: dict[str, dict[str, Any]] = {}
        queues: dict[str, dict[str, int]] = {}
        workers: list[dict[str, Any]] = []
        api_error = None
        try:
            overrides = {p["name"]: p for p in self._pool_overrides()}
            queues = self.api.queues()
            workers = self.api.workers()
        except SkyfleetError as exc:
            api_error = f"API: {exc}"
            log.warning("cannot read the API (%s); every pool holds", exc)
        decisions = []
        for runtime in self.pools.values():
            pool_overrides = overrides.get(runtime.pool.name, {})
            decision = self._tick_pool(runtime, pool_overrides, queues, workers, api_error)
            if decision is not None:
                decisions.append(decision)
        if decisions:
            try:
                self.api.record_decisions(decisions)
            except SkyfleetError as exc:
                log.warning("could not record %d decision(s): %s", len(decisions), exc)
                for runtime in self.pools.values():
                    runtime.last_recorded = None  # record again next tick
        return decisions

    def _hold_lease(self) -> bool:
        try:
            held, info = self.api.acquire_lease(self.settings.holder, self.settings.lease_ttl_s)
        except SkyfleetError as exc:
            # Without the API there is nothing to act on anyway; the lease lapses and is renewed later.
            log.warning("cannot renew the manager lease: %s", exc)
            return False
        if held != self.leader:
            if held:
                log.info("manager %s holds the lease; acting", self.settings.holder)
            else:
                log.info("the manager lease is held by %s until %s; standing by",
                         info.get("holder"), info.get("expires_at"))
            self.leader = held
        return held

    def _pool_overrides(self) -> list[dict[str, Any]]:
        if not self._reported:
            try:
                answer = self.api.report_pools([p.report() for p in self.settings.pools])
                self._reported = True
                return answer
            except Rejected as exc:
                log.error("the API refused the pool configuration (%s); using its stored pools", exc)
        return self.api.pools()

    # -- one pool -----------------------------------------------------------------------------

    def _tick_pool(self, rt: PoolRuntime, overrides: dict[str, Any], queues: dict[str, dict[str, int]],
                   workers: list[dict[str, Any]], api_error: str | None) -> dict[str, Any] | None:
        now = self.clock()
        pool = rt.pool
        # Observe.
        error = api_error
        observation: Observation | None = None
        try:
            observation = rt.backend.list()
        except BackendError as exc:
            error = f"{error}; {exc}" if error else str(exc)
            log.warning("pool %s: %s", pool.name, exc)
        generation = int(overrides.get("redeploy_generation") or 0)
        if rt.generation is not None and generation != rt.generation:
            log.info("pool %s: redeploy generation %s → %s", pool.name, rt.generation, generation)
        rt.generation = generation
        failures = self._note_gone(rt, observation) if observation is not None else []
        demand = {"pending": 0, "scheduled": 0, "in_progress": 0}
        for job_type, counts in queues.items():
            if pool.serves(job_type):
                for key in demand:
                    demand[key] += int(counts.get(key, 0))
        view = _View()
        redeploy_drained: list[int] = []
        if error is None and observation is not None:
            view = self._match(rt, observation, workers, now)
            failures += view.failures
            redeploy_drained = self._drain_old_generation(rt, view, generation)
        if failures:
            # One step of backoff per tick, however many instances of one launch failed together.
            more = f" (+{len(failures) - 3} more)" if len(failures) > 3 else ""
            rt.backoff.failed(now, "; ".join(failures[:3]) + more)
            log.warning("pool %s: launch failure %d: %s (next launch in %.0f s)", pool.name,
                        rt.backoff.failures, rt.backoff.last_error, rt.backoff.wait_s(now))
        seen = (len(view.running), len(view.starting), len(view.draining))
        if error is None:
            rt.last_counts = seen
        else:
            seen = rt.last_counts   # hold at what was last seen, not at the zero of an empty view
        stats = PoolStats(pending=demand["pending"], in_progress=demand["in_progress"], running=seen[0],
                          starting=seen[1], draining=seen[2], scheduled=demand["scheduled"],
                          ok=error is None, error=error, now=now)
        config = PolicyConfig.for_pool(pool, overrides)
        # Decide.
        decision = desired_workers(stats, rt.state, config)
        rt.state = decision.state
        # Act.
        action, reason = decision.action, decision.reason
        acted: dict[str, Any] = {}
        if decision.action == SCALE_OUT:
            action, reason, acted = self._scale_out(rt, decision, generation, now)
        elif decision.action == SCALE_IN:
            reason, acted = self._scale_in(rt, decision, view, now)
        if view.stop:
            for instance, why in view.stop:
                rt.backend.stop([instance], why)
            acted["stopped"] = [{"instance": i.id, "reason": why} for i, why in view.stop]
        if redeploy_drained:
            acted["redeploy_drained"] = redeploy_drained
        # Record.
        busy = sum(1 for w in view.running if int(w.get("running_jobs") or 0) > 0)
        inputs = {**demand, "running": stats.running, "starting": stats.starting, "draining": stats.draining,
                  "busy": busy, "idle": stats.running - busy, "wanted": decision.wanted, "min": config.min,
                  "max": config.max, "pinned": config.pinned, "jobs_per_worker": config.jobs_per_worker,
                  "generation": generation}
        observed = dict(observation.details if observation is not None else {"backend": rt.backend.name})
        observed |= acted
        if rt.backoff.failures:
            observed |= {"launch_failures": rt.backoff.failures, "last_launch_error": rt.backoff.last_error,
                         "launch_backoff_s": round(rt.backoff.wait_s(now), 1)}
        if error:
            observed["error"] = error
        record = {"pool": pool.name, "desired": decision.desired, "previous": decision.previous,
                  "action": action, "reason": reason[:DECISION_REASON_CHARS], "inputs": inputs,
                  "observed": observed}
        if not self._worth_recording(rt, record, now):
            return None
        log.info("pool %s: %s %d → %d: %s", pool.name, action, decision.previous, decision.desired, reason)
        return record

    def _note_gone(self, rt: PoolRuntime, observation: Observation) -> list[str]:
        """Instances that vanished: launch failures unless they had registered and exited cleanly."""
        failures = []
        for gone in observation.gone:
            iid = gone.instance.id
            registered = iid in rt.registered
            rt.registered.discard(iid)
            rt.idle_leaving_since.pop(iid, None)
            code = "" if gone.returncode is None else f" (exit code {gone.returncode})"
            if gone.requested:
                continue
            if not registered:
                failures.append(f"{iid} exited before registering{code}")
            elif gone.returncode not in (None, 0):
                failures.append(f"worker {iid} exited{code}")
        return failures

    def _match(self, rt: PoolRuntime, observation: Observation, workers: list[dict[str, Any]],
               now: float) -> _View:
        """Pair instances with registered workers; count capacity; pick instances that must be stopped."""
        view = _View()
        pool = rt.pool
        for instance in observation.instances:
            worker = next((w for w in workers
                           if int(w["id"]) not in view.instance_of and rt.backend.owns(instance, w)), None)
            if worker is not None:
                view.instance_of[int(worker["id"])] = instance
                if instance.id not in rt.registered:
                    rt.registered.add(instance.id)
                    rt.backoff.healthy()
                if worker.get("draining") and not int(worker.get("running_jobs") or 0):
                    since = rt.idle_leaving_since.setdefault(instance.id, now)
                    if now - since >= pool.drain_grace_s and not instance.stopping:
                        why = f"drained and idle for {now - since:.0f} s but still running"
                        view.stop.append((instance, why))
                else:
                    rt.idle_leaving_since.pop(instance.id, None)
            elif instance.id in rt.registered:
                # Its worker deregistered (or its heartbeat lapsed) but the process/task lingers.
                since = rt.idle_leaving_since.setdefault(instance.id, now)
                if now - since >= pool.drain_grace_s and not instance.stopping:
                    view.stop.append((instance, f"worker gone for {now - since:.0f} s but still running"))
            elif now - instance.launched_at >= pool.start_timeout_s:
                if not instance.stopping:
                    view.stop.append((instance, f"never registered within {pool.start_timeout_s:g} s"))
                    view.failures.append(f"{instance.id} never registered within {pool.start_timeout_s:g} s")
            elif not instance.stopping:
                view.starting.append(instance)
        for worker in workers:
            # Workers of this pool without an instance here (e.g. from before a manager restart) serve too.
            if int(worker["id"]) in view.instance_of or worker.get("pool") == pool.name:
                (view.draining if worker.get("draining") else view.running).append(worker)
        return view

    def _drain_old_generation(self, rt: PoolRuntime, view: _View, generation: int) -> list[int]:
        """Drain running workers launched for an older redeploy generation (busy ones finish first)."""
        old = []
        for worker in view.running:
            instance = view.instance_of.get(int(worker["id"]))
            revision = worker.get("revision") or (instance.revision if instance else None)
            launched_for = revision_generation(revision)
            if launched_for is not None and launched_for < generation:
                old.append(int(worker["id"]))
        if not old:
            return []
        try:
            drained = set(self.api.drain(old, only_idle=False))
        except SkyfleetError as exc:
            log.warning("pool %s: could not drain old-generation workers %s: %s", rt.pool.name, old, exc)
            return []
        log.info("pool %s: drained workers %s of an older generation than %d", rt.pool.name, sorted(drained),
                 generation)
        moved = [w for w in view.running if int(w["id"]) in drained]
        view.running = [w for w in view.running if int(w["id"]) not in drained]
        view.draining += [w | {"draining": True} for w in moved]
        return sorted(drained)

    def _scale_out(self, rt: PoolRuntime, decision: Decision, generation: int,
                   now: float) -> tuple[str, str, dict[str, Any]]:
        wait_s = rt.backoff.wait_s(now)
        if wait_s > 0:
            return "hold", (f"{decision.reason}; launches backed off for {wait_s:.0f} s more after "
                            f"{rt.backoff.failures} failure(s): {rt.backoff.last_error}"), {}
        count = decision.desired - decision.previous
        result = rt.backend.start(count, generation)
        acted: dict[str, Any] = {"started": [i.id for i in result.started]}
        reason = decision.reason
        if result.failures:
            rt.backoff.failed(now, "; ".join(result.failures[:3]))
            acted["start_failures"] = result.failures[:10]
            reason += (f"; started {len(result.started)} of {count}: {result.failures[0]}; "
                       f"next launch in {rt.backoff.wait_s(now):.0f} s")
            log.warning("pool %s: launch failed: %s", rt.pool.name, "; ".join(result.failures[:3]))
        return SCALE_OUT, reason, acted

    def _scale_in(self, rt: PoolRuntime, decision: Decision, view: _View,
                  now: float) -> tuple[str, dict[str, Any]]:
        """Drain idle workers (oldest generation first, then the newest); busy ones are left alone."""
        count = decision.previous - decision.desired
        idle = [w for w in view.running if not int(w.get("running_jobs") or 0)]
        idle.sort(key=lambda w: (revision_generation(w.get("revision")) or 0, -int(w["id"])))
        chosen = [int(w["id"]) for w in idle[:count]]
        reason = decision.reason
        drained: list[int] = []
        if chosen:
            try:
                drained = self.api.drain(chosen, only_idle=True)
            except SkyfleetError as exc:
                reason += f"; drain failed: {exc}"
        for worker_id in drained:
            # Its grace runs from now: drained idle, it should exit within one long poll.
            instance = view.instance_of.get(worker_id)
            if instance is not None:
                rt.idle_leaving_since[instance.id] = now
        if len(drained) < count:
            reason += f"; drained {len(drained)} of {count} (the others are busy)"
        return reason, {"drained": drained}

    def _worth_recording(self, rt: PoolRuntime, record: dict[str, Any], now: float) -> bool:
        """Record a change at once; an unchanged "nothing to do" only every ``decision_refresh_s``."""
        inputs = record["inputs"]
        key = (record["desired"], record["previous"], record["action"], inputs["running"], inputs["starting"],
               inputs["draining"], inputs["min"], inputs["max"], inputs["pinned"], inputs["generation"])
        changed = key != rt.last_recorded or record["action"] not in ("none", "hold")
        if not changed and now - rt.last_recorded_at < self.settings.decision_refresh_s:
            return False
        rt.last_recorded, rt.last_recorded_at = key, now
        return True
