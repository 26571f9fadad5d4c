"""The re-mirroring Lambda handler against moto (instances, ENIs, targets, filters,
sessions), and its session calls' AWS errors through botocore's Stubber.

moto does not enforce Traffic Mirroring limits, so the limit errors AWS itself
returns are played back with the Stubber.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.stub import Stubber
from fake_aws import launch, moto_ec2

from mirrorcap.remirror import handler as lambda_handler
from mirrorcap.remirror.ec2 import apply, reconcile
from mirrorcap.contract import RUNTIME_OWNER_KEY, SOURCE_KEY
from mirrorcap.remirror.model import Selector, Settings
from mirrorcap.remirror.reconcile import Changes, Create, Delete

REGION = "ap-northeast-1"
WEB = [{"Key": "Service", "Value": "web"}, {"Key": "Environment", "Value": "prod"}]


@pytest.fixture
def account(monkeypatch):
    with moto_ec2(monkeypatch, REGION) as ec2:
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        target_eni = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
        target = ec2.create_traffic_mirror_target(NetworkInterfaceId=target_eni)["TrafficMirrorTarget"]["TrafficMirrorTargetId"]
        mfilter = ec2.create_traffic_mirror_filter()["TrafficMirrorFilter"]["TrafficMirrorFilterId"]
        settings = Settings(capture="prod", target_id=target, filter_id=mfilter, vni=12345, max_sources=10, vpc_id=vpc,
                            selectors=(Selector(tags=(("Environment", "prod"), ("Service", "web"))),))
        for k, v in settings.to_env().items():
            monkeypatch.setenv(k, v)

        yield ec2, settings, lambda tags=WEB, n=1: launch(ec2, subnet, tags, n)


def sessions(ec2, settings):
    return ec2.describe_traffic_mirror_sessions(Filters=[{"Name": "traffic-mirror-target-id", "Values": [settings.target_id]}])["TrafficMirrorSessions"]


def event(instance_id, kind="ec2"):
    if kind == "ec2":
        return {"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification",
                "detail": {"instance-id": instance_id, "state": "running"}}
    return {"source": "aws.autoscaling", "detail-type": "EC2 Instance Launch Successful", "detail": {"EC2InstanceId": instance_id}}


def test_new_instance_is_mirrored_once_with_owner_tags(account, caplog):
    ec2, settings, launch = account
    (iid, eni), = launch()
    launch(tags=[{"Key": "Service", "Value": "api"}])  # does not match
    caplog.set_level(logging.INFO, logger="mirrorcap")
    result = lambda_handler.handler(event(iid), ec2=ec2)
    assert len(result["created"]) == 1
    (s,) = sessions(ec2, settings)
    tags = {t["Key"]: t["Value"] for t in s["Tags"]}
    assert (s["NetworkInterfaceId"], s["SessionNumber"], s["VirtualNetworkId"], s["TrafficMirrorFilterId"]) == (eni, 1, 12345, settings.filter_id)
    assert tags[RUNTIME_OWNER_KEY] == "prod" and tags[SOURCE_KEY] == iid
    logged = [json.loads(r.getMessage()) for r in caplog.records]
    assert {"action": "create", "instance": iid}.items() <= next(l for l in logged if l["action"] == "create").items()
    # the same event again (EventBridge delivers at least once), and the ASG's event for it: nothing more
    assert lambda_handler.handler(event(iid), ec2=ec2)["created"] == []
    assert lambda_handler.handler(event(iid, "asg"), ec2=ec2)["created"] == []
    assert len(sessions(ec2, settings)) == 1


def test_instance_already_gone(account):
    ec2, settings, launch = account
    (iid, _), = launch()
    ec2.terminate_instances(InstanceIds=[iid])
    assert lambda_handler.handler(event(iid), ec2=ec2) == {"created": [], "deleted": [], "skipped": []}
    assert sessions(ec2, settings) == []


def test_target_limit_is_logged_and_respected(account, monkeypatch, caplog):
    ec2, settings, launch = account
    monkeypatch.setenv("MIRRORCAP_MAX_SOURCES", "2")
    launch(n=3)
    caplog.set_level(logging.INFO, logger="mirrorcap")
    result = lambda_handler.handler({"detail-type": "Scheduled Event"}, ec2=ec2)
    assert len(result["created"]) == 2 and len(sessions(ec2, settings)) == 2
    skips = [json.loads(r.getMessage()) for r in caplog.records if '"skip"' in r.getMessage()]
    assert len(skips) == 1 and "limit" in skips[0]["reason"] and "max 2" in skips[0]["reason"]


def test_sessions_it_does_not_own_are_never_touched(account, monkeypatch):
    ec2, settings, launch = account
    (iid, eni), = launch()
    # Terraform's session for this ENI (no runtime-owner tag), and someone's session on a
    # source that is then deleted
    tf = ec2.create_traffic_mirror_session(NetworkInterfaceId=eni, TrafficMirrorTargetId=settings.target_id,
                                           TrafficMirrorFilterId=settings.filter_id, SessionNumber=5, VirtualNetworkId=12345)
    (iid2, eni2), = launch(tags=[{"Key": "Team", "Value": "x"}])
    theirs = ec2.create_traffic_mirror_session(NetworkInterfaceId=eni2, TrafficMirrorTargetId=settings.target_id,
                                               TrafficMirrorFilterId=settings.filter_id, SessionNumber=1)
    ec2.terminate_instances(InstanceIds=[iid2])
    monkeypatch.setenv("MIRRORCAP_ENDS_AT", (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat())
    lambda_handler.handler({}, ec2=ec2)
    ids = {s["TrafficMirrorSessionId"] for s in sessions(ec2, settings)}
    assert ids == {tf["TrafficMirrorSession"]["TrafficMirrorSessionId"], theirs["TrafficMirrorSession"]["TrafficMirrorSessionId"]}


def test_campaign_end_removes_what_it_created(account, monkeypatch):
    ec2, settings, launch = account
    launch(n=2)
    assert len(lambda_handler.handler({}, ec2=ec2)["created"]) == 2
    monkeypatch.setenv("MIRRORCAP_ENDS_AT", (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat())
    result = lambda_handler.handler({}, ec2=ec2)
    assert len(result["deleted"]) == 2 and result["created"] == [] and sessions(ec2, settings) == []


def test_terminated_source_session_is_removed(account):
    ec2, settings, launch = account
    (iid, eni), = launch()
    lambda_handler.handler(event(iid), ec2=ec2)
    ec2.terminate_instances(InstanceIds=[iid])
    ec2.delete_network_interface(NetworkInterfaceId=eni)  # moto keeps it; AWS deletes a primary ENI with its instance
    assert len(lambda_handler.handler(event(iid), ec2=ec2)["deleted"]) == 1
    assert sessions(ec2, settings) == []


def test_concurrent_invocations_end_with_one_session_per_instance(account):
    """Two Lambdas handle the same launch at once. A barrier holds both creates until
    both have listed the account, forcing the worst interleaving."""
    ec2, settings, launch = account
    launched = launch(n=3)
    barrier = threading.Barrier(2, timeout=20)
    errors = []

    def wait_for_the_other(**_):
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass

    def worker():
        client = boto3.client("ec2", region_name=REGION)
        client.meta.events.register_first("before-call.ec2.CreateTrafficMirrorSession", wait_for_the_other)
        try:
            reconcile(client, settings)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    final = sessions(ec2, settings)
    assert sorted(s["NetworkInterfaceId"] for s in final) == sorted(eni for _, eni in launched)
    assert all(s["SessionNumber"] == 1 for s in final)


# --- AWS's own refusals, played back with the Stubber (apply() makes only session calls) ---

def stubbed():
    client = boto3.client("ec2", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    return client, Stubber(client)


SETTINGS = Settings(capture="prod", target_id="tmt-0123456789abcdef0", filter_id="tmf-0123456789abcdef0", vni=7,
                    max_sources=10, vpc_id="vpc-1")
NOW = datetime(2026, 11, 25, tzinfo=timezone.utc)


def test_limit_error_from_aws_is_a_logged_skip(caplog):
    client, stub = stubbed()
    stub.add_client_error("create_traffic_mirror_session", service_error_code="TrafficMirrorSourcesPerTargetLimitExceeded",
                          service_message="The maximum number of sources for the target has been reached")
    stub.add_response("create_traffic_mirror_session", {"TrafficMirrorSession": {"TrafficMirrorSessionId": "tms-2"}})
    caplog.set_level(logging.INFO, logger="mirrorcap")
    with stub:
        done = apply(client, SETTINGS, Changes(creates=(Create("i-1", "eni-1", 1, 7, None), Create("i-2", "eni-2", 1, 7, 128))), NOW)
        stub.assert_no_pending_responses()
    assert done["created"] == ["tms-2"] and done["skipped"] == ["limit: i-1: TrafficMirrorSourcesPerTargetLimitExceeded"]
    assert any("TrafficMirrorSourcesPerTargetLimitExceeded" in r.getMessage() for r in caplog.records)


def test_create_sends_ownership_tags_and_packet_length():
    client, stub = stubbed()
    stub.add_response("create_traffic_mirror_session", {"TrafficMirrorSession": {"TrafficMirrorSessionId": "tms-1"}}, {
        "NetworkInterfaceId": "eni-2", "TrafficMirrorTargetId": SETTINGS.target_id, "TrafficMirrorFilterId": SETTINGS.filter_id,
        "SessionNumber": 2, "VirtualNetworkId": 7, "PacketLength": 128, "Description": "mirrorcap prod: i-2 (auto)",
        "TagSpecifications": [{"ResourceType": "traffic-mirror-session", "Tags": [
            {"Key": "Name", "Value": "mirrorcap-prod-i-2"}, {"Key": RUNTIME_OWNER_KEY, "Value": "prod"},
            {"Key": "mirrorcap:stack", "Value": "prod"}, {"Key": SOURCE_KEY, "Value": "i-2"},
            {"Key": "mirrorcap:created", "Value": "2026-11-25T00:00:00.000000+00:00"}]}]})
    with stub:
        apply(client, SETTINGS, Changes(creates=(Create("i-2", "eni-2", 2, 7, 128),)), NOW)
        stub.assert_no_pending_responses()


def test_gone_eni_and_already_deleted_session_are_not_failures():
    client, stub = stubbed()
    stub.add_client_error("delete_traffic_mirror_session", service_error_code="InvalidTrafficMirrorSessionId.NotFound")
    stub.add_client_error("create_traffic_mirror_session", service_error_code="InvalidNetworkInterfaceID.NotFound")
    with stub:
        done = apply(client, SETTINGS, Changes(creates=(Create("i-3", "eni-3", 1, 7, None),), deletes=(Delete("tms-9", "eni-9", "gone"),)), NOW)
    assert done == {"created": [], "deleted": [], "skipped": ["gone: i-3"]}


def test_other_errors_fail_the_invocation_so_lambda_retries():
    client, stub = stubbed()
    stub.add_client_error("create_traffic_mirror_session", service_error_code="UnauthorizedOperation", http_status_code=403)
    with stub, pytest.raises(Exception, match="UnauthorizedOperation"):
        apply(client, SETTINGS, Changes(creates=(Create("i-3", "eni-3", 1, 7, None),)), NOW)
