"""`mirrorcap check [--fix] [--json]` against a moto account holding what the synthesized stack declares
(tests/synth_account.py builds it from cdk.tf.json: names, tags and references as Terraform applies them)."""

from __future__ import annotations

import json

import boto3
import pytest
from fake_aws import launch, moto_ec2
from synth_account import deploy
from typer.testing import CliRunner

from mirrorcap.cli import app
from mirrorcap.contract import RUNTIME_OWNER_KEY, SOURCE_KEY

REGION = "us-east-1"
# The inventory as written, synthesized once; its IDs are swapped for the fake account's in each test.
VPC, SUBNET, WEB1, API_ENI = "vpc-0123456789abcdef0", "subnet-0123456789abcdef0", "i-0123456789abcdef0", "eni-0123456789abcdef0"
INVENTORY = f'''
capture "prod" {{
  region    = "{REGION}"
  vpc_id    = "{VPC}"
  subnet_id = "{SUBNET}"
  ami       = "ami-0123456789abcdef0"
  vni       = 12345
  network {{
    mirror_source_cidrs = ["10.0.0.0/16"]
  }}
  source {{
    instance_id = "{WEB1}"
  }}
  source {{
    eni_id = "{API_ENI}"
  }}
  source {{
    tags = {{ Service = "web" }}
  }}
  auto_mirror {{}}
}}
'''


@pytest.fixture
def deployed(tmp_path, monkeypatch, synthesized):
    stack = synthesized(INVENTORY)
    monkeypatch.chdir(tmp_path)
    with moto_ec2(monkeypatch, REGION) as ec2:
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]

        def launch_here(tags, n=1):
            return launch(ec2, subnet, tags, n)

        (web1, web1_eni), = launch_here([{"Key": "Service", "Value": "web"}])
        api_eni = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
        ids = {VPC: vpc, SUBNET: subnet, WEB1: web1, API_ENI: api_eni}
        built = deploy(stack, tmp_path, ids, lambda service: boto3.client(service, region_name=REGION), ["prod"])["prod"]
        host = built.resource("aws_instance", "capture_instance")["id"]
        target = built.resource("aws_ec2_traffic_mirror_target", "mirror_target")["id"]
        mfilter = built.resource("aws_ec2_traffic_mirror_filter", "mirror_filter")["id"]
        sessions = built.resource("aws_ec2_traffic_mirror_session", "source")
        assert set(sessions) == {web1, api_eni}  # one per explicit source, keyed by its ID
        # Drift: the API's session recreated by hand with a stale VNI
        old = ec2.describe_traffic_mirror_sessions(TrafficMirrorSessionIds=[sessions[api_eni]["id"]])["TrafficMirrorSessions"][0]
        ec2.delete_traffic_mirror_session(TrafficMirrorSessionId=old["TrafficMirrorSessionId"])
        ec2.create_traffic_mirror_session(NetworkInterfaceId=api_eni, TrafficMirrorTargetId=target, TrafficMirrorFilterId=mfilter,
                                          SessionNumber=old["SessionNumber"], VirtualNetworkId=999,
                                          TagSpecifications=[{"ResourceType": "traffic-mirror-session", "Tags": old["Tags"]}])
        runner = CliRunner()
        yield dict(ec2=ec2, runner=runner, launch=launch_here, host=host, target=target, web1=web1, api_eni=api_eni)


def check(d, *args):
    result = d["runner"].invoke(app, ["check", "--json", *args])
    return result.exit_code, json.loads(result.stdout)


def kinds(report):
    return sorted((f["kind"], f["subject"]) for f in report["findings"])


