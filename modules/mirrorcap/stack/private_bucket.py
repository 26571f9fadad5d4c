"""The S3 bucket mirrorcap keeps its own data in (the archive, Athena's results): never public,
owner-enforced, versioned, SSE-KMS with the capture's key (bucket key on), objects expired after
a number of days. Its policy is the caller's (who may do what in it), set after the public
access block: S3 refuses a policy while those settings are being changed."""

from __future__ import annotations

from dataclasses import dataclass

from cdktn import TerraformStack
from cdktn_provider_aws.s3_bucket import S3Bucket
from cdktn_provider_aws.s3_bucket_lifecycle_configuration import (
    S3BucketLifecycleConfiguration, S3BucketLifecycleConfigurationRule, S3BucketLifecycleConfigurationRuleAbortIncompleteMultipartUpload,
    S3BucketLifecycleConfigurationRuleExpiration, S3BucketLifecycleConfigurationRuleFilter,
    S3BucketLifecycleConfigurationRuleNoncurrentVersionExpiration)
from cdktn_provider_aws.s3_bucket_ownership_controls import S3BucketOwnershipControls, S3BucketOwnershipControlsRule
from cdktn_provider_aws.s3_bucket_public_access_block import S3BucketPublicAccessBlock
from cdktn_provider_aws.s3_bucket_server_side_encryption_configuration import (
    S3BucketServerSideEncryptionConfigurationA, S3BucketServerSideEncryptionConfigurationRuleA,
    S3BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultA)
from cdktn_provider_aws.s3_bucket_versioning import S3BucketVersioningA, S3BucketVersioningVersioningConfiguration

from .refs import ref

# S3 appends 26 characters to a bucket_prefix; a bucket name is at most 63.
BUCKET_PREFIX_MAX = 37


def bucket_prefix(head: str, capture: str) -> str:
    """`<head><capture>-`, the capture name cut to fit (names are [a-z][a-z0-9-]{0,31}: valid in S3)."""
    return head + capture[:BUCKET_PREFIX_MAX - len(head) - 1] + "-"


@dataclass(frozen=True)
class Expiry:
    rule_id: str  # the lifecycle rule's id
    days: int  # objects expire this long after they are written
    noncurrent_days: int  # an overwritten or expired object stays recoverable this long
    multipart_days: int  # an upload left unfinished is aborted after this long


class PrivateBucket:
    """aws_s3_bucket `id` and its `<id>_public_access`, `_ownership`, `_versioning`, `_encryption`
    and `_lifecycle`; `bucket` (its id), `arn`, `name` and `public_access` for what the caller adds."""

    def __init__(self, stack: TerraformStack, id: str, *, prefix: str, force_destroy: bool, tags: dict, key_arn: str,
                 expiry: Expiry):
        S3Bucket(stack, id, bucket_prefix=prefix, force_destroy=force_destroy, tags=tags)
        self.bucket, self.arn, self.name = ref("aws_s3_bucket", id), ref("aws_s3_bucket", id, "arn"), ref("aws_s3_bucket", id, "bucket")
        bucket = self.bucket
        self.public_access = S3BucketPublicAccessBlock(stack, f"{id}_public_access", bucket=bucket, block_public_acls=True,
                                                       block_public_policy=True, ignore_public_acls=True, restrict_public_buckets=True)
        S3BucketOwnershipControls(stack, f"{id}_ownership", bucket=bucket,
                                  rule=S3BucketOwnershipControlsRule(object_ownership="BucketOwnerEnforced"))
        S3BucketVersioningA(stack, f"{id}_versioning", bucket=bucket,
                            versioning_configuration=S3BucketVersioningVersioningConfiguration(status="Enabled"))
        S3BucketServerSideEncryptionConfigurationA(stack, f"{id}_encryption", bucket=bucket, rule=[
            S3BucketServerSideEncryptionConfigurationRuleA(
                apply_server_side_encryption_by_default=S3BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultA(
                    sse_algorithm="aws:kms", kms_master_key_id=key_arn),
                bucket_key_enabled=True)])
        S3BucketLifecycleConfiguration(stack, f"{id}_lifecycle", bucket=bucket, rule=[S3BucketLifecycleConfigurationRule(
            id=expiry.rule_id, status="Enabled", filter=[S3BucketLifecycleConfigurationRuleFilter(prefix="")],
            expiration=[S3BucketLifecycleConfigurationRuleExpiration(days=expiry.days)],
            noncurrent_version_expiration=[S3BucketLifecycleConfigurationRuleNoncurrentVersionExpiration(noncurrent_days=expiry.noncurrent_days)],
            abort_incomplete_multipart_upload=[S3BucketLifecycleConfigurationRuleAbortIncompleteMultipartUpload(
                days_after_initiation=expiry.multipart_days)])])
