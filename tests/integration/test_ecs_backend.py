"""The ECS backend against moto's server mode (boto3 pointed at its endpoint; no AWS account).

What moto's ECS does and does not do, and how these tests live with it:

- RunTask on FARGATE needs no container instances; moto does not enforce ``count ≤ 10`` or
  capacity, so the batching is checked by recording the calls (a botocore event hook), and
  placement failures (``failures``, throttling) come from a thin wrapper around the real client.
- Tasks are created RUNNING (moto skips PROVISIONING/PENDING), and by default every
  DescribeTasks advances them one state (RUNNING → DEACTIVATING → … → STOPPED) while
  ``desiredStatus`` stays RUNNING. The fixture pins the transition (moto's state-manager API)
  so tasks stay RUNNING; one test lets them drift to check that a task ECS reports as
  stopping is not counted.
- With ``networkMode: awsvpc`` (which moto forces on any FARGATE-compatible task definition)
  moto's RunTask fails (its ENI lacks ``private_dns_name``), so the task definition is an
  EC2-compatible ``bridge`` one, launched with launchType FARGATE; moto still checks that the
  subnets we send exist (they are made in moto's EC2), and the call's awsvpc
  ``networkConfiguration`` is checked as recorded.
- ListTasks filters by ``startedBy`` and ``desiredStatus`` as ECS does; StopTask sets both
  statuses to STOPPED at once. Tasks have no ``createdAt`` in moto.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from manager.backends.ecs import STARTED_BY_MAX, EcsBackend, make_ecs_client, started_by_tag
from manager.config import EcsSettings, ManagerSettings, PoolConfig
from manager.loop import Manager
from manager.policy import PolicyState

FAMILY = "skyfleet-worker"


@pytest.fixture
def ecs(moto_s3: dict[str, str]) -> Iterator[dict[str, Any]]:
    """A fresh cluster, VPC subnet and task definition family on the moto server (AWS env from moto_s3)."""
    endpoint = moto_s3["endpoint_url"]
    transition = f"{endpoint}/moto-api/state-manager"
    requests.post(f"{transition}/set-transition", timeout=5,
                  json={"model_name": "ecs::task", "transition": {"progression": "manual", "times": 10**9}})
    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=f"sg-{uuid.uuid4().hex[:6]}", Description="w",
                                      VpcId=vpc)["GroupId"]
    client = boto3.client("ecs")
    cluster = f"skyfleet-{uuid.uuid4().hex[:8]}"
    client.create_cluster(clusterName=cluster)
    family = f"{FAMILY}-{uuid.uuid4().hex[:6]}"
    client.register_task_definition(
        family=family, networkMode="bridge", cpu="1024", memory="2048",
        containerDefinitions=[{"name": "worker", "image": "skyfleet:latest", "essential": True, "cpu": 1024,
                               "memory": 2048}],
    )
    yield {"endpoint": endpoint, "cluster": cluster, "family": family, "subnet": subnet, "group": group,
           "client": client}
    requests.post(f"{transition}/unset-transition", json={"model_name": "ecs::task"}, timeout=5)


def pool_for(where: dict[str, Any], **overrides: Any) -> PoolConfig:
    settings = EcsSettings(cluster=where["cluster"], task_definition=where["family"], container="worker",
                           subnets=(where["subnet"],), security_groups=(where["group"],))
    fields: dict[str, Any] = {
              "name": "gpu", "job_types": ("image.mosaic",), "backend": "ecs", "min": 0, "max": 30,
              "jobs_per_worker": 1, "scale_in_window_s": 0.0, "idle_to_zero_s": 0.0, "max_step": 30,
              "start_timeout_s": 300.0, "drain_grace_s": 5.0, "ecs": settings} | overrides
    return PoolConfig(**fields)


def record_calls(client: Any, operation: str) -> list[dict[str, Any]]:
    """The parameters of every ``operation`` call the client makes from now on."""
    calls: list[dict[str, Any]] = []
    client.meta.events.register(f"provide-client-params.ecs.{operation}",
                                lambda params, **_: calls.append(dict(params)))
    return calls


class FakeApi:
    """The manager API's answers for one pool: a queue, registered workers, drains; no HTTP."""

    def __init__(self, pool: PoolConfig) -> None:
        self.pool = pool
        self.pending = 0
        self.registered: list[dict[str, Any]] = []
        self.decisions: list[dict[str, Any]] = []
        self.drain_requests: list[tuple[list[int], bool]] = []
        self.generation = 0

    def report_pools(self, pools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.pools()

    def pools(self) -> list[dict[str, Any]]:
        return [self.pool.report() | {"pinned_count": None, "min_override": None, "max_override": None,
                                      "redeploy_generation": self.generation}]

    def queues(self) -> dict[str, dict[str, int]]:
        busy = sum(w["running_jobs"] for w in self.registered)
        return {"image.mosaic": {"pending": self.pending, "scheduled": 0, "in_progress": busy}}

    def workers(self) -> list[dict[str, Any]]:
        return self.registered

    def drain(self, worker_ids: list[int], only_idle: bool = True) -> list[int]:
        self.drain_requests.append((list(worker_ids), only_idle))
        drained = []
        for w in self.registered:
            if w["id"] in worker_ids and not (only_idle and w["running_jobs"]):
                w["draining"] = True
                drained.append(w["id"])
        return drained

    def record_decisions(self, decisions: list[dict[str, Any]]) -> int:
        self.decisions += decisions
        return len(decisions)

    def acquire_lease(self, holder: str, ttl_s: float) -> tuple[bool, dict[str, Any]]:
        return True, {"holder": holder}

    def release_lease(self, holder: str) -> None:
        pass


class Clock:
    """A fake monotonic clock, shared by the manager and its backend.

    The manager compares its ``now`` with the ``launched_at`` the backend stamps on each task, so
    both must read this clock: a backend left on ``time.monotonic`` (seconds since boot) against a
    manager at 1000 s made tasks look older than ``start_timeout_s`` on a host up for < ~700 s.
    """

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def manager_for(pool: PoolConfig, api: FakeApi, backend: EcsBackend, clock: Clock) -> Manager:
    settings = ManagerSettings(api_url="http://unused", email="m", password="p", pools=(pool,), tick_s=1.0,
                               holder="test", lease_ttl_s=5.0)
    return Manager(settings, api, {pool.name: backend}, clock=clock)


def test_started_by_fits_ecs_limit():
    assert started_by_tag("gpu") == "skyfleet:gpu"
    long = started_by_tag("a-very-long-pool-name-for-mosaics-and-composites")
    assert len(long) == STARTED_BY_MAX and long.startswith("skyfleet:a-very")
    assert long != started_by_tag("a-very-long-pool-name-for-mosaics-and-composites-2")


def test_run_task_in_batches_of_ten_with_the_worker_env(ecs):
    pool = pool_for(ecs)
    client = make_ecs_client(pool.ecs, ecs["endpoint"])
    calls = record_calls(client, "RunTask")
    backend = EcsBackend(pool, client)
    result = backend.start(23, generation=0)
    assert [c["count"] for c in calls] == [10, 10, 3]
    assert not result.failures and len(result.started) == 23
    first = calls[0]
    assert first["startedBy"] == "skyfleet:gpu" and first["launchType"] == "FARGATE"
    assert first["networkConfiguration"]["awsvpcConfiguration"]["subnets"] == [ecs["subnet"]]
    env = {e["name"]: e["value"] for e in first["overrides"]["containerOverrides"][0]["environment"]}
    assert env["SKYFLEET_WORKER_POOL"] == "gpu" and env["SKYFLEET_WORKER_TYPES"] == "image.mosaic"
    assert env["SKYFLEET_WORKER_REVISION"] == f"g0:{ecs['family']}:1"
    # Listed back (ListTasks by startedBy + DescribeTasks), with the revision read from the overrides.
    observed = backend.list()
    assert len(observed.instances) == 23
    assert {i.revision for i in observed.instances} == {f"g0:{ecs['family']}:1"}
    assert len({i.launch_id for i in observed.instances}) == 3   # one launch id per RunTask call
    # Another pool's tasks on the same cluster are not ours.
    other = EcsBackend(pool_for(ecs, name="cpu"), make_ecs_client(pool.ecs, ecs["endpoint"]))
    assert other.list().instances == []


def test_starting_tasks_are_counted_so_the_next_tick_does_not_launch_again(ecs):
    pool = pool_for(ecs, max=12)
    client = make_ecs_client(pool.ecs, ecs["endpoint"])
    calls = record_calls(client, "RunTask")
    api, clock = FakeApi(pool), Clock()
    manager = manager_for(pool, api, EcsBackend(pool, client, clock=clock), clock)
    api.pending = 40
    (first,) = manager.tick()
    assert (first["action"], first["desired"]) == ("scale_out", 12)
    assert [c["count"] for c in calls] == [10, 2]
    for _ in range(3):   # none has registered yet: still starting, not launched twice
        clock.now += 5
        manager.tick()
    assert len(calls) == 2
    assert api.decisions[-1]["inputs"]["starting"] == 12 and api.decisions[-1]["action"] == "none"


def test_a_task_ecs_reports_as_stopping_is_not_capacity(ecs):
    pool = pool_for(ecs)
    backend = EcsBackend(pool, make_ecs_client(pool.ecs, ecs["endpoint"]))
    backend.start(2, generation=0)
    requests.post(f"{ecs['endpoint']}/moto-api/state-manager/set-transition", timeout=5,
                  json={"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1}})
    statuses, gone = [], []
    for _ in range(3):   # moto advances RUNNING → DEACTIVATING → STOPPING … one describe at a time
        observed = backend.list()
        statuses.append(observed.details["task_statuses"])
        gone += observed.gone
    assert observed.instances == [] and len(gone) == 2, statuses
    assert not any(g.requested for g in gone)
    assert "RUNNING" not in statuses[-1]   # still desiredStatus RUNNING, but no longer counted


def test_stop_task_only_for_idle_drained_workers(ecs):
    pool = pool_for(ecs, drain_grace_s=5.0)
    client = make_ecs_client(pool.ecs, ecs["endpoint"])
    stops = record_calls(client, "StopTask")
    api, clock = FakeApi(pool), Clock()
    backend = EcsBackend(pool, client, clock=clock)
    manager = manager_for(pool, api, backend, clock)
    arns = [i.id for i in backend.start(4, generation=0).started]
    # All four registered; two are busy. Demand is exactly their two jobs.
    api.registered = [
        {"id": n + 1, "pool": "gpu", "revision": "g0:x", "launch_id": None, "ecs_task_arn": arn,
         "running_jobs": 1 if n < 2 else 0, "draining": False} for n, arn in enumerate(arns)]
    decision = manager.tick()[0]
    assert (decision["action"], decision["previous"], decision["desired"]) == ("scale_in", 4, 2)
    assert api.drain_requests == [([4, 3], True)]
    assert sorted(decision["observed"]["drained"]) == [3, 4]
    assert stops == []                        # drained: they exit by themselves ...
    clock.now += 6                            # ... but these two linger past the grace
    manager.tick()
    assert sorted(s["task"] for s in stops) == sorted(arns[2:])
    described = client.describe_tasks(cluster=ecs["cluster"], tasks=arns)["tasks"]
    desired = {t["taskArn"]: t["desiredStatus"] for t in described}
    assert [desired[a] for a in arns] == ["RUNNING", "RUNNING", "STOPPED", "STOPPED"]
    clock.now += 6
    manager.tick()
    assert len(stops) == 2                    # each stopped once; the busy ones never


class FailingRunTask:
    """The real moto client, except that RunTask fails the way ECS does."""

    def __init__(self, client: Any, mode: str) -> None:
        self._client, self.mode, self.calls = client, mode, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def run_task(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        if self.mode == "throttle":
            error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
            raise ClientError(error, "RunTask")
        return {"tasks": [], "failures": [{"arn": "arn:aws:ecs:...", "reason": "RESOURCE:MEMORY"}]}


@pytest.mark.parametrize(("mode", "message"), [("capacity", "RESOURCE:MEMORY"),
                                               ("throttle", "ThrottlingException")])
def test_run_task_failures_are_reported_and_backed_off(ecs, mode, message):
    pool = pool_for(ecs)
    failing = FailingRunTask(make_ecs_client(pool.ecs, ecs["endpoint"]), mode)
    api, clock = FakeApi(pool), Clock()
    manager = manager_for(pool, api, EcsBackend(pool, failing, clock=clock), clock)
    api.pending = 5
    attempts_at = []
    for _ in range(31):   # 30 s of 1 s ticks
        before = failing.calls
        manager.tick()
        if failing.calls > before:
            attempts_at.append(clock.now - 1000)
        clock.now += 1
    assert attempts_at == [0, 2, 6, 14, 30]   # 2, 4, 8, 16 s apart: never a tight loop
    last = api.decisions[-1]
    assert message in last["observed"]["last_launch_error"]
    assert last["observed"]["launch_failures"] == 5
    held = [d for d in api.decisions if d["action"] == "hold"]
    assert held and "backed off" in held[0]["reason"]


def test_a_missing_cluster_holds_without_launching(ecs):
    pool = pool_for(ecs, ecs=EcsSettings(cluster="no-such-cluster", task_definition=ecs["family"],
                                         container="worker", subnets=(ecs["subnet"],)))
    client = make_ecs_client(pool.ecs, ecs["endpoint"])
    calls = record_calls(client, "RunTask")
    api, clock = FakeApi(pool), Clock()
    manager = manager_for(pool, api, EcsBackend(pool, client, clock=clock), clock)
    api.pending = 5
    for _ in range(3):
        manager.tick()
        clock.now += 1
    assert calls == []
    decision = api.decisions[0]
    assert decision["action"] == "hold" and "ClusterNotFoundException" in decision["observed"]["error"]
    assert "inputs unavailable" in decision["reason"]
    assert manager.pools["gpu"].state == PolicyState()


def test_redeploy_launches_the_latest_task_definition_revision(ecs):
    pool = pool_for(ecs)
    client = make_ecs_client(pool.ecs, ecs["endpoint"])
    backend = EcsBackend(pool, client)
    assert backend.revision(0) == f"g0:{ecs['family']}:1"
    client.register_task_definition(
        family=ecs["family"], networkMode="bridge", cpu="1024",
        memory="2048", containerDefinitions=[{"name": "worker", "image": "skyfleet:v2", "essential": True,
                                              "cpu": 1024, "memory": 2048}])
    assert backend.revision(0) == f"g0:{ecs['family']}:1"     # resolved once per generation
    started = backend.start(1, generation=1).started
    assert started[0].revision == f"g1:{ecs['family']}:2"
    described = client.describe_tasks(cluster=ecs["cluster"], tasks=[started[0].id])["tasks"][0]
    assert described["taskDefinitionArn"].endswith(f"{ecs['family']}:2")
