"""`mirrorcap check` on a fleet: a moto account holding what the synthesized fleet stack declares
(tests/synth_account.py: the NLB, its target group, the Auto Scaling group and the mirror target made
from cdk.tf.json, with their tags), sources in two AZs."""

from __future__ import annotations

import json

import boto3
import pytest
from fake_aws import AMI, launch, moto_ec2
from synth_account import deploy
from typer.testing import CliRunner

from mirrorcap.account_checks.drift import fleet_capacity
from mirrorcap.cli import app
from mirrorcap.contract import FLEET, resource_name

REGION = "us-east-1"
VPC, A, B, BAKED = "vpc-0123456789abcdef0", "subnet-0aaaaaaaaaaaaaaa1", "subnet-0bbbbbbbbbbbbbbb2", "ami-0123456789abcdef0"
INVENTORY = f'''
capture "web" {{
  region = "{REGION}"
  vpc_id = "{VPC}"
  ami    = "{BAKED}"
  vni    = 77
  network {{
    mirror_source_cidrs = ["10.0.0.0/16"]
  }}
  fleet {{
    subnet_ids = ["{A}", "{B}"]
    cross_zone = false
  }}
  archive {{}}
  source {{
    tags = {{ Service = "web" }}
  }}
  auto_mirror {{}}
}}
'''


@pytest.fixture
def fleet(tmp_path, monkeypatch, synthesized):
    stack = synthesized(INVENTORY)
    monkeypatch.chdir(tmp_path)
    with moto_ec2(monkeypatch, REGION) as ec2:
        elbv2, asg = boto3.client("elbv2", region_name=REGION), boto3.client("autoscaling", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        a, b = (ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{z}")["Subnet"]["SubnetId"]
                for i, z in ((1, "a"), (2, "b")))
        ids = {VPC: vpc, A: a, B: b, BAKED: AMI}
        deploy(stack, tmp_path, ids, lambda service: boto3.client(service, region_name=REGION), ["web"])
        launch(ec2, a, [{"Key": "Service", "Value": "web"}])  # a source in us-east-1a

        def inventory(cross="false"):  # what the check reads of cross-zone is the inventory's setting
            text = (tmp_path / "capture.hcl").read_text()
            (tmp_path / "capture.hcl").write_text(text.replace(f"cross_zone = {'false' if cross == 'true' else 'true'}", f"cross_zone = {cross}"))
        runner = CliRunner()
        yield dict(ec2=ec2, elbv2=elbv2, asg=asg, runner=runner, inventory=inventory, launch=lambda: launch(ec2, b, [{"Key": "Service", "Value": "web"}]))


def check(d, *args):
    result = d["runner"].invoke(app, ["check", "--json", *args])
    assert result.exit_code in (0, 1), result.stderr
    return result.exit_code, json.loads(result.stdout)


def hosts(d) -> list[tuple[str, str]]:
    (group,) = d["asg"].describe_auto_scaling_groups()["AutoScalingGroups"]
    return sorted((i["AvailabilityZone"], i["InstanceId"]) for i in group["Instances"])


def test_a_healthy_fleet_has_no_drift(fleet):
    d = fleet
    assert [z for z, _ in hosts(d)] == ["us-east-1a", "us-east-1a"]  # moto 5.2.5 launches the group in its first subnet
    code, report = check(d, "--fix")  # the runtime session of the tag-selected source
    assert len(report["fixed"]["web"]["created"]) == 1
    code, report = check(d)
    assert code == 0 and report["findings"] == []


def test_an_az_without_a_healthy_host_drops_its_sources(fleet):
    d = fleet
    (new, _), = d["launch"]()  # a source scaled out in us-east-1b, where the fleet has no host
    check(d, "--fix")
    code, report = check(d)
    (f,) = report["findings"]
    assert code == 1 and (f["kind"], f["subject"]) == ("az-no-healthy-host", "us-east-1b")
    assert "1 session(s)" in f["detail"] and "cross-zone is off" in f["detail"] and "cross_zone = true" in f["fix"]
    # cross-zone on: the hosts in us-east-1a take them
    d["inventory"]("true")
    code, report = check(d)
    assert code == 0, report
    # one host fails the NLB's health check (moto: a stopped target is "unused"): reported; the other still serves
    (_, down), (_, up) = hosts(d)
    d["ec2"].stop_instances(InstanceIds=[down])
    code, report = check(d)
    (f,) = report["findings"]
    assert (f["kind"], f["subject"]) == ("target-unhealthy", down) and "unused" in f["detail"] and "mirrorcap-health" in f["fix"]
    # none healthy: even cross-zone cannot help, every AZ's sessions are reported
    d["ec2"].stop_instances(InstanceIds=[up])
    d["inventory"]("false")
    code, report = check(d)
    assert sorted((f["kind"], f["subject"]) for f in report["findings"]) == [
        ("az-no-healthy-host", "us-east-1a"), ("az-no-healthy-host", "us-east-1b"), ("target-unhealthy", down), ("target-unhealthy", up)]


def test_fewer_hosts_in_service_than_desired(fleet):
    """moto replaces a host put in standby at once (as AWS does): the group as
    DescribeAutoScalingGroups reports it while launches fail is the input here."""
    d = fleet
    (group,) = d["asg"].describe_auto_scaling_groups()["AutoScalingGroups"]
    assert fleet_capacity("web", group) is None  # moto's group: 2 of 2 in service
    first, second = group["Instances"]
    short = {**group, "DesiredCapacity": 3, "Instances": [first, {**second, "LifecycleState": "Pending"}]}
    f = fleet_capacity("web", short)
    assert (f.kind, f.subject) == ("fleet-capacity", resource_name("web", FLEET))
    assert f.detail == f"1 of 3 desired host(s) in service ({second['InstanceId']} Pending)" and "describe-scaling-activities" in f.fix
    assert "none launched" in fleet_capacity("web", {**group, "Instances": []}).detail


def test_a_fleet_not_deployed(fleet):
    d = fleet
    d["asg"].delete_auto_scaling_group(AutoScalingGroupName=resource_name("web", FLEET), ForceDelete=True)
    code, report = check(d)
    assert code == 1 and [(f["kind"], f["subject"]) for f in report["findings"] if f["kind"] != "missing-session"] == [
        ("fleet-not-deployed", resource_name("web", FLEET))]
    assert report["findings"][0]["fix"] == "make deploy STACK=web"
