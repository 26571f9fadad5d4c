"""A moto EC2 account for the live-account tests (re-mirroring, check, pre-flight)."""

from __future__ import annotations

from contextlib import contextmanager

import boto3
from moto import mock_aws

AMI = "ami-12c6146b"  # an image moto knows


@contextmanager
def moto_ec2(monkeypatch, region: str):
    """An EC2 client on a fresh moto account; fake credentials so nothing reaches AWS."""
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": region}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        yield boto3.client("ec2", region_name=region)


def launch(ec2, subnet: str, tags=(), n: int = 1, instance_type: str = "t3.small") -> list[tuple[str, str]]:
    """Run n instances; (instance ID, primary ENI ID) of each."""
    spec = [{"ResourceType": "instance", "Tags": list(tags)}] if tags else []
    resp = ec2.run_instances(ImageId=AMI, MinCount=n, MaxCount=n, InstanceType=instance_type, SubnetId=subnet, TagSpecifications=spec)
    return [(i["InstanceId"], i["NetworkInterfaces"][0]["NetworkInterfaceId"]) for i in resp["Instances"]]
