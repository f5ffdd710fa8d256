"""The skyfleet stack: network, database, bucket, secrets, cluster, API, worker pools and manager."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, Fn, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_servicediscovery as servicediscovery
from constructs import Construct

from skyfleet_infra.bucket import Bucket
from skyfleet_infra.database import POSTGRES_PORT, Database
from skyfleet_infra.network import Network
from skyfleet_infra.pools import WorkerPools
from skyfleet_infra.secrets import Secrets
from skyfleet_infra.services import ApiService, ManagerService, OpsTask
from skyfleet_infra.settings import DB_BACKUP_RETENTION_DAYS, InfraSettings

#: The repository root: the Docker build context (its .dockerignore keeps .venv, .git and data out).
REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = "infra/Dockerfile"
INTERNAL_NAMESPACE = "skyfleet.internal"


class SkyfleetStack(Stack):
    """Everything skyfleet runs on, in one stack."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: InfraSettings, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        network = Network(self, "Network", max_azs=settings.max_azs, nat_gateways=settings.nat_gateways)
        vpc = network.vpc
        database = Database(
            self, "Database", vpc=vpc, subnets=network.database_subnets,
            instance_class=settings.db_instance_class, allocated_storage_gib=settings.db_allocated_storage_gib,
            max_allocated_storage_gib=settings.db_max_allocated_storage_gib, multi_az=settings.db_multi_az,
            deletion_protection=settings.db_deletion_protection, backup_retention_days=DB_BACKUP_RETENTION_DAYS)
        bucket = Bucket(self, "Storage", job_output_expiry_days=settings.job_output_expiry_days)
        secrets = Secrets(self, "Secrets", admin_email=settings.admin_email,
                          pool_names=[p.name for p in settings.pools], jwt_secret_arn=settings.jwt_secret_arn)
        self.cluster = ecs.Cluster(
            self, "Cluster", vpc=vpc, container_insights_v2=ecs.ContainerInsights.ENABLED,
            default_cloud_map_namespace=ecs.CloudMapNamespaceOptions(
                name=INTERNAL_NAMESPACE, type=servicediscovery.NamespaceType.DNS_PRIVATE, vpc=vpc))
        image = self._image(settings)

        self.api = ApiService(
            self, "Api", cluster=self.cluster, image=image, subnets=network.task_subnets, database=database,
            bucket=bucket, secrets=secrets, desired_count=settings.api_count, cpu=settings.api_cpu,
            memory_mib=settings.api_memory_mib, registration=settings.registration,
            certificate_arn=settings.certificate_arn, extra_environment=dict(settings.api_environment))
        database.security_group.add_ingress_rule(self.api.security_group, ec2.Port.tcp(POSTGRES_PORT),
                                                 "the API service and the ops task")
        self.ops = OpsTask(self, "Ops", image=image, database=database, secrets=secrets)

        self.workers = WorkerPools(self, "Workers", pools=settings.pools, image=image, bucket=bucket,
                                   api_url=self.api.internal_url, logins=secrets.workers)
        self.worker_security_group = ec2.SecurityGroup(self, "WorkerSecurityGroup", vpc=vpc,
                                                       description="skyfleet worker tasks")
        self.api.allow_from(self.worker_security_group, "workers")
        subnet_ids = vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS).subnet_ids
        pools = self.workers.manager_pools(self.cluster, subnet_ids, self.worker_security_group)
        self.manager = ManagerService(
            self, "Manager", cluster=self.cluster, image=image, subnets=network.task_subnets,
            api_url=self.api.internal_url, login=secrets.manager, pools_json=self.to_json_string(pools),
            desired_count=settings.manager_count)
        self.api.allow_from(self.manager.security_group, "the manager")
        self._grant_manager(self.manager.task_role)
        self._outputs(database, bucket, secrets, subnet_ids)

    def _image(self, settings: InfraSettings) -> ecs.ContainerImage:
        """One image for every component: a prebuilt one, or built from infra/Dockerfile at deploy."""
        if settings.image_uri:
            return ecs.ContainerImage.from_registry(settings.image_uri)
        asset = ecr_assets.DockerImageAsset(self, "Image", directory=str(REPO_ROOT), file=DOCKERFILE,
                                            platform=ecr_assets.Platform.LINUX_AMD64)
        return ecs.ContainerImage.from_docker_image_asset(asset)

    def _grant_manager(self, role: iam.IRole) -> None:
        """RunTask on the worker families only; Stop/Describe/List on this cluster only; PassRole on the
        worker roles only. ListTasks and DescribeTaskDefinition have no resource-level permissions: the
        first is pinned to the cluster by condition, the second only reads task definitions."""
        cluster_arn = self.cluster.cluster_arn
        on_cluster = {"ArnEquals": {"ecs:cluster": cluster_arn}}
        families = [self.format_arn(service="ecs", resource="task-definition", resource_name=f"{p.family}:*")
                    for p in self.workers.pools]
        tasks = self.format_arn(service="ecs", resource="task", resource_name=f"{self.cluster.cluster_name}/*")
        role.add_to_principal_policy(iam.PolicyStatement(
            sid="RunWorkerTasks", actions=["ecs:RunTask"], resources=families, conditions=on_cluster))
        role.add_to_principal_policy(iam.PolicyStatement(
            sid="TagWorkerTasksAtLaunch", actions=["ecs:TagResource"], resources=[tasks],
            conditions={**on_cluster, "StringEquals": {"ecs:CreateAction": "RunTask"}}))
        role.add_to_principal_policy(iam.PolicyStatement(
            sid="StopAndDescribeTasks", actions=["ecs:StopTask", "ecs:DescribeTasks"], resources=[tasks],
            conditions=on_cluster))
        role.add_to_principal_policy(iam.PolicyStatement(
            sid="ListTasksOnCluster", actions=["ecs:ListTasks"], resources=["*"], conditions=on_cluster))
        role.add_to_principal_policy(iam.PolicyStatement(
            sid="ReadTaskDefinitions", actions=["ecs:DescribeTaskDefinition"], resources=["*"]))
        passed = [r.role_arn for p in self.workers.pools for r in (p.task_role, p.execution_role)]
        role.add_to_principal_policy(iam.PolicyStatement(
            sid="PassWorkerRoles", actions=["iam:PassRole"], resources=passed,
            conditions={"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}))

    def _outputs(self, database: Database, bucket: Bucket, secrets: Secrets, subnet_ids: list[str]) -> None:
        lb = self.api.service.load_balancer
        scheme = "https" if self.api.service.certificate else "http"
        CfnOutput(self, "ApiUrl", value=f"{scheme}://{lb.load_balancer_dns_name}")
        CfnOutput(self, "ClusterName", value=self.cluster.cluster_name)
        CfnOutput(self, "BucketName", value=bucket.bucket.bucket_name)
        CfnOutput(self, "DatabaseSecretArn", value=database.secret.secret_arn)
        CfnOutput(self, "AdminSecretArn", value=secrets.admin.secret.secret_arn)
        CfnOutput(self, "JwtKeySecretArn", value=secrets.jwt_key.secret_arn)
        CfnOutput(self, "OpsTaskFamily", value=self.ops.task_definition.family)
        network = Fn.join("", ["awsvpcConfiguration={subnets=[", Fn.join(",", subnet_ids), "],securityGroups=[",
                               self.api.security_group.security_group_id, "],assignPublicIp=DISABLED}"])
        CfnOutput(self, "OpsNetworkConfiguration", value=network,
                  description="--network-configuration for aws ecs run-task of the ops task")
        for pool in self.workers.pools:
            CfnOutput(self, f"WorkerTaskDefinition{pool.spec.name.title().replace('-', '')}",
                      value=pool.task_definition.task_definition_arn)
