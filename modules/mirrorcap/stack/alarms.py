"""Alarms that page someone when capture breaks, on the metrics every host publishes.

mirrorcap-metrics (on the host, once a minute) publishes contract.METRIC_* into
contract.METRICS_NAMESPACE, each datum also under the capture's own dimensions:
the alarms read those, so a replaced host, or any host of a fleet, feeds the
same series. The alarms notify the inventory's `alarms { topic_arn }`, or a
topic the stack creates, encrypted with a key of its own that CloudWatch may use
(the AWS-managed aws/sns key refuses CloudWatch: its alarms would go nowhere).
The hosts' role may put metric data into that namespace and no other.
"""

from __future__ import annotations

import math

from cdktn import TerraformStack, TerraformVariable, Token
from cdktn_provider_aws.cloudwatch_metric_alarm import CloudwatchMetricAlarm
from cdktn_provider_aws.iam_role_policy import IamRolePolicy
from cdktn_provider_aws.kms_alias import KmsAlias
from cdktn_provider_aws.kms_key import KmsKey
from cdktn_provider_aws.sns_topic import SnsTopic

from .. import contract as c
from .. import stack_data
from ..backlog import archive_backlog_seconds
from ..inventory.model import Capture
from .kms import KEY_ADMIN_ACTIONS
from .policy import policy_document
from .refs import EACH_KEY, ref
from .tags import named

ALARMS = "alarms"  # the created topic's and its key's Name: resource_name(capture, ALARMS)
# Two of three minutes without a capturing datapoint: a tcpdump the capture restarts at once
# (one bad minute) does not page; a capture that stays down, or a host that went silent, does.
NOT_CAPTURING_PERIODS, NOT_CAPTURING_DATAPOINTS = 3, 2
# Retention holds free space at min_free_percent, dipping under it between runs: half of it,
# five minutes running, means retention cannot keep up (an archive backlog, other files).
DISK_LOW_PERIODS = 5
BACKLOG_PERIODS = 2


def topic_key_policy(*, partition: str, account: str, region: str) -> dict:
    account_root = f"arn:{partition}:iam::{account}:root"
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "AccountAdministersTheKey", "Effect": "Allow", "Principal": {"AWS": account_root},
         "Action": KEY_ADMIN_ACTIONS, "Resource": "*"},
        {"Sid": "UseOnlyThroughSns", "Effect": "Allow", "Principal": {"AWS": account_root},
         "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*",
         "Condition": {"StringEquals": {"kms:ViaService": f"sns.{region}.amazonaws.com", "kms:CallerAccount": account}}},
        # CloudWatch publishes the alarms to the encrypted topic.
        {"Sid": "CloudWatchPublishesAlarms", "Effect": "Allow", "Principal": {"Service": "cloudwatch.amazonaws.com"},
         "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*"},
    ]}


