"""Which IAM actions Terraform (hashicorp/aws 5.x) calls for each resource and data source type the
capture stacks synthesize: READ is what a refresh calls (every `terraform plan`, the plan role),
WRITE what creating, changing and deleting one calls besides (the apply role). Pure data and
functions; the CI roles stack (stack/ci_roles.py) unions them over the stacks' types.

The lists are what tests/synth/test_ci_roles.py records Terraform calling when it plans, applies,
changes, refreshes and destroys the example and the fleet against moto; IMPLICIT are permissions
IAM checks with no call of their own (a role handed to a service, tags set at creation, the KMS key
EBS uses for the caller) and calls moto cannot answer, each said why.
"""

from __future__ import annotations

# The provider asks STS who it is at every start.
PROVIDER = ("sts:GetCallerIdentity",)

_EC2_INSTANCE_READ = ("ec2:DescribeInstances", "ec2:DescribeInstanceAttribute", "ec2:DescribeInstanceCreditSpecifications",
                      "ec2:DescribeInstanceTypes", "ec2:DescribeVolumes", "ec2:DescribeNetworkInterfaces", "ec2:DescribeTags",
                      "ec2:GetInstanceUefiData")
# EC2 tags: default_tags on every resource, set and removed in place.
_EC2_TAGS = ("ec2:CreateTags", "ec2:DeleteTags")
_KMS_KEY_READ = ("kms:DescribeKey", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus", "kms:ListResourceTags")

READ: dict[str, tuple[str, ...]] = {
    "data.aws_caller_identity": (),
    "data.aws_partition": (),
    "data.aws_iam_policy_document": (),
    "data.aws_subnet": ("ec2:DescribeSubnets",),
    "data.aws_instance": _EC2_INSTANCE_READ,
    "data.aws_ami": ("ec2:DescribeImages",),
    "aws_instance": (*_EC2_INSTANCE_READ, "ec2:DescribeVpcs", "ec2:DescribeImages"),
    "aws_ebs_volume": ("ec2:DescribeVolumes",),
    "aws_volume_attachment": ("ec2:DescribeVolumes",),
    "aws_network_interface": ("ec2:DescribeNetworkInterfaces",),
    "aws_network_interface_attachment": ("ec2:DescribeNetworkInterfaces",),
    "aws_security_group": ("ec2:DescribeSecurityGroups", "ec2:DescribeVpcs"),
    "aws_ec2_traffic_mirror_filter": ("ec2:DescribeTrafficMirrorFilters",),
    "aws_ec2_traffic_mirror_filter_rule": ("ec2:DescribeTrafficMirrorFilters",),
    "aws_ec2_traffic_mirror_target": ("ec2:DescribeTrafficMirrorTargets",),
    "aws_ec2_traffic_mirror_session": ("ec2:DescribeTrafficMirrorSessions",),
    "aws_iam_role": ("iam:GetRole", "iam:ListAttachedRolePolicies", "iam:ListRolePolicies"),
    "aws_iam_role_policy": ("iam:GetRolePolicy",),
    "aws_iam_role_policy_attachment": ("iam:ListAttachedRolePolicies",),
    "aws_iam_instance_profile": ("iam:GetInstanceProfile",),
    "aws_kms_key": _KMS_KEY_READ,
    "aws_kms_alias": ("kms:ListAliases",),
    "aws_sns_topic": ("sns:GetTopicAttributes", "sns:ListTagsForResource"),
    "aws_cloudwatch_metric_alarm": ("cloudwatch:DescribeAlarms", "cloudwatch:ListTagsForResource"),
    # auto_mirror {}: the re-mirroring Lambda, its schedule and log group
    "aws_lambda_function": ("lambda:GetFunction", "lambda:GetFunctionCodeSigningConfig", "lambda:ListVersionsByFunction"),
    "aws_lambda_permission": ("lambda:GetPolicy",),
    "aws_cloudwatch_event_rule": ("events:DescribeRule", "events:ListTagsForResource"),
    "aws_cloudwatch_event_target": ("events:ListTargetsByRule",),
    "aws_cloudwatch_log_group": ("logs:DescribeLogGroups", "logs:ListTagsForResource"),
    # fleet {}: the NLB, its target group and listener, the launch template and Auto Scaling group
    "aws_lb": ("elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DescribeLoadBalancerAttributes",
               "elasticloadbalancing:DescribeCapacityReservation", "elasticloadbalancing:DescribeTags"),
    # DescribeTargetHealth: `mirrorcap check` (the drift check) asks whether the fleet's hosts are healthy.
    "aws_lb_target_group": ("elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetGroupAttributes",
                            "elasticloadbalancing:DescribeTags", "elasticloadbalancing:DescribeTargetHealth"),
    "aws_lb_listener": ("elasticloadbalancing:DescribeListeners", "elasticloadbalancing:DescribeListenerAttributes",
                        "elasticloadbalancing:DescribeTags"),
    "aws_launch_template": ("ec2:DescribeLaunchTemplates", "ec2:DescribeLaunchTemplateVersions"),
    "aws_autoscaling_group": ("autoscaling:DescribeAutoScalingGroups",),
    # archive {}: the bucket, and Athena over its indexes
    "aws_s3_bucket": ("s3:ListBucket", "s3:GetBucketPolicy", "s3:GetBucketAcl", "s3:GetBucketCORS", "s3:GetBucketWebsite",
                      "s3:GetBucketVersioning", "s3:GetAccelerateConfiguration", "s3:GetBucketRequestPayment",
                      "s3:GetBucketLogging", "s3:GetLifecycleConfiguration", "s3:GetReplicationConfiguration",
                      "s3:GetEncryptionConfiguration", "s3:GetBucketObjectLockConfiguration", "s3:GetBucketTagging"),
    "aws_s3_bucket_lifecycle_configuration": ("s3:GetLifecycleConfiguration",),
    "aws_s3_bucket_ownership_controls": ("s3:GetBucketOwnershipControls",),
    "aws_s3_bucket_policy": ("s3:GetBucketPolicy",),
    "aws_s3_bucket_public_access_block": ("s3:GetBucketPublicAccessBlock",),
    "aws_s3_bucket_server_side_encryption_configuration": ("s3:GetEncryptionConfiguration",),
    "aws_s3_bucket_versioning": ("s3:GetBucketVersioning",),
    "aws_glue_catalog_database": ("glue:GetDatabase", "glue:GetTags"),
    "aws_glue_catalog_table": ("glue:GetTable", "glue:GetPartitionIndexes", "glue:GetTags"),
    "aws_athena_workgroup": ("athena:GetWorkGroup", "athena:ListTagsForResource"),
}

WRITE: dict[str, tuple[str, ...]] = {
    "aws_instance": ("ec2:RunInstances", "ec2:TerminateInstances", "ec2:MonitorInstances", "ec2:ModifyInstanceAttribute", *_EC2_TAGS),
    "aws_ebs_volume": ("ec2:CreateVolume", "ec2:DeleteVolume", *_EC2_TAGS),
    # stop_instance_before_detaching: the host is stopped before its pcap volume is detached
    "aws_volume_attachment": ("ec2:AttachVolume", "ec2:DetachVolume", "ec2:StopInstances"),
    "aws_network_interface": ("ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface", *_EC2_TAGS),
    "aws_network_interface_attachment": ("ec2:AttachNetworkInterface", "ec2:DetachNetworkInterface"),
    "aws_security_group": ("ec2:CreateSecurityGroup", "ec2:DeleteSecurityGroup", "ec2:AuthorizeSecurityGroupIngress",
                           "ec2:AuthorizeSecurityGroupEgress", "ec2:RevokeSecurityGroupEgress", *_EC2_TAGS),
    "aws_ec2_traffic_mirror_filter": ("ec2:CreateTrafficMirrorFilter", "ec2:DeleteTrafficMirrorFilter", *_EC2_TAGS),
    "aws_ec2_traffic_mirror_target": ("ec2:CreateTrafficMirrorTarget", "ec2:DeleteTrafficMirrorTarget", *_EC2_TAGS),
    "aws_ec2_traffic_mirror_session": ("ec2:CreateTrafficMirrorSession", "ec2:DeleteTrafficMirrorSession",
                                       "ec2:ModifyTrafficMirrorSession", *_EC2_TAGS),
    "aws_iam_role": ("iam:CreateRole", "iam:DeleteRole", "iam:TagRole", "iam:ListInstanceProfilesForRole"),
    "aws_iam_role_policy": ("iam:PutRolePolicy", "iam:DeleteRolePolicy"),
    "aws_iam_role_policy_attachment": ("iam:AttachRolePolicy", "iam:DetachRolePolicy"),
    "aws_iam_instance_profile": ("iam:CreateInstanceProfile", "iam:DeleteInstanceProfile", "iam:AddRoleToInstanceProfile",
                                 "iam:RemoveRoleFromInstanceProfile", "iam:TagInstanceProfile"),
    "aws_kms_key": ("kms:CreateKey", "kms:EnableKeyRotation", "kms:ScheduleKeyDeletion", "kms:TagResource"),
    "aws_kms_alias": ("kms:CreateAlias", "kms:DeleteAlias"),
    "aws_sns_topic": ("sns:CreateTopic", "sns:DeleteTopic", "sns:SetTopicAttributes", "sns:TagResource"),
    "aws_cloudwatch_metric_alarm": ("cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms", "cloudwatch:TagResource"),
    "aws_lambda_function": ("lambda:CreateFunction", "lambda:DeleteFunction", "lambda:UpdateFunctionConfiguration",
                            "lambda:UpdateFunctionCode", "lambda:PutFunctionConcurrency", "lambda:TagResource"),
    "aws_lambda_permission": ("lambda:AddPermission", "lambda:RemovePermission"),
    "aws_cloudwatch_event_rule": ("events:PutRule", "events:DeleteRule", "events:TagResource"),
    "aws_cloudwatch_event_target": ("events:PutTargets", "events:RemoveTargets"),
    "aws_cloudwatch_log_group": ("logs:CreateLogGroup", "logs:DeleteLogGroup", "logs:PutRetentionPolicy", "logs:TagResource"),
    "aws_lb": ("elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:DeleteLoadBalancer",
               "elasticloadbalancing:ModifyLoadBalancerAttributes", "elasticloadbalancing:AddTags"),
    "aws_lb_target_group": ("elasticloadbalancing:CreateTargetGroup", "elasticloadbalancing:DeleteTargetGroup",
                            "elasticloadbalancing:ModifyTargetGroupAttributes", "elasticloadbalancing:AddTags"),
    "aws_lb_listener": ("elasticloadbalancing:CreateListener", "elasticloadbalancing:DeleteListener", "elasticloadbalancing:AddTags"),
    "aws_launch_template": ("ec2:CreateLaunchTemplate", "ec2:DeleteLaunchTemplate", "ec2:CreateLaunchTemplateVersion",
                            "ec2:ModifyLaunchTemplate", *_EC2_TAGS),
    "aws_autoscaling_group": ("autoscaling:CreateAutoScalingGroup", "autoscaling:DeleteAutoScalingGroup",
                              "autoscaling:UpdateAutoScalingGroup", "autoscaling:StartInstanceRefresh",
                              "autoscaling:CreateOrUpdateTags"),
    "aws_s3_bucket": ("s3:CreateBucket", "s3:DeleteBucket", "s3:PutBucketTagging"),
    "aws_s3_bucket_lifecycle_configuration": ("s3:PutLifecycleConfiguration",),
    "aws_s3_bucket_ownership_controls": ("s3:PutBucketOwnershipControls",),
    "aws_s3_bucket_policy": ("s3:PutBucketPolicy", "s3:DeleteBucketPolicy"),
    "aws_s3_bucket_public_access_block": ("s3:PutBucketPublicAccessBlock",),
    "aws_s3_bucket_server_side_encryption_configuration": ("s3:PutEncryptionConfiguration",),
    "aws_s3_bucket_versioning": ("s3:PutBucketVersioning",),
    "aws_glue_catalog_database": ("glue:CreateDatabase", "glue:DeleteDatabase", "glue:TagResource"),
    "aws_glue_catalog_table": ("glue:CreateTable", "glue:DeleteTable", "glue:UpdateTable", "glue:TagResource"),
    "aws_athena_workgroup": ("athena:CreateWorkGroup", "athena:DeleteWorkGroup", "athena:UpdateWorkGroup", "athena:TagResource"),
}

# Checked by IAM without a call of their own, or calls moto cannot answer; each with why.
IMPLICIT: dict[str, tuple[str, ...]] = {
    # RunInstances hands the instance profile's role to EC2 (iam:PassRole); its TagSpecifications need CreateTags.
    "aws_instance": ("iam:PassRole",),
    "aws_launch_template": ("iam:PassRole",),
    "aws_lambda_function": ("iam:PassRole",),
    # EBS creates and attaches an encrypted volume with the caller's rights on the key (a grant, a data key).
    "aws_ebs_volume": ("kms:CreateGrant", "kms:GenerateDataKeyWithoutPlaintext", "kms:Decrypt"),
    # moto 5.2 has no traffic mirror filter rules: the provider's create, modify, delete and read of one.
    "aws_ec2_traffic_mirror_filter_rule": ("ec2:CreateTrafficMirrorFilterRule", "ec2:ModifyTrafficMirrorFilterRule",
                                           "ec2:DeleteTrafficMirrorFilterRule"),
}


def types_of(doc: dict) -> set[str]:
    """A synthesized stack's (cdk.tf.json) resource types, and its data source types as data.<type>."""
    return set(doc.get("resource", {})) | {f"data.{t}" for t in doc.get("data", {})}


def unknown(types: set[str]) -> set[str]:
    """Types whose permissions are not known here: synthesizing roles for them would under-grant."""
    return {t for t in types if t not in READ}


def read_actions(types: set[str]) -> list[str]:
    return sorted({*PROVIDER, *(a for t in types for a in READ.get(t, ()))})


def write_actions(types: set[str]) -> list[str]:
    return sorted({a for t in types for table in (WRITE, IMPLICIT) for a in table.get(t, ())})
