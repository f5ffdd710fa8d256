"""The ECS backend: workers as ECS tasks (boto3 RunTask / ListTasks / DescribeTasks / StopTask).

A pool's tasks carry ``startedBy`` = :func:`started_by_tag` so they can be listed again after a
manager restart. Every task with desiredStatus RUNNING and a live lastStatus (PROVISIONING,
PENDING, ACTIVATING, RUNNING) is an instance, so a task that is still starting is not launched
twice. RunTask takes at most 10 tasks per call; its ``failures`` (e.g. ``RESOURCE:MEMORY``) and
ClientErrors (e.g. throttling) come back as start failures, which the loop backs off on.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from manager.backends.base import Gone, Instance, Observation, StartResult
from manager.config import EcsSettings, PoolConfig
from manager.errors import BackendError

log = logging.getLogger(__name__)

RUN_TASK_MAX = 10  # ECS: count ≤ 10 per RunTask call
DESCRIBE_MAX = 100  # ECS: at most 100 tasks per DescribeTasks call
STARTED_BY_MAX = 36  # ECS: startedBy is at most 36 characters
LIVE_STATUSES = frozenset({"PROVISIONING", "PENDING", "ACTIVATING", "RUNNING"})
#: botocore's own retries (throttling included) stay short: the loop backs off between ticks.
BOTO_CONFIG = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=20)
_PINNED_REVISION = re.compile(r":\d+$")


def started_by_tag(pool_name: str) -> str:
    """``skyfleet:<pool>``, or a truncated name plus a hash when that is over 36 characters."""
    tag = f"skyfleet:{pool_name}"
    if len(tag) <= STARTED_BY_MAX:
        return tag
    digest = hashlib.sha256(pool_name.encode()).hexdigest()[:8]
    return f"{tag[:STARTED_BY_MAX - 9]}-{digest}"


def make_ecs_client(settings: EcsSettings, endpoint_url: str | None = None) -> Any:
    """A boto3 ECS client; ``endpoint_url`` points it elsewhere (moto's server in tests)."""
    return boto3.client("ecs", region_name=settings.region, endpoint_url=endpoint_url, config=BOTO_CONFIG)


class EcsBackend:
    """One pool's tasks on one cluster."""

    name = "ecs"

    def __init__(self, pool: PoolConfig, client: Any, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        if pool.ecs is None:
            raise ValueError(f"pool {pool.name} has no ECS settings")
        self.pool = pool
        self.ecs: EcsSettings = pool.ecs
        self.client = client
        self.clock, self.wall_clock = clock, wall_clock
        self.started_by = started_by_tag(pool.name)
        self._task_definitions: dict[int, str] = {}
        self._seen: dict[str, Instance] = {}
        self._stop_sent: set[str] = set()

    # -- revisions --------------------------------------------------------------------------

    def task_definition(self, generation: int) -> str:
        """The task definition launched for ``generation``: a family resolves to its latest ACTIVE revision.

        Resolved once per generation, so a redeploy picks up a revision registered since.
        """
        if generation not in self._task_definitions:
            configured = self.ecs.task_definition
            if _PINNED_REVISION.search(configured):
                resolved = configured
            else:
                try:
                    answer = self.client.describe_task_definition(taskDefinition=configured)
                except (ClientError, BotoCoreError) as exc:
                    raise BackendError(f"DescribeTaskDefinition {configured}: {_describe(exc)}") from exc
                resolved = answer["taskDefinition"]["taskDefinitionArn"]
            self._task_definitions = {generation: resolved}
        return self._task_definitions[generation]

    def revision(self, generation: int) -> str:
        """``g<generation>:<family>:<revision>``."""
        return f"g{generation}:{self.task_definition(generation).rsplit('/', 1)[-1]}"

    # -- list / start / stop ----------------------------------------------------------------

    def list(self) -> Observation:
        """Tasks started by this pool that are running or on their way; those gone since the last call."""
        try:
            arns: list[str] = []
            for page in self.client.get_paginator("list_tasks").paginate(
                    cluster=self.ecs.cluster, startedBy=self.started_by, desiredStatus="RUNNING"):
                arns += page.get("taskArns", [])
            tasks: list[dict[str, Any]] = []
            for i in range(0, len(arns), DESCRIBE_MAX):
                answer = self.client.describe_tasks(cluster=self.ecs.cluster, tasks=arns[i:i + DESCRIBE_MAX])
                tasks += answer.get("tasks", [])
        except (ClientError, BotoCoreError) as exc:
            raise BackendError(f"listing the tasks of {self.ecs.cluster}: {_describe(exc)}") from exc
        live = {}
        statuses: dict[str, int] = {}
        for task in tasks:
            status = task.get("lastStatus", "")
            statuses[status] = statuses.get(status, 0) + 1
            if status in LIVE_STATUSES and task.get("desiredStatus", "RUNNING") == "RUNNING":
                live[task["taskArn"]] = self._instance(task)
        gone = [Gone(inst, None, arn in self._stop_sent)
                for arn, inst in self._seen.items() if arn not in live]
        self._seen = live
        self._stop_sent &= set(live)
        details = {"backend": "ecs", "cluster": self.ecs.cluster, "started_by": self.started_by,
                   "task_definition": self._task_definitions.get(max(self._task_definitions, default=0)),
                   "task_statuses": statuses}
        return Observation(list(live.values()), gone, details)

    def start(self, count: int, generation: int) -> StartResult:
        """RunTask in calls of at most 10; the first call with failures or an error ends the batch."""
        result = StartResult()
        try:
            task_definition = self.task_definition(generation)
        except BackendError as exc:
            result.failures.append(str(exc))
            return result
        revision = self.revision(generation)
        left = count
        while left > 0:
            batch = min(RUN_TASK_MAX, left)
            launch_id = uuid.uuid4().hex[:12]
            try:
                args = self._run_task_args(task_definition, batch, revision, launch_id)
                answer = self.client.run_task(**args)
            except (ClientError, BotoCoreError) as exc:
                result.failures.append(f"RunTask: {_describe(exc)}")
                break
            for task in answer.get("tasks", []):
                instance = self._instance(task)
                self._seen[instance.id] = instance
                result.started.append(instance)
            failures = answer.get("failures", [])
            for failure in failures:
                result.failures.append(f"RunTask: {failure.get('reason', 'failure')}"
                                       + (f" ({failure['detail']})" if failure.get("detail") else ""))
            log.info("RunTask %s ×%d on %s (pool %s): %d started, %d failures", task_definition, batch,
                     self.ecs.cluster, self.pool.name, len(answer.get("tasks", [])), len(failures))
            if failures:
                break
            left -= batch
        return result

    def stop(self, instances: Sequence[Instance], reason: str) -> None:
        """StopTask each (once); errors are logged, the next tick looks again."""
        for instance in instances:
            if instance.id in self._stop_sent:
                continue
            try:
                self.client.stop_task(cluster=self.ecs.cluster, task=instance.id, reason=reason[:255])
            except (ClientError, BotoCoreError) as exc:
                log.warning("StopTask %s failed: %s", instance.id, _describe(exc))
                continue
            self._stop_sent.add(instance.id)
            log.info("StopTask %s (pool %s): %s", instance.id, self.pool.name, reason)

    def owns(self, instance: Instance, worker: dict[str, Any]) -> bool:
        """By the task ARN the worker registered with."""
        return bool(worker.get("ecs_task_arn")) and worker["ecs_task_arn"] == instance.task_arn

    def close(self) -> None:
        """Nothing to release: tasks outlive the manager, and the next one lists them by ``startedBy``."""

    # -- helpers ----------------------------------------------------------------------------

    def _run_task_args(self, task_definition: str, count: int, revision: str,
                       launch_id: str) -> dict[str, Any]:
        environment = [{"name": k, "value": v} for k, v in self.pool.env] + [
            {"name": "SKYFLEET_WORKER_POOL", "value": self.pool.name},
            {"name": "SKYFLEET_WORKER_REVISION", "value": revision},
            {"name": "SKYFLEET_WORKER_LAUNCH_ID", "value": launch_id},
        ]
        if self.pool.job_types:
            environment.append({"name": "SKYFLEET_WORKER_TYPES", "value": ",".join(self.pool.job_types)})
        args: dict[str, Any] = {
            "cluster": self.ecs.cluster, "taskDefinition": task_definition, "count": count,
            "startedBy": self.started_by,
            "overrides": {"containerOverrides": [{"name": self.ecs.container, "environment": environment}]},
            "tags": [{"key": "skyfleet:pool", "value": self.pool.name},
                     {"key": "skyfleet:launch-id", "value": launch_id}],
        }
        if self.ecs.capacity_provider:
            args["capacityProviderStrategy"] = [{"capacityProvider": self.ecs.capacity_provider, "weight": 1}]
        elif self.ecs.launch_type:
            args["launchType"] = self.ecs.launch_type
        if self.ecs.subnets:
            args["networkConfiguration"] = {"awsvpcConfiguration": {
                "subnets": list(self.ecs.subnets), "securityGroups": list(self.ecs.security_groups),
                "assignPublicIp": "ENABLED" if self.ecs.assign_public_ip else "DISABLED"}}
        return args

    def _instance(self, task: dict[str, Any]) -> Instance:
        arn = task["taskArn"]
        known = self._seen.get(arn)
        env: dict[str, str] = {}
        for override in task.get("overrides", {}).get("containerOverrides", []):
            if override.get("name") == self.ecs.container:
                env |= {e["name"]: e["value"] for e in override.get("environment", [])}
        created = task.get("createdAt")
        if known is not None:
            launched_at = known.launched_at
        elif created is not None and hasattr(created, "timestamp"):
            # A task from before a manager restart: its age from ECS, on our monotonic clock.
            launched_at = self.clock() - max(0.0, self.wall_clock() - created.timestamp())
        else:
            launched_at = self.clock()
        return Instance(id=arn, launched_at=launched_at, revision=env.get("SKYFLEET_WORKER_REVISION"),
                        launch_id=env.get("SKYFLEET_WORKER_LAUNCH_ID"), task_arn=arn,
                        status=task.get("lastStatus", "PROVISIONING"), stopping=arn in self._stop_sent)


def _describe(exc: Exception) -> str:
    """``ThrottlingException: Rate exceeded`` from a ClientError; the text of anything else."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'ClientError')}: {error.get('Message', '')}"
    return str(exc)
