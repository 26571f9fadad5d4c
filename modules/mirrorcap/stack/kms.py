"""The key that encrypts the capture's volumes: the pcaps are production payloads.

No `storage.kms_key_id`: a dedicated customer-managed key, rotated yearly, kept
as long as the volume is (prevent_destroy follows the volume's), whose policy
lets the account administer it but use it only through EC2 (EBS) in this
region; with `archive {}` also through S3 in this region (the archive bucket's
SSE-KMS), and for a fleet by EC2 Auto Scaling, which creates its hosts' volumes. A key ARN is used as written; an alias, alias ARN or key ID is resolved
to its key ARN at plan time (aws_ebs_volume takes an ARN, nothing else).
"""

from __future__ import annotations

from cdktn import TerraformResourceLifecycle, TerraformStack
from cdktn_provider_aws.data_aws_kms_key import DataAwsKmsKey
from cdktn_provider_aws.kms_alias import KmsAlias
from cdktn_provider_aws.kms_key import KmsKey

from ..inventory.model import Capture
from .policy import policy_document
from .refs import data_ref, ref
from .tags import named

KEY_ADMIN_ACTIONS = ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*", "kms:Revoke*",
                     "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource", "kms:UntagResource",
                     "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion"]
KEY_USE_ACTIONS = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]


# A fleet's volumes are created by EC2 Auto Scaling, as its service-linked role:
# IAM policies cannot grant that role a key, only the key policy can. The role
# must exist when the key is created (`aws iam create-service-linked-role
# --aws-service-name autoscaling.amazonaws.com`, or any earlier Auto Scaling group).
AUTOSCALING_ROLE = "role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"


def key_policy(capture: Capture, *, partition: str, account: str) -> dict:
    account_root = f"arn:{partition}:iam::{account}:root"  # IAM policies in this account decide who, within these bounds
    via_ebs = {"kms:ViaService": f"ec2.{capture.region}.amazonaws.com", "kms:CallerAccount": account}
    return {"Version": "2012-10-17", "Statement": _ebs_statements(account_root, via_ebs) + _archive_statements(capture, account_root, account)
            + _fleet_statements(capture, partition, account)}


def _archive_statements(capture: Capture, account_root: str, account: str) -> list[dict]:
    """`archive {}`: the same key encrypts the S3 archive (SSE-KMS): usable through S3 in this
    region; who may write or read is decided by the bucket policy and the callers' IAM policies."""
    if capture.archive is None:
        return []
    via_s3 = {"kms:ViaService": f"s3.{capture.region}.amazonaws.com", "kms:CallerAccount": account}
    return [{"Sid": "UseThroughS3ForTheArchive", "Effect": "Allow", "Principal": {"AWS": account_root},
             "Action": KEY_USE_ACTIONS, "Resource": "*", "Condition": {"StringEquals": via_s3}}]


def _fleet_statements(capture: Capture, partition: str, account: str) -> list[dict]:
    if capture.fleet is None:
        return []
    autoscaling = f"arn:{partition}:iam::{account}:{AUTOSCALING_ROLE}"
    return [
        {"Sid": "AutoScalingEncryptsTheFleetsVolumes", "Effect": "Allow", "Principal": {"AWS": autoscaling},
         "Action": KEY_USE_ACTIONS, "Resource": "*"},
        {"Sid": "AutoScalingGrantsOnlyForEbs", "Effect": "Allow", "Principal": {"AWS": autoscaling},
         "Action": "kms:CreateGrant", "Resource": "*", "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}}},
    ]


def _ebs_statements(account_root: str, via_ebs: dict) -> list[dict]:
    return [
        {"Sid": "AccountAdministersTheKey", "Effect": "Allow", "Principal": {"AWS": account_root},
         "Action": KEY_ADMIN_ACTIONS, "Resource": "*"},
        {"Sid": "UseOnlyThroughEbs", "Effect": "Allow", "Principal": {"AWS": account_root},
         "Action": KEY_USE_ACTIONS, "Resource": "*", "Condition": {"StringEquals": via_ebs}},
        {"Sid": "GrantsOnlyForEbs", "Effect": "Allow", "Principal": {"AWS": account_root},
         "Action": "kms:CreateGrant", "Resource": "*",
         "Condition": {"StringEquals": via_ebs, "Bool": {"kms:GrantIsForAWSResource": "true"}}},
    ]


def volume_key(stack: TerraformStack, capture: Capture, *, partition: str, account: str) -> str:
    """The key ARN both volumes are encrypted with (an expression or a literal ARN)."""
    named_key = capture.storage.kms_key_id
    if named_key and named_key.startswith("arn:") and ":key/" in named_key:
        return named_key
    if named_key:
        DataAwsKmsKey(stack, "pcap_key", key_id=named_key)  # DescribeKey takes an alias, alias ARN or key ID
        return data_ref("aws_kms_key", "pcap_key", "arn")
    KmsKey(stack, "pcap_key", description=f"mirrorcap {capture.name}: pcap and root volumes", enable_key_rotation=True,
           deletion_window_in_days=30, policy=policy_document(stack, "pcap_key_policy", key_policy(
               capture, partition=partition, account=account)),
           lifecycle=TerraformResourceLifecycle(prevent_destroy=capture.storage.prevent_destroy), tags=named(capture, "pcaps"))
    KmsAlias(stack, "pcap_key_alias", name=f"alias/mirrorcap-{capture.name}-pcaps", target_key_id=ref("aws_kms_key", "pcap_key", "key_id"))
    return ref("aws_kms_key", "pcap_key", "arn")
