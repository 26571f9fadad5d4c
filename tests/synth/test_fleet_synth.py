"""A fleet (`fleet {}` + `archive {}`) and a single host with `archive {}`, synthesized by the real
CDK Terrain app (tests/fixtures/fleet.hcl): what Terraform is given.

The bucket policy is checked by what it decides (explicit deny wins, else an allow is needed,
for the condition operators it uses), not by its wording: who may write, who may read, and that
the account can still manage the bucket.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from fnmatch import fnmatchcase

import pytest

from helpers import FIXTURES, mirrorcap, sessions_of, stack_json, stack_values, synth, write
from mirrorcap import aws_limits as L
from mirrorcap.contract import ARCHIVE_BUCKET_VAR, FLEET_VOLUME_DEVICE, HEALTH_PORT, STACK_KEY
from mirrorcap.inventory import load

KEY = "${aws_kms_key.pcap_key.arn}"
READERS = ["arn:aws:iam::111122223333:role/pcap-readers", "arn:aws:iam::111122223333:role/incident-response"]


def resources(doc: dict, kind: str) -> dict:
    return {k: {a: b for a, b in v.items() if a != "//"} for k, v in doc["resource"].get(kind, {}).items()}


def one(doc: dict, kind: str) -> dict:
    (r,) = resources(doc, kind).values()
    return r


@pytest.fixture(scope="module")
def doc(fleet):
    return stack_json(fleet, "fleet")


@pytest.fixture(scope="module")
def solo(fleet):
    return stack_json(fleet, "solo")


@pytest.fixture(scope="module")
def capture():
    return load(FIXTURES / "fleet.hcl").capture("fleet")


def test_one_internal_nlb_in_the_fleet_subnets_cross_zone_off(doc, capture):
    nlb = one(doc, "aws_lb")
    assert nlb["load_balancer_type"] == "network" and nlb["internal"] is True
    assert nlb["subnets"] == list(capture.fleet.subnet_ids)
    assert nlb["enable_cross_zone_load_balancing"] is False
    assert nlb["enable_deletion_protection"] is True  # storage.prevent_destroy, the default
    listener = one(doc, "aws_lb_listener")
    assert (listener["protocol"], listener["port"]) == ("UDP", L.VXLAN_PORT)
    assert listener["load_balancer_arn"] == "${aws_lb.fleet_nlb.arn}"
    assert listener["default_action"] == [{"type": "forward", "target_group_arn": "${aws_lb_target_group.fleet_targets.arn}"}]


def test_target_group_is_udp_4789_health_checked_on_the_hosts_health_port(doc):
    tg = one(doc, "aws_lb_target_group")
    assert (tg["target_type"], tg["protocol"], tg["port"]) == ("instance", "UDP", 4789)
    hc = tg["health_check"]
    assert (hc["protocol"], hc["port"], hc["path"], hc["matcher"]) == ("HTTP", str(HEALTH_PORT), "/", "200")


def test_launch_template_is_the_single_hosts_twin(doc, capture):
    lt = one(doc, "aws_launch_template")
    assert lt["image_id"] == capture.ami and lt["instance_type"] == capture.instance_type
    assert lt["metadata_options"]["http_tokens"] == "required" and lt["metadata_options"]["http_put_response_hop_limit"] == 1
    (eni,) = lt["network_interfaces"]
    assert eni["associate_public_ip_address"] == "false" and eni["device_index"] == 0
    assert set(eni["security_groups"]) == {f"${{aws_security_group.{n}.id}}" for n in ("management_sg", "mirror_sg", "health_sg")}
    assert lt["iam_instance_profile"] == {"name": "${aws_iam_instance_profile.host_profile.name}"}
    assert "key_name" not in lt
    root, pcaps = lt["block_device_mappings"]
    assert root["device_name"] == "${data.aws_ami.fleet_ami.root_device_name}"
    for bdm in (root, pcaps):
        assert bdm["ebs"]["encrypted"] == "true" and bdm["ebs"]["kms_key_id"] == KEY
        assert bdm["ebs"]["delete_on_termination"] == "true"  # pcaps are archived; the volume goes with its host
    s = capture.storage
    assert pcaps["device_name"] == FLEET_VOLUME_DEVICE == "/dev/sdf"
    assert (pcaps["ebs"]["volume_type"], pcaps["ebs"]["volume_size"], pcaps["ebs"]["iops"], pcaps["ebs"]["throughput"]) == \
        (s.type, s.size_gib, s.iops, s.throughput_mibps)
    # The instances carry the ownership tags the drift check and the Lambda trust (default_tags do not reach them).
    tags = {t["resource_type"]: t["tags"] for t in lt["tag_specifications"]}
    assert tags["instance"][STACK_KEY] == tags["volume"][STACK_KEY] == "fleet"


def test_user_data_fills_the_archive_bucket_and_no_volume_or_eni(doc, fleet):
    ud = one(doc, "aws_launch_template")["user_data"]
    assert ud == ('${base64gzip(templatefile("${path.module}/user-data.sh.tftpl", '
                  '{volume_id = "", eni_id = "", %s = aws_s3_bucket.archive.bucket}))}' % ARCHIVE_BUCKET_VAR)
    assert (fleet / "cdktf.out" / "stacks" / "fleet" / "user-data.sh.tftpl").is_file()


def test_health_check_port_open_from_the_fleet_subnets_only(doc, capture):
    health = resources(doc, "aws_security_group")["health_sg"]
    (rule,) = health["ingress"]
    assert (rule["protocol"], rule["from_port"], rule["to_port"]) == ("tcp", HEALTH_PORT, HEALTH_PORT)
    assert rule["cidr_blocks"] == [f"${{data.aws_subnet.fleet_subnet_{i}.cidr_block}}" for i in range(3)]
    assert [d["id"] for d in doc["data"]["aws_subnet"].values()] == list(capture.fleet.subnet_ids)
    assert health["egress"] == []
    # VXLAN keeps the sources' addresses through a UDP NLB: the mirror group's rules, unchanged.
    mirror = resources(doc, "aws_security_group")["mirror_sg"]
    assert {(r["protocol"], r["from_port"]) for r in mirror["ingress"]} == {("udp", 4789)}


def test_group_sizes_are_per_az_times_the_azs_with_elb_health(doc, capture):
    asg = one(doc, "aws_autoscaling_group")
    n, f = len(capture.fleet.subnet_ids), capture.fleet
    assert n == 3
    assert (asg["min_size"], asg["desired_capacity"], asg["max_size"]) == (f.min_per_az * n, f.desired_per_az * n, f.max_per_az * n) == (3, 6, 12)
    assert asg["vpc_zone_identifier"] == list(capture.fleet.subnet_ids)
    assert asg["health_check_type"] == "ELB" and asg["health_check_grace_period"] >= 300
    assert asg["target_group_arns"] == ["${aws_lb_target_group.fleet_targets.arn}"]
    assert asg["launch_template"]["version"] == "${aws_launch_template.fleet_template.latest_version}"


def test_no_single_host_resources_in_a_fleet(doc):
    for kind in ("aws_instance", "aws_network_interface", "aws_ebs_volume", "aws_volume_attachment", "aws_network_interface_attachment"):
        assert kind not in doc["resource"], kind


def test_one_nlb_mirror_target_and_one_session_per_explicit_source_with_locked_numbers(doc, fleet, capture):
    target = one(doc, "aws_ec2_traffic_mirror_target")
    assert target["network_load_balancer_arn"] == "${aws_lb.fleet_nlb.arn}" and "network_interface_id" not in target
    assert target["depends_on"] == ["aws_lb_listener.fleet_vxlan"]
    assert one(doc, "aws_ec2_traffic_mirror_session")["traffic_mirror_target_id"] == "${aws_ec2_traffic_mirror_target.mirror_target.id}"
    lock = json.loads((fleet / "capture.lock.json").read_text())["captures"]["fleet"]
    per_source = sessions_of(doc, stack_values(fleet, "fleet"))
    assert set(per_source) == {s.id for s in capture.sources} == set(lock)
    assert {k: v["session_number"] for k, v in per_source.items()} == lock
    assert per_source["eni-0fedcba9876543210"]["session_number"] == 7 and per_source["eni-0fedcba9876543210"]["virtual_network_id"] == 5000
    # The tag source is the Lambda's, with the NLB target's limit.
    env = one(doc, "aws_lambda_function")["environment"]["variables"]
    assert env["MIRRORCAP_TARGET_ID"] == "${aws_ec2_traffic_mirror_target.mirror_target.id}"
    assert env["MIRRORCAP_MAX_SOURCES"] == str(L.SESSIONS_PER_ACCOUNT)


def test_outputs_of_a_fleet(doc):
    assert set(doc["output"]) == {"nlb_arn", "asg_name", "archive_bucket", "mirror_target_id", "mirror_filter_id", "session_ids",
                                  "remirror_function", "alarm_topic_arn", "athena_workgroup", "glue_database", "glue_table",
                                  "athena_results_bucket"}
    assert doc["output"]["athena_workgroup"]["value"] == "mirrorcap-fleet-athena" == doc["resource"]["aws_athena_workgroup"]["athena"]["name"]
    assert doc["output"]["glue_database"]["value"] == "mirrorcap_fleet"
    assert doc["output"]["archive_bucket"]["value"] == "${aws_s3_bucket.archive.bucket}"


def test_bucket_is_kms_encrypted_versioned_private_and_expires(doc, capture):
    bucket = resources(doc, "aws_s3_bucket")["archive"]
    assert bucket["bucket_prefix"] == "mirrorcap-fleet-" and bucket["force_destroy"] is False
    (rule,) = resources(doc, "aws_s3_bucket_server_side_encryption_configuration")["archive_encryption"]["rule"]
    assert rule["apply_server_side_encryption_by_default"] == {"sse_algorithm": "aws:kms", "kms_master_key_id": KEY}
    assert rule["bucket_key_enabled"] is True
    assert resources(doc, "aws_s3_bucket_versioning")["archive_versioning"]["versioning_configuration"] == {"status": "Enabled"}
    pab = resources(doc, "aws_s3_bucket_public_access_block")["archive_public_access"]
    assert all(pab[k] is True for k in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"))
    (life,) = resources(doc, "aws_s3_bucket_lifecycle_configuration")["archive_lifecycle"]["rule"]
    assert life["status"] == "Enabled" and life["expiration"] == [{"days": 90}] == [{"days": capture.archive_retention_days}]
    assert life["noncurrent_version_expiration"][0]["noncurrent_days"] <= 30
    assert resources(doc, "aws_s3_bucket_policy")["archive_policy"]["policy"] == "${data.aws_iam_policy_document.archive_bucket_policy.json}"


# --- The bucket policy, by what it decides ------------------------------------------------------

HOST = "arn:aws:iam::111122223333:role/mirrorcap-fleet-host"
ROOT = "arn:aws:iam::111122223333:root"
ADMIN = "arn:aws:iam::111122223333:role/admin"
BUCKET = "arn:aws:s3:::mirrorcap-fleet-abc"
KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/k"
REFS = {"${aws_s3_bucket.archive.arn}": BUCKET, "${aws_iam_role.host_role.arn}": HOST, KEY: KEY_ARN}


def _resolve(v: str) -> str:
    for ref, value in REFS.items():
        v = v.replace(ref, value)
    assert "${" not in v, v
    return v


def _matches(cond: dict, ctx: dict) -> bool:
    test, values, key = cond["test"], [_resolve(v) for v in cond["values"]], cond["variable"]
    have = ctx.get(key)
    if test == "Null":  # "true": the key is absent; "false": present
        return (have is None) == (values == ["true"])
    if test.endswith("IfExists") and have is None:
        return True
    if test in ("Bool", "ArnEquals", "StringEquals"):
        return have is not None and have in values
    if test in ("ArnNotEquals", "StringNotEquals", "StringNotEqualsIfExists"):
        return have is None or have not in values  # a negated operator is true for an absent key
    raise AssertionError(f"an operator this evaluator does not know: {test}")


def decide(statements: list[dict], principal: str, action: str, resource: str, **ctx) -> bool:
    """Allowed by the bucket policy alone (explicit deny wins; else an allow naming the principal)."""
    ctx = {"aws:PrincipalArn": principal, "aws:SecureTransport": "true", **ctx}
    allowed = False
    for s in statements:
        who = {_resolve(i) for p in s["principals"] for i in p["identifiers"]}
        if not ("*" in who or principal in who):
            continue
        if not any(fnmatchcase(action, a) for a in s["actions"]) or not any(fnmatchcase(resource, _resolve(r)) for r in s["resources"]):
            continue
        if all(_matches(c, ctx) for c in s.get("condition", [])):
            if s["effect"] == "Deny":
                return False
            allowed = True
    return allowed


@pytest.fixture(scope="module")
def policy(doc):
    return doc["data"]["aws_iam_policy_document"]["archive_bucket_policy"]["statement"]


def test_only_the_hosts_write_and_only_their_capture_with_the_key(policy):
    pcap = f"{BUCKET}/fleet/vni4242/2026-11-25/i-1/x.pcap"
    assert decide(policy, HOST, "s3:PutObject", pcap)  # bucket default encryption: no header
    assert decide(policy, HOST, "s3:PutObject", pcap, **{"s3:x-amz-server-side-encryption": "aws:kms",
                                                          "s3:x-amz-server-side-encryption-aws-kms-key-id": KEY_ARN})
    assert not decide(policy, HOST, "s3:PutObject", pcap, **{"s3:x-amz-server-side-encryption": "AES256"})
    assert not decide(policy, HOST, "s3:PutObject", pcap, **{"s3:x-amz-server-side-encryption": "aws:kms:dsse"})
    assert not decide(policy, HOST, "s3:PutObject", pcap, **{"s3:x-amz-server-side-encryption-aws-kms-key-id": KEY_ARN + "2"})
    assert not decide(policy, HOST, "s3:PutObject", f"{BUCKET}/other/x.pcap")
    # its indexes, under the index prefix (contract.ARCHIVE_INDEX_KEY), and no other capture's
    assert decide(policy, HOST, "s3:PutObject", f"{BUCKET}/index/fleet/vni4242/2026-11-25/i-1/x.pcap.idx.json.gz")
    assert not decide(policy, HOST, "s3:PutObject", f"{BUCKET}/index/other/vni4242/2026-11-25/i-1/x.pcap.idx.json.gz")
    assert not decide(policy, HOST, "s3:PutObject", pcap, **{"aws:SecureTransport": "false"})
    for other in READERS + [ROOT, ADMIN]:
        assert not decide(policy, other, "s3:PutObject", pcap), other


def test_only_the_reader_roles_read(policy):
    pcap = f"{BUCKET}/fleet/vni4242/2026-11-25/i-1/x.pcap"
    for reader in READERS:
        assert decide(policy, reader, "s3:GetObject", pcap) and decide(policy, reader, "s3:ListBucket", BUCKET)
        assert not decide(policy, reader, "s3:GetObject", pcap, **{"aws:SecureTransport": "false"})
    for other in (HOST, ROOT, ADMIN):
        assert not decide(policy, other, "s3:GetObject", pcap), other
        assert not decide(policy, other, "s3:GetObjectVersion", pcap), other
    assert not decide(policy, HOST, "s3:ListBucket", BUCKET)


def test_the_account_still_manages_the_bucket(policy):
    # Not allowed by the bucket policy (IAM decides), and never denied: no lock-out.
    denies = [s for s in policy if s["effect"] == "Deny"]
    for action in ("s3:PutBucketPolicy", "s3:DeleteBucketPolicy", "s3:GetBucketPolicy", "s3:PutLifecycleConfiguration", "s3:ListBucket"):
        hit = [s["sid"] for s in denies if any(fnmatchcase(action, a) for a in s["actions"])
               and all(_matches(c, {"aws:PrincipalArn": ADMIN, "aws:SecureTransport": "true"}) for c in s.get("condition", []))]
        assert hit == [], (action, hit)


def test_hosts_get_put_and_the_key_through_s3_nothing_else(doc):
    statements = doc["data"]["aws_iam_policy_document"]["host_archive_permissions"]["statement"]
    assert {(tuple(s["actions"]), tuple(s["resources"])) for s in statements} == {
        (("s3:PutObject",), ("${aws_s3_bucket.archive.arn}/fleet/*", "${aws_s3_bucket.archive.arn}/index/fleet/*")),
        (("kms:GenerateDataKey", "kms:Encrypt"), (KEY,))}
    attached = resources(doc, "aws_iam_role_policy")["host_archive"]
    assert attached["role"] == "${aws_iam_role.host_role.name}"


def test_the_key_serves_s3_and_auto_scaling(doc):
    statements = {s["sid"]: s for s in doc["data"]["aws_iam_policy_document"]["pcap_key_policy"]["statement"]}
    via = {c["variable"]: c["values"] for c in statements["UseThroughS3ForTheArchive"]["condition"]}
    assert via["kms:ViaService"] == ["s3.eu-west-1.amazonaws.com"]
    (who,) = statements["AutoScalingEncryptsTheFleetsVolumes"]["principals"]
    assert who["identifiers"][0].endswith(":role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling")


# --- A single host with archive {} -------------------------------------------------------------------


def test_a_single_host_with_archive_keeps_its_eni_target_and_gets_the_bucket(solo):
    assert one(solo, "aws_ec2_traffic_mirror_target")["network_interface_id"] == "${aws_network_interface.mirror_eni.id}"
    assert "aws_lb" not in solo["resource"] and "aws_autoscaling_group" not in solo["resource"]
    assert resources(solo, "aws_s3_bucket")["archive"]["bucket_prefix"] == "mirrorcap-solo-"
    (life,) = resources(solo, "aws_s3_bucket_lifecycle_configuration")["archive_lifecycle"]["rule"]
    assert life["expiration"] == [{"days": 15}]  # no retention_days: the host's
    assert resources(solo, "aws_iam_role_policy")["host_archive"]["role"] == "${aws_iam_role.host_role.name}"
    ud = one(solo, "aws_instance")["user_data_base64"]
    assert ud.endswith(f"{{volume_id = aws_ebs_volume.pcap_volume.id, eni_id = aws_network_interface.mirror_eni.id, "
                       f"{ARCHIVE_BUCKET_VAR} = aws_s3_bucket.archive.bucket}}))}}")
    assert "archive_bucket" in solo["output"] and "instance_id" in solo["output"]
    assert "AutoScalingEncryptsTheFleetsVolumes" not in json.dumps(solo["data"]["aws_iam_policy_document"]["pcap_key_policy"])


def test_a_capture_without_archive_passes_no_bucket_and_has_none(example):
    doc = stack_json(example, "prod")
    assert ARCHIVE_BUCKET_VAR not in one(doc, "aws_instance")["user_data_base64"]
    assert "aws_s3_bucket" not in doc["resource"] and "host_archive" not in resources(doc, "aws_iam_role_policy")


def test_every_reference_in_the_fleet_stacks_names_a_declared_resource(doc, solo):
    for d in (doc, solo):
        declared = {f"{t}.{n}" for t, named in d["resource"].items() for n in named} | \
                   {f"data.{t}.{n}" for t, named in d["data"].items() for n in named}
        text = json.dumps({"resource": d["resource"], "data": d["data"], "output": d["output"]})
        used = set(re.findall(r"\b((?:data\.)?aws_[a-z0-9_]+\.[a-z0-9_]+)(?=[.\[])", text))
        assert used <= declared, used - declared


def test_a_thousand_sources_are_one_stack_and_one_session_resource(tmp_path):
    text = (FIXTURES / "fleet.hcl").read_text()
    text = text[:text.index('capture "solo"')]  # the fleet alone
    many = "".join(f'  source {{\n    eni_id = "eni-{n:017x}"\n  }}\n' for n in range(1000))
    text = text.replace("  auto_mirror {", many + "  auto_mirror {", 1)
    write(tmp_path, text)
    assert mirrorcap("sessions", "--write", cwd=tmp_path).returncode == 0
    r = synth(tmp_path, review_hcl=False)
    assert r.returncode == 0, r.stderr
    assert [p.name for p in (tmp_path / "cdktf.out" / "stacks").iterdir()] == ["fleet"]
    doc = stack_json(tmp_path, "fleet")
    # One resource whose for_each is a variable: every session in one plan, each addressed by its source ID.
    assert list(resources(doc, "aws_ec2_traffic_mirror_session")) == ["source"]
    assert len(sessions_of(doc, stack_values(tmp_path, "fleet"))) == 1003
    assert doc["output"]["session_ids"]["value"] == \
        "${{for source, session in aws_ec2_traffic_mirror_session.source : source => session.id}}"