def test_drift_is_found_fixed_where_owned_and_reported_where_not(deployed):
    d = deployed
    new = d["launch"]([{"Key": "Service", "Value": "web"}], n=2)  # a scale-out after the deploy
    code, report = check(d)
    assert code == 1 and report["drift"]
    assert kinds(report) == sorted([("missing-session", new[0][0]), ("missing-session", new[1][0]),
                                    ("vni-mismatch", next(f["subject"] for f in report["findings"] if f["kind"] == "vni-mismatch"))])
    vni = next(f for f in report["findings"] if f["kind"] == "vni-mismatch")
    assert "999" in vni["detail"] and vni["fix"] == "make deploy STACK=prod" and not vni["fixable"]

    code, report = check(d, "--fix")
    assert len(report["fixed"]["prod"]["created"]) == 2
    assert code == 1 and [f["kind"] for f in report["findings"]] == ["vni-mismatch"]  # Terraform's to fix, not ours
    owned = d["ec2"].describe_traffic_mirror_sessions(Filters=[{"Name": "network-interface-id", "Values": [e for _, e in new]}])["TrafficMirrorSessions"]
    assert all({"Key": RUNTIME_OWNER_KEY, "Value": "prod"} in s["Tags"] for s in owned) and len(owned) == 2

    # A released instance: its ENI goes; the owned session is removed by --fix
    d["ec2"].terminate_instances(InstanceIds=[new[0][0]])
    d["ec2"].delete_network_interface(NetworkInterfaceId=new[0][1])
    code, report = check(d)
    assert ("runtime", owned[0]["TrafficMirrorSessionId"]) in kinds(report) or ("runtime", owned[1]["TrafficMirrorSessionId"]) in kinds(report)
    code, report = check(d, "--fix")
    assert len(report["fixed"]["prod"]["deleted"]) == 1


def test_stopped_host_and_replaced_explicit_instance(deployed):
    d = deployed
    d["ec2"].stop_instances(InstanceIds=[d["host"]])
    d["ec2"].terminate_instances(InstanceIds=[d["web1"]])
    code, report = check(d)
    got = {f["kind"]: f for f in report["findings"]}
    assert code == 1
    assert got["host-not-running"]["fix"] == f"aws ec2 start-instances --instance-ids {d['host']}"
    assert got["source-gone"]["subject"] == d["web1"] and "tags" in got["source-gone"]["fix"]


def test_clean_account_exits_zero_and_prints_a_table(deployed):
    d = deployed
    d["ec2"].delete_traffic_mirror_session(TrafficMirrorSessionId=next(
        s["TrafficMirrorSessionId"] for s in d["ec2"].describe_traffic_mirror_sessions()["TrafficMirrorSessions"]
        if s["NetworkInterfaceId"] == d["api_eni"]))
    code, report = check(d)
    assert [f["kind"] for f in report["findings"]] == ["missing-session"] and not report["findings"][0]["fixable"]
    d["ec2"].create_traffic_mirror_session(NetworkInterfaceId=d["api_eni"], TrafficMirrorTargetId=d["target"],
                                           TrafficMirrorFilterId=d["ec2"].describe_traffic_mirror_filters()["TrafficMirrorFilters"][0]["TrafficMirrorFilterId"],
                                           SessionNumber=1, VirtualNetworkId=12345)
    result = d["runner"].invoke(app, ["check"])
    assert result.exit_code == 0 and "no drift" in result.stdout


def test_what_the_account_returned_reaches_the_terminal_inert(deployed):
    """A session's tags are anyone's to write who may tag it: a mirrorcap:source holding a terminal's
    control sequence (C1's CSI: EC2's XML carries no ESC, but carries U+009B) and U+202E reached the table
    as it was (the screen cleared, text turned around)."""
    d = deployed
    (_, eni), = d["launch"]([{"Key": "Service", "Value": "db"}])  # matches no selector
    hostile = "i-\u009b2J\u202eevil\u200b"
    d["ec2"].create_traffic_mirror_session(
        NetworkInterfaceId=eni, TrafficMirrorTargetId=d["target"], SessionNumber=1, VirtualNetworkId=12345,
        TrafficMirrorFilterId=d["ec2"].describe_traffic_mirror_filters()["TrafficMirrorFilters"][0]["TrafficMirrorFilterId"],
        TagSpecifications=[{"ResourceType": "traffic-mirror-session", "Tags": [{"Key": RUNTIME_OWNER_KEY, "Value": "prod"},
                                                                           {"Key": SOURCE_KEY, "Value": hostile}]}])
    result = d["runner"].invoke(app, ["check"])
    assert result.exit_code == 1 and "no longer matches the tag selectors" in result.stdout
    assert not any(c in result.stdout + result.stderr for c in "\u009b\u202e\u200b")
    assert "i-<U+009B>2J<U+202E>evil<U+200B> no longer matches" in result.stdout
    code, report = check(d)  # the JSON keeps the value, every control character escaped by json.dumps
    assert any(hostile in f["detail"] for f in report["findings"])


