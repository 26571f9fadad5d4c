"""Instance role: Session Manager and nothing else (the host needs no AWS API)."""

from __future__ import annotations

import json

from constructs import Construct
from cdktn_provider_aws.data_aws_partition import DataAwsPartition
from cdktn_provider_aws.iam_instance_profile import IamInstanceProfile
from cdktn_provider_aws.iam_role import IamRole
from cdktn_provider_aws.iam_role_policy_attachment import IamRolePolicyAttachment

from ..config import Capture
from .tags import named

ASSUME_EC2 = json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}, sort_keys=True)


class InstanceRole(Construct):
    def __init__(self, scope: Construct, id_: str, capture: Capture):
        super().__init__(scope, id_)
        partition = DataAwsPartition(self, "partition")
        partition.override_logical_id("current")
        role = IamRole(self, "role", name=f"mirrorcap-{capture.name}-host",
                       description="mirrorcap capture host: SSM Session Manager only",
                       assume_role_policy=ASSUME_EC2, tags=named(capture, "host"))
        role.override_logical_id("host_role")
        ssm = IamRolePolicyAttachment(self, "ssm", role=role.name,
                                      policy_arn=f"arn:{partition.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore")
        ssm.override_logical_id("host_ssm_core")
        self.profile = IamInstanceProfile(self, "profile", name=f"mirrorcap-{capture.name}-host", role=role.name,
                                          tags=named(capture, "host"))
        self.profile.override_logical_id("host_profile")
