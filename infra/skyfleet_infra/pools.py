"""A worker task definition per pool. The manager starts and stops the tasks (RunTask/StopTask).

There is no ECS service for workers: the manager is the scaler, and a service would fight it.
Each pool has its own task role (S3 ``jobs/*`` read/write and ``uploads/*`` read, no more), its
own execution role (which can read only that pool's service-account secret), its own log group
and its own service account, so one pool's credentials are useless for another's work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from skyfleet_infra.bucket import Bucket
from skyfleet_infra.secrets import Login
from skyfleet_infra.settings import PoolSpec

WORKER_CONTAINER = "worker"
#: Fargate's longest stop timeout: SIGTERM, then this long before SIGKILL.
WORKER_STOP_TIMEOUT_S = 120
#: The worker's own grace for running jobs, shorter so it can release the rest before SIGKILL.
WORKER_STOP_GRACE_S = 100
#: Of the task's memory, what the worker may budget for job inputs (the rest: Python, buffers).
WORKER_MEMORY_BUDGET_FRACTION = 0.75
WORKER_LOG_RETENTION = logs.RetentionDays.TWO_WEEKS
WORK_DIR = "/data/worker"


@dataclass(frozen=True)
class PoolResources:
    """What the manager needs to know about a pool, and what its policy is scoped to."""

    spec: PoolSpec
    task_definition: ecs.FargateTaskDefinition
    task_role: iam.Role
    execution_role: iam.Role
    log_group: logs.LogGroup

    @property
    def family(self) -> str:
        return self.task_definition.family


class WorkerPools(Construct):
    """One Fargate task definition (and roles, log group) per configured pool."""

    def __init__(self, scope: Construct, construct_id: str, *, pools: tuple[PoolSpec, ...],
                 image: ecs.ContainerImage, bucket: Bucket, api_url: str, logins: dict[str, Login]) -> None:
        super().__init__(scope, construct_id)
        self.pools: list[PoolResources] = [
            self._pool(spec, image, bucket, api_url, logins[spec.name]) for spec in pools]

    def _pool(self, spec: PoolSpec, image: ecs.ContainerImage, bucket: Bucket, api_url: str,
              login: Login) -> PoolResources:
        scope = Construct(self, spec.name)
        stack = Stack.of(self)
        task_role = iam.Role(scope, "TaskRole", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
                             description=f"skyfleet worker pool {spec.name}: its S3 prefixes only")
        bucket.grant_worker(task_role)
        execution_role = iam.Role(scope, "ExecutionRole",
                                  assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
                                  description=f"skyfleet worker pool {spec.name}: pull the image, read its secret")
        log_group = logs.LogGroup(scope, "Logs", log_group_name=f"/skyfleet/{stack.stack_name}/worker-{spec.name}",
                                  retention=WORKER_LOG_RETENTION, removal_policy=RemovalPolicy.DESTROY)
        task_definition = ecs.FargateTaskDefinition(
            scope, "TaskDefinition",
            family=f"{stack.stack_name}-worker-{spec.name}",
            cpu=spec.cpu, memory_limit_mib=spec.memory_mib,
            ephemeral_storage_gib=spec.ephemeral_storage_gib,
            task_role=task_role, execution_role=execution_role,
            runtime_platform=ecs.RuntimePlatform(cpu_architecture=ecs.CpuArchitecture.X86_64,
                                                 operating_system_family=ecs.OperatingSystemFamily.LINUX))
        task_definition.add_container(
            WORKER_CONTAINER,
            image=image,
            command=["python", "-m", "worker"],
            environment={
                "SKYFLEET_API_URL": api_url,
                "SKYFLEET_WORKER_EMAIL": login.email,
                "SKYFLEET_WORKER_POOL": spec.name,
                "SKYFLEET_WORKER_TYPES": ",".join(spec.job_types),
                "SKYFLEET_WORKER_CONCURRENCY": str(spec.concurrency),
                "SKYFLEET_WORKER_MEMORY_MB": str(int(spec.memory_mib * WORKER_MEMORY_BUDGET_FRACTION)),
                "SKYFLEET_WORKER_STOP_GRACE_S": str(WORKER_STOP_GRACE_S),
                "SKYFLEET_WORKER_WORK_DIR": WORK_DIR,
                "SKYFLEET_STORAGE_BACKEND": "s3",
                "SKYFLEET_S3_BUCKET": bucket.bucket.bucket_name,
                "AWS_DEFAULT_REGION": stack.region,
            },
            secrets={"SKYFLEET_WORKER_PASSWORD": ecs.Secret.from_secrets_manager(login.secret, "password")},
            logging=ecs.LogDrivers.aws_logs(stream_prefix="worker", log_group=log_group),
            stop_timeout=Duration.seconds(WORKER_STOP_TIMEOUT_S),
            # tini as PID 1: SIGTERM reaches the worker, and job subprocesses are reaped.
            linux_parameters=ecs.LinuxParameters(scope, "Linux", init_process_enabled=True),
        )
        return PoolResources(spec, task_definition, task_role, execution_role, log_group)

    def manager_pools(self, cluster: ecs.ICluster, subnets: list[str],
                      security_group: ec2.ISecurityGroup) -> list[dict[str, Any]]:
        """The pools in the shape the manager reads from SKYFLEET_MANAGER_POOLS (manager/config.py).

        ``task_definition`` is the revision this deploy registered (an ARN), so a deploy restarts the
        manager with it and new workers start from it; an admin redeploy replaces the running ones.
        """
        return [
            {
                "name": p.spec.name,
                "job_types": list(p.spec.job_types),
                "backend": "ecs",
                "min": p.spec.min,
                "max": p.spec.max,
                "jobs_per_worker": p.spec.concurrency,
                "cluster": cluster.cluster_arn,
                "task_definition": p.task_definition.task_definition_arn,
                "container": WORKER_CONTAINER,
                "subnets": subnets,
                "security_groups": [security_group.security_group_id],
                "assign_public_ip": False,
                "launch_type": "FARGATE",
            }
            for p in self.pools
        ]