def metrics_policy() -> dict:
    """The hosts' PutMetricData: only into mirrorcap's namespace (PutMetricData has no resource to name)."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "PublishHealthMetrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
         "Condition": {"StringEquals": {"cloudwatch:namespace": c.METRICS_NAMESPACE}}},
    ]}


# The VNIs are data (stack_data.py): the per-VNI alarms are keyed by VNI, `each.key` the VNI as text.
VNI_KEYS = "${toset([for vni in var.%s : tostring(vni)])}" % stack_data.VNIS
VNI_COUNT = "length(var.%s)" % stack_data.VNIS


def alarm_specs(capture: Capture) -> list[dict]:
    """(logical ID and) arguments of every alarm, topic aside. A spec with `for_each` is one alarm per VNI."""
    name, period = capture.name, c.METRICS_PERIOD_SECONDS
    vni = EACH_KEY
    dims = {c.DIM_CAPTURE: name, c.DIM_VNI: vni}
    (down, _), (lost, _) = stack_data.VNI_ALARMS
    specs = [dict(
        id=down, for_each=VNI_KEYS, alarm_name=c.resource_name(name, f"not-capturing-vni{vni}"),
        alarm_description=f"mirrorcap {name}: VNI {vni} is not being captured (tcpdump not running or not writing), "
                          "or no host reports it: mirrorcap-health on the host says why",
        metric_name=c.METRIC_CAPTURING, dimensions=dims, statistic="Minimum", period=period,
        evaluation_periods=NOT_CAPTURING_PERIODS, datapoints_to_alarm=NOT_CAPTURING_DATAPOINTS,
        comparison_operator="LessThanThreshold", threshold=1, treat_missing_data="breaching"), dict(
        id=lost, for_each=VNI_KEYS, alarm_name=c.resource_name(name, f"packets-lost-vni{vni}"),
        alarm_description=f"mirrorcap {name}: VNI {vni} lost packets (kernel drops or capture gaps): "
                          "mirrorcap-health's drops and writing checks say how many and why",
        metric_name=c.METRIC_PACKETS_LOST, dimensions=dims, statistic="Sum", period=period, evaluation_periods=1,
        comparison_operator="GreaterThanThreshold", threshold=0, treat_missing_data="notBreaching")]
    floor = capture.host.min_free_percent / 2
    specs.append(dict(
        id="alarm_disk_free_low", alarm_name=c.resource_name(name, "disk-free-low"),
        alarm_description=f"mirrorcap {name}: the pcap volume has under {floor:g}% free for {DISK_LOW_PERIODS} minutes "
                          f"(retention keeps {capture.host.min_free_percent}%): see mirrorcap-health's disk check",
        metric_name=c.METRIC_DISK_FREE, dimensions={c.DIM_CAPTURE: name}, statistic="Minimum", period=period,
        evaluation_periods=DISK_LOW_PERIODS, comparison_operator="LessThanThreshold", threshold=floor,
        treat_missing_data="notBreaching"))
    if capture.archive is not None:
        # More closed pcaps than rotations fit in health's backlog bound: the oldest waits longer than it.
        # per VNI: the VNIs are data, so the count is Terraform's
        most = f"{VNI_COUNT} * {math.ceil(archive_backlog_seconds(capture) / capture.host.rotate_seconds)}"
        specs.append(dict(
            id="alarm_archive_backlog", alarm_name=c.resource_name(name, "archive-backlog"),
            alarm_description=f"mirrorcap {name}: over ${{{most}}} closed pcaps wait for their upload to S3: "
                              "see mirrorcap-health's archive check (the uploader's last error)",
            metric_name=c.METRIC_ARCHIVE_BACKLOG, dimensions={c.DIM_CAPTURE: name}, statistic="Maximum", period=period,
            evaluation_periods=BACKLOG_PERIODS, comparison_operator="GreaterThanThreshold", threshold=Token.as_number(f"${{{most}}}"),
            treat_missing_data="notBreaching"))
    return specs


class CaptureAlarms:
    def __init__(self, stack: TerraformStack, capture: Capture, *, partition: str, account: str, host_role_name: str):
        IamRolePolicy(stack, "host_metrics", name=c.resource_name(capture.name, "metrics"), role=host_role_name,
                      policy=policy_document(stack, "host_metrics_permissions", metrics_policy()))
        topic = capture.alarms.topic_arn
        if topic is None:
            KmsKey(stack, "alarm_key", description=f"mirrorcap {capture.name}: the alarm topic", enable_key_rotation=True,
                   deletion_window_in_days=30, policy=policy_document(stack, "alarm_key_policy", topic_key_policy(
                       partition=partition, account=account, region=capture.region)),
                   tags=named(capture, ALARMS))
            KmsAlias(stack, "alarm_key_alias", name=f"alias/mirrorcap-{capture.name}-alarms",
                     target_key_id=ref("aws_kms_key", "alarm_key", "key_id"))
            SnsTopic(stack, "alarm_topic", name=c.resource_name(capture.name, ALARMS),
                     kms_master_key_id=ref("aws_kms_key", "alarm_key", "arn"), tags=named(capture, ALARMS))
            topic = ref("aws_sns_topic", "alarm_topic", "arn")
        self.topic_arn = topic
        var_type, description = stack_data.VARIABLES[stack_data.VNIS]
        TerraformVariable(stack, stack_data.VNIS, type=var_type, nullable=False, description=description)
        for spec in alarm_specs(capture):
            spec = dict(spec)
            for_each = spec.pop("for_each", None)
            alarm = CloudwatchMetricAlarm(stack, spec.pop("id"), namespace=c.METRICS_NAMESPACE, alarm_actions=[topic],
                                          ok_actions=[topic], tags={"Name": spec["alarm_name"]}, **spec)
            if for_each:
                alarm.add_override("for_each", for_each)
