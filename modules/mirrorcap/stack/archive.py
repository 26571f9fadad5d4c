"""`archive {}`: the S3 bucket every closed pcap is uploaded to (fleet or single host).

Encrypted with the capture's key (SSE-KMS, bucket key on), versioned, never
public, TLS only, expired after the archive's retention. The bucket policy is
the access list: only the capture hosts' role writes, and only under
`<capture>/` (pcaps) and `index/<capture>/` (their indexes), only with the capture's
key; only the reader roles read objects.
The account keeps managing the bucket (its policy, its configuration): nothing
denies bucket-level actions except plain HTTP.
"""

from __future__ import annotations

from cdktn import TerraformStack
from cdktn_provider_aws.iam_role_policy import IamRolePolicy
from cdktn_provider_aws.s3_bucket_policy import S3BucketPolicy

from ..contract import ARCHIVE, ARCHIVE_BUCKET_PREFIX, INDEX_PREFIX, resource_name
from ..inventory.model import Capture
from .literal import literal
from .policy import policy_document
from .private_bucket import Expiry, PrivateBucket
from .private_bucket import bucket_prefix as prefixed
from .tags import named

# An overwritten or expired pcap stays recoverable this long as a noncurrent version, then is gone.
NONCURRENT_DAYS = 7
MULTIPART_ABORT_DAYS = 7
OBJECT_READS = ["s3:GetObject", "s3:GetObjectVersion"]
SSE_HEADER, KMS_KEY_HEADER = "s3:x-amz-server-side-encryption", "s3:x-amz-server-side-encryption-aws-kms-key-id"


def bucket_prefix(capture: str) -> str:
    """`mirrorcap-<capture>-` (`mirrorcap window` lists buckets by its head), the name cut to fit."""
    return prefixed(ARCHIVE_BUCKET_PREFIX, capture)


def written(capture: Capture, bucket_arn: str) -> list[str]:
    """What the hosts write: pcaps under <capture>/, their indexes under index/<capture>/ (contract.ARCHIVE_INDEX_KEY)."""
    return [f"{bucket_arn}/{capture.name}/*", f"{bucket_arn}/{INDEX_PREFIX}{capture.name}/*"]


def bucket_policy(capture: Capture, *, bucket_arn: str, host_role_arn: str, key_arn: str) -> dict:
    objects = f"{bucket_arn}/*"
    everyone = {"AWS": "*"}
    readers = [literal(a, typed=True) for a in capture.archive.reader_role_arns]
    statements = [
        {"Sid": "DenyPlainHttp", "Effect": "Deny", "Principal": everyone, "Action": "s3:*",
         "Resource": [bucket_arn, objects], "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
        {"Sid": "HostsWriteTheirCapture", "Effect": "Allow", "Principal": {"AWS": host_role_arn}, "Action": "s3:PutObject",
         "Resource": written(capture, bucket_arn)},
        # aws:PrincipalArn is the role's ARN for its sessions (the hosts' instance profile).
        {"Sid": "NobodyElseWrites", "Effect": "Deny", "Principal": everyone, "Action": "s3:PutObject", "Resource": objects,
         "Condition": {"ArnNotEquals": {"aws:PrincipalArn": host_role_arn}}},
        # No encryption header: the bucket's default (this key) applies. A header naming anything
        # else is refused. ("Null": false = the header is present; a negated operator alone, or
        # ...IfExists, is true when it is absent and would refuse the default too.)
        {"Sid": "OnlyTheCapturesKey", "Effect": "Deny", "Principal": everyone, "Action": "s3:PutObject", "Resource": objects,
         "Condition": {"StringNotEquals": {KMS_KEY_HEADER: key_arn}, "Null": {KMS_KEY_HEADER: "false"}}},
        {"Sid": "OnlySseKms", "Effect": "Deny", "Principal": everyone, "Action": "s3:PutObject", "Resource": objects,
         "Condition": {"StringNotEquals": {SSE_HEADER: "aws:kms"}, "Null": {SSE_HEADER: "false"}}},
        # Hosts write blind: they confirm an upload by PutObject's answer, never by reading or listing.
        {"Sid": "HostsDoNotList", "Effect": "Deny", "Principal": everyone, "Action": "s3:ListBucket", "Resource": bucket_arn,
         "Condition": {"ArnEquals": {"aws:PrincipalArn": host_role_arn}}},
    ]
    if readers:
        statements += [
            {"Sid": "ReadersRead", "Effect": "Allow", "Principal": {"AWS": readers}, "Action": OBJECT_READS, "Resource": objects},
            {"Sid": "ReadersList", "Effect": "Allow", "Principal": {"AWS": readers}, "Action": "s3:ListBucket", "Resource": bucket_arn},
            # Object reads only: listing stays with the account's administrators too, because
            # HeadBucket (every Terraform refresh of the bucket) is authorized by s3:ListBucket.
            {"Sid": "NobodyElseReads", "Effect": "Deny", "Principal": everyone, "Action": OBJECT_READS, "Resource": objects,
             "Condition": {"ArnNotEquals": {"aws:PrincipalArn": readers}}},
        ]
    else:
        statements.append({"Sid": "NobodyReads", "Effect": "Deny", "Principal": everyone, "Action": OBJECT_READS, "Resource": objects})
    return {"Version": "2012-10-17", "Statement": statements}


def host_policy(capture: Capture, *, bucket_arn: str, key_arn: str) -> dict:
    """The hosts' new permissions: write their capture's prefix, and the key for it through S3.
    One PutObject per pcap (the host's uploader): no kms:Decrypt, which only a multipart upload needs."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ArchivePcaps", "Effect": "Allow", "Action": "s3:PutObject", "Resource": written(capture, bucket_arn)},
        {"Sid": "WithTheCapturesKey", "Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Encrypt"],
         "Resource": key_arn, "Condition": {"StringEquals": {"kms:ViaService": f"s3.{capture.region}.amazonaws.com"}}},
    ]}


class ArchiveBucket:
    def __init__(self, stack: TerraformStack, capture: Capture, *, key_arn: str, host_role_name: str, host_role_arn: str):
        archive = PrivateBucket(stack, "archive", prefix=bucket_prefix(capture.name), force_destroy=False, tags=named(capture, ARCHIVE),
                                key_arn=key_arn, expiry=Expiry("expire-pcaps", capture.archive_retention_days, NONCURRENT_DAYS,
                                                               MULTIPART_ABORT_DAYS))
        bucket, bucket_arn, public_access, self.name = archive.bucket, archive.arn, archive.public_access, archive.name
        # After the public access block: S3 refuses a policy while its settings are being changed.
        S3BucketPolicy(stack, "archive_policy", bucket=bucket, depends_on=[public_access], policy=policy_document(
            stack, "archive_bucket_policy", bucket_policy(capture, bucket_arn=bucket_arn, host_role_arn=host_role_arn, key_arn=key_arn)))
        IamRolePolicy(stack, "host_archive", name=resource_name(capture.name, "archive"), role=host_role_name,
                      policy=policy_document(stack, "host_archive_permissions", host_policy(capture, bucket_arn=bucket_arn, key_arn=key_arn)))
