"""The VPC: public subnets for the load balancer and NAT, private ones for tasks, isolated ones for RDS.

Why NAT rather than isolated subnets with VPC endpoints only: workers fetch job inputs from public
URLs and the API POSTs callbacks to arbitrary HTTPS receivers, neither of which an endpoint can
reach. The database gets isolated subnets (no route out at all), and a free S3 gateway endpoint
keeps the bulk of the traffic — job inputs and outputs — off the NAT gateway.
"""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

PUBLIC_CIDR_MASK = 24
#: /20 per AZ: every Fargate task takes an address, and a pool may run hundreds.
PRIVATE_CIDR_MASK = 20
ISOLATED_CIDR_MASK = 24
VPC_CIDR = "10.40.0.0/16"


class Network(Construct):
    """The VPC and its subnet groups."""

    def __init__(self, scope: Construct, construct_id: str, *, max_azs: int, nat_gateways: int) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self, "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(VPC_CIDR),
            max_azs=max_azs,
            nat_gateways=nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC,
                                        cidr_mask=PUBLIC_CIDR_MASK),
                ec2.SubnetConfiguration(name="tasks", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS,
                                        cidr_mask=PRIVATE_CIDR_MASK),
                ec2.SubnetConfiguration(name="database", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED,
                                        cidr_mask=ISOLATED_CIDR_MASK),
            ],
        )
        self.vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3)
        self.task_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.database_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
