"""A discrete-time simulation of a pool: bursty arrivals, varied job durations, simulated workers.

The real :class:`manager.loop.Manager` (and so the real policy) runs against a simulated API
and a simulated backend, one tick per simulated second. Workers take a few seconds to boot
and register, claim up to ``jobs_per_worker`` jobs, exit a moment after being drained once
idle. The simulated backend refuses to stop a busy worker and remembers being asked.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from manager.backends.base import Gone, Instance, Observation, StartResult
from manager.config import ManagerSettings, PoolConfig
from manager.loop import Manager

BOOT_S = 3.0           # from launch until the worker registers
DRAIN_EXIT_S = 2.0     # a drained idle worker notices and exits (its long poll returns)


@dataclass
class SimWorker:
    id: int
    instance: Instance
    registers_at: float
    generation: int
    jobs: list[float] = field(default_factory=list)   # remaining seconds of each running job
    draining: bool = False
    idle_draining_since: float | None = None
    crash_at_boot: bool = False

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "name": f"w{self.id}", "pool": "sim", "revision": self.instance.revision,
                "launch_id": self.instance.launch_id, "ecs_task_arn": None, "pid": None, "hostname": None,
                "job_types": ["sleep"], "concurrency": 4, "running_jobs": len(self.jobs),
                "draining": self.draining}


class World:
    """Jobs, workers and the clock; the simulated API and backend both look at it."""

    def __init__(self, concurrency: int, crash_every_launch: bool = False) -> None:
        self.now = 0.0
        self.concurrency = concurrency
        self.pending: list[float] = []
        self.workers: dict[str, SimWorker] = {}
        self.exited: list[Gone] = []
        self.next_id = 1
        self.finished = 0
        self.submitted = 0
        self.crash_every_launch = crash_every_launch
        self.generation = 0
        # What the manager did that it must never do.
        self.busy_stop_requests: list[str] = []
        self.stop_requests: list[str] = []
        self.start_calls: list[tuple[float, int]] = []
        self.decisions: list[dict[str, Any]] = []

    def submit(self, durations: Sequence[float]) -> None:
        self.pending += durations
        self.submitted += len(durations)

    def registered(self) -> list[SimWorker]:
        return [w for w in self.workers.values() if self.now >= w.registers_at]

    def step(self, dt: float) -> None:
        self.now += dt
        for iid, worker in list(self.workers.items()):
            if worker.crash_at_boot and self.now >= worker.registers_at:
                del self.workers[iid]
                self.exited.append(Gone(worker.instance, 1, False))
                continue
            if self.now < worker.registers_at:
                continue
            worker.jobs = [left - dt for left in worker.jobs]
            self.finished += sum(1 for left in worker.jobs if left <= 0)
            worker.jobs = [left for left in worker.jobs if left > 0]
            if worker.draining:
                if worker.jobs:
                    continue
                if worker.idle_draining_since is None:
                    worker.idle_draining_since = self.now
                if self.now - worker.idle_draining_since >= DRAIN_EXIT_S:
                    del self.workers[iid]
                    self.exited.append(Gone(worker.instance, 0, False))
                continue
            while self.pending and len(worker.jobs) < self.concurrency:
                worker.jobs.append(self.pending.pop(0))

    def in_progress(self) -> int:
        return sum(len(w.jobs) for w in self.workers.values())


class SimBackend:
    name = "sim"

    def __init__(self, world: World) -> None:
        self.world = world

    def list(self) -> Observation:
        gone, self.world.exited = self.world.exited, []
        return Observation([w.instance for w in self.world.workers.values()], gone, {"backend": "sim"})

    def start(self, count: int, generation: int) -> StartResult:
        world = self.world
        world.start_calls.append((world.now, count))
        result = StartResult()
        for _ in range(count):
            wid = world.next_id
            world.next_id += 1
            instance = Instance(id=f"i{wid}", launched_at=world.now, revision=self.revision(generation),
                                launch_id=f"l{wid}")
            world.workers[instance.id] = SimWorker(wid, instance, world.now + BOOT_S, generation,
                                                   crash_at_boot=world.crash_every_launch)
            result.started.append(instance)
        return result

    def stop(self, instances: Sequence[Instance], reason: str) -> None:
        for instance in instances:
            worker = self.world.workers.get(instance.id)
            self.world.stop_requests.append(instance.id)
            if worker is None:
                continue
            if worker.jobs:
                self.world.busy_stop_requests.append(instance.id)   # refused: it holds jobs
                continue
            del self.world.workers[instance.id]
            self.world.exited.append(Gone(instance, 0, True))

    def owns(self, instance: Instance, worker: dict[str, Any]) -> bool:
        return bool(worker["launch_id"] == instance.launch_id)

    def revision(self, generation: int) -> str:
        return f"g{generation}-sim"

    def close(self) -> None:
        pass


class SimApi:
    def __init__(self, world: World, pool: PoolConfig) -> None:
        self.world, self.pool = world, pool
        self.lease_holder: str | None = None
        self.overrides: dict[str, Any] = {"pinned_count": None, "min_override": None, "max_override": None}

    def _pool(self) -> dict[str, Any]:
        return self.pool.report() | self.overrides | {"redeploy_generation": self.world.generation}

    def report_pools(self, pools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self._pool()]

    def pools(self) -> list[dict[str, Any]]:
        return [self._pool()]

    def queues(self) -> dict[str, dict[str, int]]:
        return {"sleep": {"pending": len(self.world.pending), "scheduled": 0,
                          "in_progress": self.world.in_progress()}}

    def workers(self) -> list[dict[str, Any]]:
        return [w.view() for w in self.world.registered()]

    def drain(self, worker_ids: list[int], only_idle: bool = True) -> list[int]:
        drained = []
        for worker in self.world.registered():
            if worker.id in worker_ids and not (only_idle and worker.jobs):
                worker.draining = True
                drained.append(worker.id)
        return drained

    def redeploy(self) -> None:
        self.world.generation += 1
        for worker in self.world.registered():
            worker.draining = True

    def record_decisions(self, decisions: list[dict[str, Any]]) -> int:
        self.world.decisions += [d | {"at": self.world.now} for d in decisions]
        return len(decisions)

    def acquire_lease(self, holder: str, ttl_s: float) -> tuple[bool, dict[str, Any]]:
        if self.lease_holder in (None, holder):
            self.lease_holder = holder
            return True, {"holder": holder}
        return False, {"holder": self.lease_holder}

    def release_lease(self, holder: str) -> None:
        if self.lease_holder == holder:
            self.lease_holder = None


POOL = PoolConfig(name="sim", job_types=("sleep",), min=0, max=6, jobs_per_worker=4, scale_in_window_s=30,
                  idle_to_zero_s=60, max_step=3, start_timeout_s=30, drain_grace_s=45)


def make(pool: PoolConfig = POOL, crash: bool = False,
         holder: str = "sim-manager") -> tuple[World, SimApi, Manager]:
    world = World(pool.jobs_per_worker, crash_every_launch=crash)
    api = SimApi(world, pool)
    settings = ManagerSettings(api_url="http://sim", email="m", password="p", pools=(pool,), tick_s=1.0,
                               holder=holder, lease_ttl_s=5.0)
    manager = Manager(settings, api, {pool.name: SimBackend(world)}, clock=lambda: world.now)
    return world, api, manager


def capacity(world: World) -> int:
    return sum(1 for w in world.workers.values() if not w.draining)


def direction_changes(decisions: list[dict[str, Any]]) -> int:
    moves = [d["action"] for d in decisions if d["action"] in ("scale_out", "scale_in")]
    return sum(1 for a, b in pairwise(moves) if a != b)


def test_bursts_drain_within_bounds_without_flapping_or_stopping_busy_workers():
    rng = random.Random(7)
    world, _api, manager = make()
    bursts = {0: 60, 250: 15, 500: 120}   # time → jobs; durations 1–25 s
    peak = 0
    for second in range(900):
        if second in bursts:
            world.submit([rng.uniform(1, 25) for _ in range(bursts[second])])
        if second % 37 == 0 and second < 700:
            world.submit([rng.uniform(1, 5)])   # a trickle between the bursts
        world.step(1.0)
        manager.tick()
        assert capacity(world) <= POOL.max
        peak = max(peak, capacity(world))
    assert world.finished == world.submitted and not world.pending and not world.in_progress()
    assert peak == POOL.max                      # the big bursts reached max (exact demand, no cap)
    assert world.busy_stop_requests == []        # never asked to stop a worker holding a job
    assert not world.workers                     # back to zero at the end
    assert direction_changes(world.decisions) <= 2 * len(bursts)
    actions = [d["action"] for d in world.decisions]
    assert actions.count("scale_out") >= len(bursts) and "scale_in" in actions
    assert all(d["reason"] for d in world.decisions)


def test_scale_in_waits_out_the_gap_between_close_bursts():
    rng = random.Random(3)
    world, _api, manager = make()
    for second in range(400):
        if second % 20 == 0 and second < 200:   # a burst every 20 s: shorter than the 30 s window
            world.submit([rng.uniform(5, 10) for _ in range(24)])
        world.step(1.0)
        manager.tick()
    changes = direction_changes([d for d in world.decisions if d["at"] < 200])
    assert changes <= 2, [(d["at"], d["action"], d["desired"]) for d in world.decisions]
    assert world.finished == world.submitted
    assert world.busy_stop_requests == []


def test_a_crash_loop_backs_off_instead_of_spinning():
    world, _api, manager = make(crash=True)
    world.submit([5.0] * 8)
    for _ in range(600):
        world.step(1.0)
        manager.tick()
    # Exponential backoff from 2 s (capped at 300 s): a handful of attempts in ten minutes, not hundreds.
    assert 3 <= len(world.start_calls) <= 12, world.start_calls
    gaps = [b[0] - a[0] for a, b in pairwise(world.start_calls)]
    assert gaps[-1] > 4 * gaps[0]
    last = world.decisions[-1]
    assert last["observed"]["launch_failures"] >= 3
    assert "exited before registering" in last["observed"]["last_launch_error"]


def test_redeploy_replaces_every_worker_and_loses_no_job():
    world, api, manager = make()
    world.submit([20.0] * 24)
    for _ in range(10):
        world.step(1.0)
        manager.tick()
    old = {w.id for w in world.workers.values()}
    assert len(old) == POOL.max
    api.redeploy()                                   # drains all of them, busy ones too
    for _ in range(60):
        world.step(1.0)
        manager.tick()
        assert capacity(world) <= POOL.max
    assert world.finished == world.submitted
    assert not old & {w.id for w in world.workers.values()}
    assert all(w.instance.revision == "g1-sim" for w in world.workers.values())
    assert world.busy_stop_requests == []


def test_pin_and_standby_manager():
    world, api, manager = make()
    api.overrides["pinned_count"] = 2
    for _ in range(10):
        world.step(1.0)
        manager.tick()
    assert capacity(world) == 2
    # A second manager on the same API stands by while the first holds the lease.
    settings = ManagerSettings(api_url="http://sim", email="m", password="p", pools=(POOL,), tick_s=1.0,
                               holder="other")
    other_world_backend = SimBackend(world)
    standby = Manager(settings, api, {POOL.name: other_world_backend}, clock=lambda: world.now)
    api.overrides["pinned_count"] = 5
    assert standby.tick() == [] and not standby.leader
    manager.close()                                   # releases the lease
    assert standby.tick() and standby.leader
