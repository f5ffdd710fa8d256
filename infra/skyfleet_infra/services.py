"""The long-running services (the API behind the ALB, the manager) and the one-off ops task.

The containers get ``DATABASE_URL`` in parts: host, port and name as plain environment, user and
password from the RDS secret; the image's entrypoint (infra/entrypoint.py) joins them, so the
password never appears in a task definition.
"""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_ecs_patterns as ecs_patterns
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from skyfleet_infra.bucket import Bucket
from skyfleet_infra.database import DATABASE_NAME, Database
from skyfleet_infra.secrets import Login, Secrets

API_PORT = 8000
API_CONTAINER = "api"
MANAGER_CONTAINER = "manager"
OPS_CONTAINER = "ops"
HEALTH_CHECK_PATH = "/api/health"
API_COMMAND = ["gunicorn", "-c", "python:api.gunicorn_conf", "api.wsgi:app"]
#: gunicorn's graceful_timeout is 10 s; event streams and long polls end well within this.
API_STOP_TIMEOUT_S = 30
MANAGER_STOP_TIMEOUT_S = 30
OPS_STOP_TIMEOUT_S = 30
API_LOG_RETENTION = logs.RetentionDays.ONE_MONTH
MANAGER_LOG_RETENTION = logs.RetentionDays.ONE_MONTH
#: Migrations and account bootstraps are an audit trail; keep them longer.
OPS_LOG_RETENTION = logs.RetentionDays.SIX_MONTHS
#: Long polls (30 s) and SSE keepalives (15 s) stay below this.
ALB_IDLE_TIMEOUT_S = 120
DEREGISTRATION_DELAY_S = 30
HEALTH_CHECK_GRACE_S = 60
MANAGER_CPU = 256
MANAGER_MEMORY_MIB = 512
OPS_CPU = 512
OPS_MEMORY_MIB = 1024


def _task_role(scope: Construct, description: str) -> iam.Role:
    return iam.Role(scope, "TaskRole", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
                    description=description)


def _log_group(scope: Construct, component: str, retention: logs.RetentionDays) -> logs.LogGroup:
    return logs.LogGroup(scope, "Logs", log_group_name=f"/skyfleet/{Stack.of(scope).stack_name}/{component}",
                         retention=retention, removal_policy=RemovalPolicy.DESTROY)


def database_environment(database: Database) -> tuple[dict[str, str], dict[str, ecs.Secret]]:
    """The pieces infra/entrypoint.py joins into DATABASE_URL."""
    env = {"SKYFLEET_DB_HOST": database.endpoint_address, "SKYFLEET_DB_PORT": database.endpoint_port,
           "SKYFLEET_DB_NAME": DATABASE_NAME, "SKYFLEET_DB_SSLMODE": "require"}
    secrets = {"SKYFLEET_DB_USER": ecs.Secret.from_secrets_manager(database.secret, "username"),
               "SKYFLEET_DB_PASSWORD": ecs.Secret.from_secrets_manager(database.secret, "password")}
    return env, secrets


