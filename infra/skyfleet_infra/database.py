"""RDS PostgreSQL: private, encrypted, its credentials generated into Secrets Manager.

Its security group admits nobody by default; the stack opens port 5432 to the API's security
group only (the API service and the one-off ops task that runs migrations use it). Workers and the
manager never reach the database: they are HTTP clients of the API.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from constructs import Construct

DATABASE_NAME = "skyfleet"
DATABASE_USER = "skyfleet"
POSTGRES_PORT = 5432
#: CDK's default exclusions plus URL-unsafe characters, so the password needs no escaping anywhere.
PASSWORD_EXCLUDED_CHARACTERS = " %+~`#$&*()|[]{}:;<>?!'/@\"\\=,"


class Database(Construct):
    """The PostgreSQL 16 instance, its secret and its security group."""

    def __init__(self, scope: Construct, construct_id: str, *, vpc: ec2.IVpc, subnets: ec2.SubnetSelection,
                 instance_class: str, allocated_storage_gib: int, max_allocated_storage_gib: int,
                 multi_az: bool, deletion_protection: bool, backup_retention_days: int) -> None:
        super().__init__(scope, construct_id)
        engine = rds.DatabaseInstanceEngine.postgres(version=rds.PostgresEngineVersion.VER_16_13)
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=vpc, allow_all_outbound=False,
            description="skyfleet PostgreSQL: reachable from the API only")
        parameters = rds.ParameterGroup(self, "Parameters", engine=engine, parameters={
            # Refuse unencrypted connections (the containers connect with sslmode=require).
            "rds.force_ssl": "1",
        })
        self.instance = rds.DatabaseInstance(
            self, "Instance",
            engine=engine,
            instance_type=ec2.InstanceType(instance_class),
            vpc=vpc,
            vpc_subnets=subnets,
            security_groups=[self.security_group],
            publicly_accessible=False,
            storage_encrypted=True,
            credentials=rds.Credentials.from_generated_secret(
                DATABASE_USER, exclude_characters=PASSWORD_EXCLUDED_CHARACTERS),
            database_name=DATABASE_NAME,
            port=POSTGRES_PORT,
            parameter_group=parameters,
            allocated_storage=allocated_storage_gib,
            max_allocated_storage=max_allocated_storage_gib,
            storage_type=rds.StorageType.GP3,
            multi_az=multi_az,
            backup_retention=Duration.days(backup_retention_days),
            deletion_protection=deletion_protection,
            removal_policy=RemovalPolicy.SNAPSHOT,
            auto_minor_version_upgrade=True,
            cloudwatch_logs_exports=["postgresql"],
            cloudwatch_logs_retention=logs.RetentionDays.ONE_MONTH,
            enable_performance_insights=False,
        )
        secret = self.instance.secret
        assert secret is not None  # from_generated_secret always makes one
        self.secret = secret
        self.endpoint_address = self.instance.db_instance_endpoint_address
        self.endpoint_port = self.instance.db_instance_endpoint_port
