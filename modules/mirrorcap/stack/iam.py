"""Instance role: Session Manager, and publishing the host's health metrics into mirrorcap's
namespace (stack/alarms.py attaches that policy); with `archive {}`, writing its pcaps to the
archive bucket too (stack/archive.py attaches that policy)."""

from __future__ import annotations

import json

from cdktn import TerraformStack
from cdktn_provider_aws.data_aws_partition import DataAwsPartition
from cdktn_provider_aws.iam_instance_profile import IamInstanceProfile
from cdktn_provider_aws.iam_role import IamRole
from cdktn_provider_aws.iam_role_policy_attachment import IamRolePolicyAttachment

from ..contract import HOST, resource_name
from ..inventory.model import Capture
from .refs import data_ref, ref
from .tags import named

ASSUME_EC2 = json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}, sort_keys=True)


class InstanceRole:
    def __init__(self, stack: TerraformStack, capture: Capture):
        DataAwsPartition(stack, "current")
        self.partition = data_ref("aws_partition", "current", "partition")
        IamRole(stack, "host_role", name=resource_name(capture.name, HOST),
                       description="mirrorcap capture host: SSM Session Manager, health metrics" if capture.archive is None else
                       "mirrorcap capture host: SSM Session Manager, health metrics, pcap archive writes",
                       assume_role_policy=ASSUME_EC2, tags=named(capture, HOST))
        role_name = ref("aws_iam_role", "host_role", "name")
        IamRolePolicyAttachment(stack, "host_ssm_core", role=role_name,
                                      policy_arn=f"arn:{self.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore")
        IamInstanceProfile(stack, "host_profile", name=resource_name(capture.name, HOST), role=role_name,
                           tags=named(capture, HOST))
        self.profile_name = ref("aws_iam_instance_profile", "host_profile", "name")