class ApiService(Construct):
    """The API under gunicorn, as a Fargate service behind a public ALB, registered in Cloud Map."""

    def __init__(self, scope: Construct, construct_id: str, *, cluster: ecs.Cluster, image: ecs.ContainerImage,
                 subnets: ec2.SubnetSelection, database: Database, bucket: Bucket, secrets: Secrets,
                 desired_count: int, cpu: int, memory_mib: int, registration: str,
                 certificate_arn: str | None, extra_environment: dict[str, str]) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.security_group = ec2.SecurityGroup(self, "SecurityGroup", vpc=cluster.vpc,
                                                description="skyfleet API tasks (and the ops task)")
        self.task_role = _task_role(self, "skyfleet API: the bucket's uploads and job outputs")
        bucket.grant_api(self.task_role)
        self.log_group = _log_group(self, "api", API_LOG_RETENTION)
        self.task_definition = ecs.FargateTaskDefinition(
            self, "TaskDefinition", family=f"{stack.stack_name}-api", cpu=cpu, memory_limit_mib=memory_mib,
            task_role=self.task_role)
        db_env, db_secrets = database_environment(database)
        self.task_definition.add_container(
            API_CONTAINER, image=image, command=API_COMMAND,
            port_mappings=[ecs.PortMapping(container_port=API_PORT)],
            environment={
                **extra_environment,
                **db_env,
                "HOST": "0.0.0.0",  # all interfaces of the task's own network namespace
                "PORT": str(API_PORT),
                "SKYFLEET_STORAGE_BACKEND": "s3",
                "SKYFLEET_S3_BUCKET": bucket.bucket.bucket_name,
                "SKYFLEET_TRUSTED_PROXY_HOPS": "1",  # the ALB appends the client to X-Forwarded-For
                "SKYFLEET_REGISTRATION": registration,
                "AWS_DEFAULT_REGION": stack.region,
            },
            secrets={**db_secrets, "SKYFLEET_JWT_PRIVATE_KEY": ecs.Secret.from_secrets_manager(secrets.jwt_key)},
            logging=ecs.LogDrivers.aws_logs(stream_prefix="api", log_group=self.log_group),
            stop_timeout=Duration.seconds(API_STOP_TIMEOUT_S),
            linux_parameters=ecs.LinuxParameters(self, "Linux", init_process_enabled=True),
        )
        https = certificate_arn is not None
        self.service = ecs_patterns.ApplicationLoadBalancedFargateService(
            self, "Service",
            cluster=cluster,
            task_definition=self.task_definition,
            desired_count=desired_count,
            task_subnets=subnets,
            security_groups=[self.security_group],
            assign_public_ip=False,
            public_load_balancer=True,
            protocol=elbv2.ApplicationProtocol.HTTPS if https else elbv2.ApplicationProtocol.HTTP,
            certificate=acm.Certificate.from_certificate_arn(self, "Certificate", certificate_arn)
            if certificate_arn else None,
            redirect_http=https,
            ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS if https else None,
            idle_timeout=Duration.seconds(ALB_IDLE_TIMEOUT_S),
            health_check_grace_period=Duration.seconds(HEALTH_CHECK_GRACE_S),
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            min_healthy_percent=100,
            max_healthy_percent=200,
            # Workers and the manager reach the API here, inside the VPC, not through the ALB.
            cloud_map_options=ecs.CloudMapOptions(name="api", dns_ttl=Duration.seconds(10)),
        )
        self.service.target_group.configure_health_check(
            path=HEALTH_CHECK_PATH, healthy_http_codes="200", interval=Duration.seconds(15),
            timeout=Duration.seconds(5), healthy_threshold_count=2, unhealthy_threshold_count=3)
        self.service.target_group.set_attribute("deregistration_delay.timeout_seconds",
                                                str(DEREGISTRATION_DELAY_S))
        self.service.load_balancer.set_attribute("routing.http.drop_invalid_header_fields.enabled", "true")
        if secrets.jwt_key_ready is not None:
            self.service.service.node.add_dependency(secrets.jwt_key_ready)
        namespace = cluster.default_cloud_map_namespace
        assert namespace is not None  # the stack creates it before the service
        self.internal_url = f"http://api.{namespace.namespace_name}:{API_PORT}"

    def allow_from(self, peer: ec2.ISecurityGroup, description: str) -> None:
        """Let a client (workers, the manager) reach the API port directly."""
        self.security_group.add_ingress_rule(peer, ec2.Port.tcp(API_PORT), description)


