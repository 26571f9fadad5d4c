"""The fleet fixture planned by the real Terraform and hashicorp/aws against moto (tf_emulator):
the NLB, the Auto Scaling group, the archive bucket and one session per source, all to create,
the sessions with the locked numbers. Plan only: the data sources (the fleet's subnets, the AMI,
an instance source's ENI) are read from moto, nothing is created.

Skips where terraform or the provider mirror is missing (test_terraform.py says how they are found).
"""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

import tf_emulator as T
from helpers import FIXTURES, mirrorcap, synth
from mirrorcap.inventory import load

TERRAFORM, TERRAFORM_VERSION = T.find_terraform()
MIRROR, NO_MIRROR = T.find_aws_mirror()

pytestmark = [
    pytest.mark.skipif(TERRAFORM is None, reason=f"real-provider tests need terraform: {TERRAFORM_VERSION}"),
    pytest.mark.skipif(MIRROR is None, reason=f"real-provider tests need the hashicorp/aws provider: {NO_MIRROR}"),
]


def fleet_account(em: T.Emulator, capture) -> dict[str, str]:
    """moto's stand-ins for the fleet's VPC, subnets (one per AZ), AMI, security group and sources."""
    first = capture.fleet.subnet_ids[0]
    ids = T.moto_account(em, dataclasses.replace(capture, subnet_id=first))
    ec2 = em.client("ec2", capture.region)
    for n, subnet in enumerate(capture.fleet.subnet_ids[1:], start=1):
        ids[subnet] = ec2.create_subnet(VpcId=ids[capture.vpc_id], CidrBlock=f"10.0.{16 * (n + 1)}.0/20",
                                        AvailabilityZone=f"{capture.region}{'abc'[n]}")["Subnet"]["SubnetId"]
    return ids


def test_emulator_plan_of_a_fleet_creates_the_nlb_group_bucket_and_one_session_per_source(tmp_path, tmp_path_factory):
    text = (FIXTURES / "fleet.hcl").read_text()
    text = text[:text.index('# A single host that archives')]  # the fleet alone
    capture = load(FIXTURES / "fleet.hcl").capture("fleet")
    tf = T.Terraform(TERRAFORM, MIRROR, tmp_path_factory.mktemp("tf-home"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
        T.fill_moto_gaps(mp)
        with T.emulator() as em:
            ids = fleet_account(em, capture)
            inv = tmp_path / "inventory"
            inv.mkdir()
            (inv / "capture.hcl").write_text(T.MOTO_ID.sub(lambda m: ids.get(m.group(0), m.group(0)), text))
            assert mirrorcap("sessions", "--write", cwd=inv).returncode == 0
            r = synth(inv, review_hcl=False)
            assert r.returncode == 0, r.stderr
            stack = inv / "cdktf.out" / "stacks" / "fleet"
            doc = json.loads((stack / "cdk.tf.json").read_text())
            override = T.emulator_override(MIRROR, em.url)
            override["provider"]["aws"]["endpoints"][0].update({"elbv2": em.url, "autoscaling": em.url})
            wc = T.working_copy(stack, tmp_path / "wc", override)
            tf.ok(wc, "init", "-input=false", "-no-color")
            tf.ok(wc, "plan", "-input=false", "-no-color", "-out=fleet.tfplan", timeout=240)
            plan = tf.show_json(wc, "fleet.tfplan")

    planned = {c["address"]: c for c in plan["resource_changes"] if c["mode"] == "managed"}
    assert {c["change"]["actions"][0] for c in planned.values()} == {"create"}
    declared = {f"{t}.{n}" for t, named in doc["resource"].items() for n, body in named.items() if "for_each" not in body}
    assert declared <= set(planned)
    lock = json.loads((inv / "capture.lock.json").read_text())["captures"]["fleet"]
    sessions = {c["index"]: c["change"]["after"] for c in planned.values() if c["type"] == "aws_ec2_traffic_mirror_session"}
    assert len(sessions) == len(capture.sources) == 3
    assert {k: s["session_number"] for k, s in sessions.items()} == lock
    instance = ids["i-0123456789abcdef0"]
    primary = sessions[instance]["network_interface_id"]  # the instance's primary ENI, read from moto at plan time
    assert re.fullmatch(r"eni-[0-9a-f]+", primary), primary
    asg = planned["aws_autoscaling_group.fleet"]["change"]["after"]
    assert (asg["min_size"], asg["desired_capacity"], asg["max_size"]) == (3, 6, 12)
    assert set(asg["vpc_zone_identifier"]) == {ids[s] for s in capture.fleet.subnet_ids}
    health = planned["aws_security_group.health_sg"]["change"]["after"]["ingress"]
    assert sorted(health[0]["cidr_blocks"]) == ["10.0.16.0/20", "10.0.32.0/20", "10.0.48.0/20"]  # the subnets, read
    print(f"emulator plan: {len(planned)} resources to create, {len(sessions)} sessions")
