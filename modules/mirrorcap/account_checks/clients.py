"""The CLI's way into the account: clients (profile, assume-role; EC2, S3, ELBv2, Auto Scaling) and the
EC2 reads the drift check and pre-flight make. The reads the re-mirroring
Lambda shares (instances, sessions, ENIs) live in remirror/ec2.py and are reused.

A capture's region is the inventory's: every client is for the region of the
capture it checks, so there is no region override.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from .. import aws_limits as L
from ..remirror.ec2 import describe_instances, primary_eni

__all__ = ["Access", "FleetClients", "load_balancers", "target_groups", "target_health", "auto_scaling_group", "describe_instances", "primary_eni", "traffic_mirror_targets", "traffic_mirror_filters",
           "subnet", "network_interface", "hypervisors", "baseline_gbps", "dry_run_session"]


@dataclass(frozen=True)
class Access:
    """How to reach the account: a named profile and/or a role to assume (both optional:
    the default credential chain otherwise: environment, SSO, instance role)."""

    profile: Optional[str] = None
    role_arn: Optional[str] = None

    def session(self, region: str):
        """A boto3 session signing with the profile's credentials, or the role's when one is given."""
        import boto3
        session = boto3.Session(profile_name=self.profile) if self.profile else boto3.Session()
        if self.role_arn:
            creds = client(session, "sts", region).assume_role(
                RoleArn=self.role_arn, RoleSessionName="mirrorcap-cli")["Credentials"]
            session = boto3.Session(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                                    aws_session_token=creds["SessionToken"])
        return session

    def ec2(self, region: str):
        return client(self.session(region), "ec2", region)

    def s3(self, region: str):
        return client(self.session(region), "s3", region)

    def fleet(self, region: str) -> "FleetClients":
        """EC2, ELBv2 and Auto Scaling clients on one session (one AssumeRole): the fleet drift check's reads."""
        session = self.session(region)
        return FleetClients(*(client(session, s, region) for s in ("ec2", "elbv2", "autoscaling")))


ENDPOINT_FIX = ("correct or unset AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_<SERVICE>, or endpoint_url in the profile): "
                "a URL like https://host:port")


def client(session, service: str, region: str):
    """A client whose endpoint URL is usable, or a MirrorcapError naming it. botocore refuses some bad
    URLs here and others only when it signs the first request (a port out of range), each with a
    bare ValueError: the URL is parsed now as the signer will."""
    from ..errors import MirrorcapError, Problem
    try:
        made = session.client(service, region_name=region)
        urlsplit(made.meta.endpoint_url).port
    except ValueError as exc:
        raise MirrorcapError([Problem("AWS", "endpoint", f"the {service} endpoint URL is not usable: {exc}", ENDPOINT_FIX)])
    return made


@dataclass(frozen=True)
class FleetClients:
    ec2: object
    elbv2: object
    autoscaling: object


def traffic_mirror_targets(ec2) -> list[dict]:
    return [t for p in ec2.get_paginator("describe_traffic_mirror_targets").paginate() for t in p["TrafficMirrorTargets"]]


def traffic_mirror_filters(ec2) -> list[dict]:
    return [f for p in ec2.get_paginator("describe_traffic_mirror_filters").paginate() for f in p["TrafficMirrorFilters"]]


def subnet(ec2, subnet_id: str) -> Optional[dict]:
    """The subnet, or None when it does not exist (or is not visible) in this region."""
    try:
        return ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]
    except ClientError:
        return None


def network_interface(ec2, eni_id: str) -> dict:
    return ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"][0]


def hypervisors(ec2, instance_types: list[str]) -> dict[str, str]:
    """Instance type -> "nitro" | "xen" | "" as DescribeInstanceTypes states it."""
    found: dict[str, str] = {}
    if instance_types:
        for page in ec2.get_paginator("describe_instance_types").paginate(InstanceTypes=instance_types):
            found.update({t["InstanceType"]: t.get("Hypervisor", "") for t in page["InstanceTypes"]})
    return found


def baseline_gbps(ec2, instance_type: str) -> Optional[float]:
    """The instance type's baseline network bandwidth, as the EC2 API states it."""
    try:
        types = ec2.describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"]
    except ClientError:
        return None
    cards = (types[0].get("NetworkInfo", {}).get("NetworkCards") or []) if types else []
    return cards[0].get("BaselineBandwidthInGbps") if cards else None


def dry_run_session(ec2, eni_id: str, target_id: str, filter_id: str, vni: int) -> Optional[str]:
    """None if AWS would create the session; else AWS's reason."""
    try:
        ec2.create_traffic_mirror_session(NetworkInterfaceId=eni_id, TrafficMirrorTargetId=target_id, TrafficMirrorFilterId=filter_id,
                                          SessionNumber=L.SESSION_NUMBER_MAX, VirtualNetworkId=vni, DryRun=True)
    except ClientError as exc:
        err = exc.response["Error"]
        return None if err["Code"] == "DryRunOperation" else f"{err['Code']}: {err.get('Message', '')}".strip()
    # An API that ignored DryRun would have created a session: never expected from EC2.
    return "DryRun was not honoured"


# --- A fleet's reads (ELBv2, Auto Scaling) ------------------------------------

def _elbv2_tags(elbv2, arns: list[str]) -> dict[str, dict[str, str]]:
    """ARN -> tags; DescribeTags takes at most 20 ARNs a call."""
    tags: dict[str, dict[str, str]] = {}
    for i in range(0, len(arns), 20):
        for d in elbv2.describe_tags(ResourceArns=arns[i:i + 20])["TagDescriptions"]:
            tags[d["ResourceArn"]] = {t["Key"]: t["Value"] for t in d.get("Tags", [])}
    return tags


def load_balancers(elbv2) -> list[dict]:
    """Every network load balancer of the region, each with its "Tags" (a dict)."""
    found = [lb for p in elbv2.get_paginator("describe_load_balancers").paginate() for lb in p["LoadBalancers"]
             if lb.get("Type") == "network"]
    tags = _elbv2_tags(elbv2, [lb["LoadBalancerArn"] for lb in found])
    return [{**lb, "Tags": tags.get(lb["LoadBalancerArn"], {})} for lb in found]


def target_groups(elbv2, load_balancer_arn: str) -> list[dict]:
    """The load balancer's target groups, each with its "Tags" (a dict)."""
    found = [g for p in elbv2.get_paginator("describe_target_groups").paginate(LoadBalancerArn=load_balancer_arn)
             for g in p["TargetGroups"]]
    tags = _elbv2_tags(elbv2, [g["TargetGroupArn"] for g in found])
    return [{**g, "Tags": tags.get(g["TargetGroupArn"], {})} for g in found]


def target_health(elbv2, target_group_arn: str) -> list[dict]:
    return elbv2.describe_target_health(TargetGroupArn=target_group_arn)["TargetHealthDescriptions"]


def auto_scaling_group(autoscaling, name: str) -> Optional[dict]:
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    return groups[0] if groups else None