class ManagerService(Construct):
    """The manager: one replica (a second would only wait on the API's manager lease)."""

    def __init__(self, scope: Construct, construct_id: str, *, cluster: ecs.Cluster, image: ecs.ContainerImage,
                 subnets: ec2.SubnetSelection, api_url: str, login: Login, pools_json: str,
                 desired_count: int) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.security_group = ec2.SecurityGroup(self, "SecurityGroup", vpc=cluster.vpc,
                                                description="skyfleet manager")
        self.task_role = _task_role(self, "skyfleet manager: run and stop this stack's worker tasks")
        self.log_group = _log_group(self, "manager", MANAGER_LOG_RETENTION)
        self.task_definition = ecs.FargateTaskDefinition(
            self, "TaskDefinition", family=f"{stack.stack_name}-manager", cpu=MANAGER_CPU,
            memory_limit_mib=MANAGER_MEMORY_MIB, task_role=self.task_role)
        self.task_definition.add_container(
            MANAGER_CONTAINER, image=image, command=["python", "-m", "manager"],
            environment={
                "SKYFLEET_API_URL": api_url,
                "SKYFLEET_MANAGER_EMAIL": login.email,
                "SKYFLEET_MANAGER_POOLS": pools_json,
                "AWS_DEFAULT_REGION": stack.region,
            },
            secrets={"SKYFLEET_MANAGER_PASSWORD": ecs.Secret.from_secrets_manager(login.secret, "password")},
            logging=ecs.LogDrivers.aws_logs(stream_prefix="manager", log_group=self.log_group),
            stop_timeout=Duration.seconds(MANAGER_STOP_TIMEOUT_S),
            linux_parameters=ecs.LinuxParameters(self, "Linux", init_process_enabled=True),
        )
        self.service = ecs.FargateService(
            self, "Service", cluster=cluster, task_definition=self.task_definition, desired_count=desired_count,
            vpc_subnets=subnets, security_groups=[self.security_group], assign_public_ip=False,
            min_healthy_percent=100, max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True))


class OpsTask(Construct):
    """A task definition for one-off runs: migrations and the account bootstrap (infra/bootstrap.py).

    It runs in the API's security group, the only one the database admits.
    """

    def __init__(self, scope: Construct, construct_id: str, *, image: ecs.ContainerImage, database: Database,
                 secrets: Secrets) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.task_role = _task_role(self, "skyfleet ops task: no AWS access beyond its own logs")
        self.log_group = _log_group(self, "ops", OPS_LOG_RETENTION)
        self.task_definition = ecs.FargateTaskDefinition(
            self, "TaskDefinition", family=f"{stack.stack_name}-ops", cpu=OPS_CPU, memory_limit_mib=OPS_MEMORY_MIB,
            task_role=self.task_role)
        db_env, db_secrets = database_environment(database)
        accounts: list[dict[str, Any]] = [{"email": secrets.admin.email, "role": "ADMIN", "name": "admin",
                                           "password_env": "SKYFLEET_BOOTSTRAP_ADMIN_PASSWORD"},
                                          {"email": secrets.manager.email, "role": "MANAGER", "name": "manager",
                                           "service": True, "password_env": "SKYFLEET_BOOTSTRAP_MANAGER_PASSWORD"}]
        account_secrets = {"SKYFLEET_BOOTSTRAP_ADMIN_PASSWORD": ecs.Secret.from_secrets_manager(
                               secrets.admin.secret, "password"),
                           "SKYFLEET_BOOTSTRAP_MANAGER_PASSWORD": ecs.Secret.from_secrets_manager(
                               secrets.manager.secret, "password")}
        for pool, login in secrets.workers.items():
            variable = f"SKYFLEET_BOOTSTRAP_WORKER_{pool.upper().replace('-', '_')}_PASSWORD"
            accounts.append({"email": login.email, "role": "WORKER", "name": f"worker-{pool}", "service": True,
                             "password_env": variable})
            account_secrets[variable] = ecs.Secret.from_secrets_manager(login.secret, "password")
        self.task_definition.add_container(
            OPS_CONTAINER, image=image, command=["python", "infra/bootstrap.py"],
            environment={**db_env, "SKYFLEET_BOOTSTRAP_ACCOUNTS": json.dumps(accounts)},
            secrets={**db_secrets, **account_secrets},
            logging=ecs.LogDrivers.aws_logs(stream_prefix="ops", log_group=self.log_group),
            stop_timeout=Duration.seconds(OPS_STOP_TIMEOUT_S),
        )