def test_not_deployed_and_unknown_capture(deployed, tmp_path):
    d = deployed
    result = d["runner"].invoke(app, ["check", "--capture", "nope"])
    assert result.exit_code == 2 and "no capture named nope" in result.stderr and "use one of: prod" in result.stderr
    # the same inventory under another name: nothing of it exists in the account
    (tmp_path / "staging.hcl").write_text((tmp_path / "capture.hcl").read_text().replace('capture "prod"', 'capture "staging"'))
    assert d["runner"].invoke(app, ["sessions", "--write", "-i", "staging.hcl"]).exit_code == 0
    result = d["runner"].invoke(app, ["check", "-i", "staging.hcl", "--json"])
    assert result.exit_code == 1
    (f,) = json.loads(result.stdout)["findings"]
    assert (f["kind"], f["fix"]) == ("not-deployed", "make deploy STACK=staging")


def cli(tmp_path, *args, **env):
    import subprocess
    from helpers import BIN, EXAMPLE
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    return subprocess.run([str(BIN / "mirrorcap"), *args, "-i", str(EXAMPLE)], capture_output=True, text=True,
                          env={**base, **env}, cwd=tmp_path, timeout=120)


def test_no_credentials_is_a_clear_error_not_a_traceback(tmp_path):
    """check and validate --live: exit 3 (could not reach AWS), never 1 (drift), so cron can tell them apart."""
    for args, code in ((["check"], 3), (["validate", "--live"], 3)):  # could not reach AWS
        r = cli(tmp_path, *args)
        assert r.returncode == code and "Traceback" not in r.stderr
        assert "Unable to locate credentials" in r.stderr and "fix: configure AWS credentials" in r.stderr
    r = cli(tmp_path, "check", "--json")
    report = json.loads(r.stdout)  # one JSON object, also on an error
    assert r.returncode == 3 and report["drift"] is None and report["error"][0]["field"] == "credentials"


def test_no_network_is_not_called_missing_credentials(tmp_path):
    # Credentials, but nothing listens at the endpoint (a closed port on this machine).
    r = cli(tmp_path, "check", "--json", AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
            AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_MAX_ATTEMPTS="1")
    report = json.loads(r.stdout)
    assert r.returncode == 3 and report["error"][0]["field"] == "network", report
    assert "Could not connect to the endpoint URL" in report["error"][0]["message"] and "credentials" not in r.stderr.lower()


@pytest.mark.parametrize("url,words", [("http://[::1", "Invalid IPv6 URL"), ("not a url", "Invalid endpoint"),
                                       ("http://127.0.0.1:99999", "Port out of range"), ("http://host:abc", "Port could not be cast")])
def test_an_unusable_endpoint_url_is_reported_in_the_json_not_a_traceback(tmp_path, url, words):
    """botocore refuses some URLs when it makes a client and others when it signs the first request, both with a bare ValueError."""
    for args in (["check", "--json"], ["validate", "--live"]):
        r = cli(tmp_path, *args, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_ENDPOINT_URL=url, AWS_MAX_ATTEMPTS="1")
        assert "Traceback" not in r.stderr and words in r.stderr and "fix: correct or unset AWS_ENDPOINT_URL" in r.stderr, r.stderr
        if args[0] == "check":
            report = json.loads(r.stdout)  # still one JSON object
            assert r.returncode == 2 and report["drift"] is None and report["error"][0]["field"] == "endpoint"
        else:
            assert r.returncode == 1
