"""The S3 bucket for uploads (``uploads/``) and job outputs (``jobs/``).

SSE-S3 rather than a customer KMS key: presigned download URLs would otherwise need kms:Decrypt
for every signer and a key policy for every role, for no gain in a single-tenant bucket.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

UPLOADS_PREFIX = "uploads/"
JOBS_PREFIX = "jobs/"
#: Multipart uploads left behind by a killed worker or API process are aborted after this.
ABORT_INCOMPLETE_UPLOAD_DAYS = 2


class Bucket(Construct):
    """The bucket, private and TLS-only, with lifecycle rules for old outputs and stale uploads."""

    def __init__(self, scope: Construct, construct_id: str, *, job_output_expiry_days: int) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self, "Bucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=False,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-job-outputs", prefix=JOBS_PREFIX,
                                 expiration=Duration.days(job_output_expiry_days)),
                s3.LifecycleRule(id="abort-incomplete-uploads",
                                 abort_incomplete_multipart_upload_after=Duration.days(ABORT_INCOMPLETE_UPLOAD_DAYS)),
            ],
        )

    def objects(self, prefix: str) -> str:
        """The ARN pattern of every object under ``prefix``."""
        return self.bucket.arn_for_objects(f"{prefix}*")

    def grant_worker(self, role: iam.IRole) -> None:
        """Read and write job outputs, read uploads: nothing else in the bucket.

        ListBucket is limited to the same prefixes; S3 needs it to answer 404 (not 403) for a
        missing key, which the storage layer turns into ObjectNotFound.
        """
        role.add_to_principal_policy(iam.PolicyStatement(
            sid="JobOutputsReadWrite",
            actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                     "s3:ListMultipartUploadParts"],
            resources=[self.objects(JOBS_PREFIX)]))
        role.add_to_principal_policy(iam.PolicyStatement(
            sid="UploadsRead", actions=["s3:GetObject"], resources=[self.objects(UPLOADS_PREFIX)]))
        role.add_to_principal_policy(iam.PolicyStatement(
            sid="ListOwnPrefixes", actions=["s3:ListBucket"], resources=[self.bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{JOBS_PREFIX}*", f"{UPLOADS_PREFIX}*"]}}))

    def grant_api(self, role: iam.IRole) -> None:
        """The API owns the bucket's contents: it stores uploads, signs downloads and deletes jobs' data."""
        role.add_to_principal_policy(iam.PolicyStatement(
            sid="ObjectsReadWriteDelete",
            actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                     "s3:ListMultipartUploadParts"],
            resources=[self.objects(UPLOADS_PREFIX), self.objects(JOBS_PREFIX)]))
        role.add_to_principal_policy(iam.PolicyStatement(
            sid="ListBucket", actions=["s3:ListBucket"], resources=[self.bucket.bucket_arn]))
