"""`mirrorcap validate --live` against moto (subnets, instances, ENIs, instance types);
AWS's DryRun verdict on a session through botocore's Stubber."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber
from fake_aws import launch, moto_ec2
from typer.testing import CliRunner

from mirrorcap.cli import app
from mirrorcap.account_checks.clients import dry_run_session

REGION = "us-east-1"


@pytest.fixture
def account(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with moto_ec2(monkeypatch, REGION) as ec2:
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        a = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
        b = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24", AvailabilityZone="us-east-1b")["Subnet"]["SubnetId"]

        def launch_one(subnet, itype, tags=()):
            return launch(ec2, subnet, tags, instance_type=itype)[0]

        yield dict(ec2=ec2, vpc=vpc, a=a, b=b, launch=launch_one, tmp=tmp_path)


def inventory(acc, sources: str) -> None:
    (acc["tmp"] / "capture.hcl").write_text(f'''
capture "prod" {{
  region    = "{REGION}"
  vpc_id    = "{acc["vpc"]}"
  subnet_id = "{acc["a"]}"
  ami       = "ami-0123456789abcdef0"
  vni       = 7
  network {{
    mirror_source_cidrs = ["10.0.0.0/16"]
  }}
{sources}
}}
''')
    assert CliRunner().invoke(app, ["sessions", "--write"]).exit_code == 0


def live(*args):
    return CliRunner().invoke(app, ["validate", "--live", *args])


def test_clean_sources_pass(account):
    web, _ = account["launch"](account["a"], "t3.small")
    inventory(account, f'  source {{\n    instance_id = "{web}"\n  }}')
    result = live("--source-mtu", "8951")
    assert result.exit_code == 0 and result.stderr == "", result.stderr


def test_cross_az_xen_truncation_and_mtu_are_reported(account):
    web, _ = account["launch"](account["b"], "m4.large")  # other AZ, Xen
    _, api_eni = account["launch"](account["a"], "t3.small")
    account["launch"](account["b"], "t3.small", tags=[{"Key": "Service", "Value": "web"}])
    inventory(account, f'''  source {{
    instance_id = "{web}"
  }}
  source {{
    eni_id = "{api_eni}"
    packet_length = 128
  }}
  source {{
    tags = {{ Service = "web" }}
  }}
  auto_mirror {{}}''')
    result = live()
    assert result.exit_code == 0  # warnings only
    err = result.stderr
    assert f"source[0] ({web}): m4.large is not Nitro-based (hypervisor: xen)" in err and "Traffic Mirroring docs" in err
    assert f"source[0] ({web}): source is in us-east-1b, the capture host in us-east-1a" in err
    assert f"source[1] ({api_eni}) > packet_length: packets over 128 bytes are truncated" in err
    assert "source[tags {'Service': 'web'}]" in err and "inter-AZ" in err
    # source MTU 9001 + 50 > 9001: the jumbo-frame warning, with the limit spelled out
    assert 'capture "prod" > source: 2 source(s) at MTU 9001' in err  # the 128-byte one is not among them
    assert "packets over 8951 bytes arrive truncated" in err and "packet_length = 8951" in err
    quiet = live("--source-mtu", "1500")
    assert "8951" not in quiet.stderr


def test_network_headroom_uses_the_apis_bandwidth(account):
    # r5.large is not in capacity.py's table: without --live its bandwidth is unknown.
    web, _ = account["launch"](account["a"], "t3.small")
    inventory(account, f'  instance_type = "r5.large"\n  storage {{\n    type = "gp3"\n    size_gib = 16000\n    throughput_mibps = 1000\n'
                       f'    expected_mbps = 800\n  }}\n  source {{\n    instance_id = "{web}"\n  }}')
    offline = CliRunner().invoke(app, ["validate"])
    assert offline.exit_code == 0 and "network" not in offline.stderr
    result = live("--source-mtu", "1500")
    assert result.exit_code == 0
    assert "expected_mbps: network: 880 Mbit/s arrives with VXLAN; r5.large sustains 750 Mbit/s" in result.stderr


def test_missing_source_and_wrong_vpc_are_errors(account):
    inventory(account, '  source {\n    instance_id = "i-0123456789abcdef0"\n  }')
    result = live()
    assert result.exit_code == 1 and "source[0]: i-0123456789abcdef0 does not exist in us-east-1" in result.stderr
    other = account["ec2"].create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    hcl = (account["tmp"] / "capture.hcl").read_text().replace(account["vpc"], other)
    (account["tmp"] / "capture.hcl").write_text(hcl)
    result = live()
    assert result.exit_code == 1 and f"is in {account['vpc']}, not {other}" in result.stderr


def test_dry_run_is_awss_verdict():
    client = boto3.client("ec2", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    stub = Stubber(client)
    expected = {"NetworkInterfaceId": "eni-1", "TrafficMirrorTargetId": "tmt-1", "TrafficMirrorFilterId": "tmf-1",
                "SessionNumber": 32766, "VirtualNetworkId": 7, "DryRun": True}
    stub.add_client_error("create_traffic_mirror_session", "DryRunOperation", "Request would have succeeded", 412, expected_params=expected)
    stub.add_client_error("create_traffic_mirror_session", "InvalidParameterValue",
                          "The instance type of the source network interface is not supported", 400, expected_params=expected)
    with stub:
        assert dry_run_session(client, "eni-1", "tmt-1", "tmf-1", 7) is None
        assert dry_run_session(client, "eni-1", "tmt-1", "tmf-1", 7) == \
            "InvalidParameterValue: The instance type of the source network interface is not supported"
        stub.assert_no_pending_responses()
