"""The capture's alarms, their topic and the hosts' PutMetricData, as synthesized."""

from __future__ import annotations

import json

from helpers import instances, stack_json, stack_values, terraform_evaluates
from mirrorcap import contract


def resources(doc: dict, kind: str) -> dict:
    return {k: {a: b for a, b in v.items() if a != "//"} for k, v in doc["resource"].get(kind, {}).items()}


def statements(doc: dict, name: str) -> dict:
    return {s["sid"]: s for s in doc["data"]["aws_iam_policy_document"][name]["statement"]}


def test_a_created_topic_is_encrypted_with_a_key_cloudwatch_may_use(example):
    doc = stack_json(example, "prod")
    (topic,) = resources(doc, "aws_sns_topic").values()
    assert topic["kms_master_key_id"] == "${aws_kms_key.alarm_key.arn}" and topic["name"] == "mirrorcap-prod-alarms"
    key = resources(doc, "aws_kms_key")["alarm_key"]
    assert key["enable_key_rotation"] is True and key["policy"] == "${data.aws_iam_policy_document.alarm_key_policy.json}"
    cw = statements(doc, "alarm_key_policy")["CloudWatchPublishesAlarms"]
    assert cw["principals"] == [{"type": "Service", "identifiers": ["cloudwatch.amazonaws.com"]}]
    assert sorted(cw["actions"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    use = statements(doc, "alarm_key_policy")["UseOnlyThroughSns"]
    assert {"test": "StringEquals", "variable": "kms:ViaService", "values": ["sns.ap-northeast-1.amazonaws.com"]} in use["condition"]
    assert doc["output"]["alarm_topic_arn"]["value"] == "${aws_sns_topic.alarm_topic.arn}"


def test_the_hosts_may_put_metric_data_into_mirrorcaps_namespace_only(example):
    doc = stack_json(example, "prod")
    policy = resources(doc, "aws_iam_role_policy")["host_metrics"]
    assert policy["role"] == "${aws_iam_role.host_role.name}"
    (s,) = doc["data"]["aws_iam_policy_document"]["host_metrics_permissions"]["statement"]
    assert s["actions"] == ["cloudwatch:PutMetricData"] and s["effect"] == "Allow"
    assert s["condition"] == [{"test": "StringEquals", "variable": "cloudwatch:namespace", "values": [contract.METRICS_NAMESPACE]}]


def test_every_vni_pages_when_not_captured_or_losing_packets_and_a_silent_host_counts_as_down(example):
    doc = stack_json(example, "prod")
    # One alarm of each per VNI, keyed by it: the VNIs are the stack's data (stack_data.py)
    alarms = instances(doc, stack_values(example, "prod"), "aws_cloudwatch_metric_alarm")
    vni = "12345"
    down = alarms[f'alarm_not_capturing["{vni}"]']
    assert down == {
        "alarm_name": f"mirrorcap-prod-not-capturing-vni{vni}", "alarm_description": down["alarm_description"],
        "namespace": contract.METRICS_NAMESPACE, "metric_name": contract.METRIC_CAPTURING,
        "dimensions": {contract.DIM_CAPTURE: "prod", contract.DIM_VNI: vni}, "statistic": "Minimum", "period": 60,
        "evaluation_periods": 3, "datapoints_to_alarm": 2, "comparison_operator": "LessThanThreshold", "threshold": 1,
        "treat_missing_data": "breaching", "alarm_actions": ["${aws_sns_topic.alarm_topic.arn}"],
        "ok_actions": ["${aws_sns_topic.alarm_topic.arn}"], "tags": {"Name": f"mirrorcap-prod-not-capturing-vni{vni}"}}
    lost = alarms[f'alarm_packets_lost["{vni}"]']
    assert (lost["metric_name"], lost["statistic"], lost["comparison_operator"], lost["threshold"], lost["treat_missing_data"]) == (
        contract.METRIC_PACKETS_LOST, "Sum", "GreaterThanThreshold", 0, "notBreaching")
    disk = alarms["alarm_disk_free_low"]
    assert (disk["metric_name"], disk["dimensions"], disk["comparison_operator"], disk["threshold"]) == (
        contract.METRIC_DISK_FREE, {contract.DIM_CAPTURE: "prod"}, "LessThanThreshold", 5)  # half of min_free_percent 10
    assert "alarm_archive_backlog" not in alarms  # no archive here


def test_a_named_topic_is_used_as_written_and_no_topic_or_key_is_created(edge):
    doc = stack_json(edge, "green")
    assert "aws_sns_topic" not in doc["resource"] and "alarm_key" not in doc["resource"].get("aws_kms_key", {})
    arn = "arn:aws:sns:us-east-1:111122223333:ops-pages"
    for a in resources(doc, "aws_cloudwatch_metric_alarm").values():
        assert a["alarm_actions"] == a["ok_actions"] == [arn]
    assert doc["output"]["alarm_topic_arn"]["value"] == arn


def test_a_fleet_that_archives_alarms_on_its_backlog_across_its_hosts(fleet, tmp_path):
    doc = stack_json(fleet, "fleet")
    alarms = resources(doc, "aws_cloudwatch_metric_alarm")
    backlog = alarms["alarm_archive_backlog"]
    assert backlog["metric_name"] == contract.METRIC_ARCHIVE_BACKLOG and backlog["statistic"] == "Maximum"
    assert backlog["dimensions"] == {contract.DIM_CAPTURE: "fleet"}  # whichever host holds the backlog
    assert backlog["comparison_operator"] == "GreaterThanThreshold"
    # The VNIs are data: Terraform counts them.
    got = terraform_evaluates(fleet / "cdktf.out" / "stacks" / "fleet",
                              {"threshold": backlog["threshold"], "description": backlog["alarm_description"]}, tmp_path / "tf")
    # 8: 2 VNIs x the rotations (600 s) in health's backlog bound (3 rotations + 360 s): 2 x ceil(2160 / 600)
    assert got["threshold"] == 8 and "over 8 closed pcaps" in got["description"]
    assert json.dumps(alarms).count(contract.DIM_INSTANCE) == 0 and json.dumps(alarms).count(contract.DIM_FLEET) == 0
