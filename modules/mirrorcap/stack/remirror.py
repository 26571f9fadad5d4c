"""Re-mirroring: a Lambda that mirrors new instances matching the tag sources.

Triggered by EC2 "running" state changes, Auto Scaling "EC2 Instance Launch
Successful" events and a schedule (lost events, campaign end). Its IAM policy
repeats the ownership rule of the code: it can only delete sessions tagged as
its own, and can only create sessions that carry that tag.
"""

from __future__ import annotations

import json

from cdktn import AssetType, Fn, TerraformAsset, TerraformStack
from cdktn_provider_aws.cloudwatch_event_rule import CloudwatchEventRule
from cdktn_provider_aws.cloudwatch_event_target import CloudwatchEventTarget, CloudwatchEventTargetRetryPolicy
from cdktn_provider_aws.cloudwatch_log_group import CloudwatchLogGroup
from cdktn_provider_aws.iam_role import IamRole
from cdktn_provider_aws.iam_role_policy import IamRolePolicy
from cdktn_provider_aws.lambda_function import LambdaFunction, LambdaFunctionEnvironment, LambdaFunctionLoggingConfig
from cdktn_provider_aws.lambda_permission import LambdaPermission

from ..inventory.model import Capture
from ..contract import RUNTIME_OWNER_KEY, resource_name
from .lambda_zip import HANDLER
from ..remirror_settings import settings_for
from .literal import literal
from .policy import policy_document
from .tags import named

RUNTIME = "python3.12"
LOG_RETENTION_DAYS = 365
EVENT_PATTERNS = {
    # EC2 sends this for every instance; the function filters by tags itself
    # (the event carries no tags).
    "remirror_on_running": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"],
                            "detail": {"state": ["running"]}},
    "remirror_on_asg_launch": {"source": ["aws.autoscaling"], "detail-type": ["EC2 Instance Launch Successful"]},
}
ASSUME_LAMBDA = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}, sort_keys=True)


def policy(capture: Capture, *, partition: str, account: str, target_id: str, filter_id: str, log_group_arn: str) -> dict:
    arn = f"arn:{partition}:ec2:{capture.region}:{account}"
    owner = {f"aws:RequestTag/{RUNTIME_OWNER_KEY}": capture.name}
    return {"Version": "2012-10-17", "Statement": [
        # Describe* calls have no resource-level permissions in EC2.
        {"Sid": "Read", "Effect": "Allow", "Resource": "*",
         "Action": ["ec2:DescribeInstances", "ec2:DescribeNetworkInterfaces", "ec2:DescribeTrafficMirrorSessions"]},
        {"Sid": "CreateOwnedSessionsOnThisTarget", "Effect": "Allow", "Action": "ec2:CreateTrafficMirrorSession",
         "Resource": f"{arn}:traffic-mirror-session/*", "Condition": {"StringEquals": owner}},
        {"Sid": "WithThisTargetAndFilter", "Effect": "Allow", "Action": "ec2:CreateTrafficMirrorSession",
         "Resource": [f"{arn}:traffic-mirror-target/{target_id}", f"{arn}:traffic-mirror-filter/{filter_id}"]},
        # Mirroring is reading traffic: only the capture's own VPC may be a source, whatever the code decides.
        {"Sid": "FromInterfacesInTheCapturesVpc", "Effect": "Allow", "Action": "ec2:CreateTrafficMirrorSession",
         "Resource": f"{arn}:network-interface/*",
         "Condition": {"StringEquals": {"ec2:Vpc": f"{arn}:vpc/{capture.vpc_id}"}}},
        {"Sid": "TagOnlyAtCreation", "Effect": "Allow", "Action": "ec2:CreateTags",
         "Resource": f"{arn}:traffic-mirror-session/*",
         "Condition": {"StringEquals": {"ec2:CreateAction": "CreateTrafficMirrorSession"}}},
        {"Sid": "DeleteOnlyOwnedSessions", "Effect": "Allow", "Action": "ec2:DeleteTrafficMirrorSession",
         "Resource": f"{arn}:traffic-mirror-session/*",
         "Condition": {"StringEquals": {f"aws:ResourceTag/{RUNTIME_OWNER_KEY}": capture.name}}},
        {"Sid": "Logs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": f"{log_group_arn}:*"},
    ]}


class Remirror:
    def __init__(self, stack: TerraformStack, capture: Capture, *, partition: str, account: str, target_id: str,
                 filter_id: str, package_zip: str):
        am = capture.auto_mirror
        name = resource_name(capture.name, "remirror")
        logs = CloudwatchLogGroup(stack, "remirror_logs", name=f"/aws/lambda/{name}", retention_in_days=LOG_RETENTION_DAYS,
                                  tags=named(capture, "remirror"))
        log_group_arn = logs.arn
        role = IamRole(stack, "remirror_role", name=name, description="mirrorcap re-mirroring Lambda",
                       assume_role_policy=ASSUME_LAMBDA, tags=named(capture, "remirror"))
        role_name = role.name
        permissions = policy(capture, partition=partition, account=account, target_id=target_id, filter_id=filter_id,
                             log_group_arn=log_group_arn)
        IamRolePolicy(stack, "remirror_policy", name=name, role=role_name,
                      policy=policy_document(stack, "remirror_permissions", permissions))

        code = TerraformAsset(stack, "remirror_code", path=package_zip, type=AssetType.FILE)
        # The written-out references stay expressions; the rest (tag selectors) is inventory text.
        env = {k: v if v in (target_id, filter_id) else literal(v, typed=True)
               for k, v in settings_for(capture, target_id=target_id, filter_id=filter_id).to_env().items()}
        fn = LambdaFunction(
            stack, "remirror", function_name=name, description=f"mirrorcap {capture.name}: mirror new instances matching the tag sources",
            role=role.arn, runtime=RUNTIME, handler=HANDLER, architectures=["arm64"], filename=code.path,
            source_code_hash=Fn.filebase64sha256(code.path), timeout=120, memory_size=128,
            reserved_concurrent_executions=am.max_concurrency,
            environment=LambdaFunctionEnvironment(variables=dict(sorted(env.items()))),
            logging_config=LambdaFunctionLoggingConfig(log_format="Text", log_group=logs.name),
            depends_on=[logs], tags=named(capture, "remirror"))
        fn_arn, fn_name = fn.arn, fn.function_name

        rules = {rid: {"event_pattern": json.dumps(pattern, sort_keys=True)} for rid, pattern in EVENT_PATTERNS.items()}
        rules["remirror_sweep"] = {"schedule_expression": f"rate({am.sweep_minutes} minute{'s' if am.sweep_minutes > 1 else ''})"}
        for rid, trigger in rules.items():
            rule = CloudwatchEventRule(stack, rid, name=resource_name(capture.name, rid.replace('_', '-')),
                                       description=f"mirrorcap {capture.name}: invoke the re-mirroring Lambda",
                                       tags=named(capture, rid.replace("_", "-")), **trigger)
            rule_name, rule_arn = rule.name, rule.arn
            # Retries are cheap (every run reconciles everything) and stale events are harmless.
            CloudwatchEventTarget(stack, f"{rid}_target", rule=rule_name, arn=fn_arn,
                                  retry_policy=CloudwatchEventTargetRetryPolicy(maximum_event_age_in_seconds=3600, maximum_retry_attempts=10))
            LambdaPermission(stack, f"{rid}_invoke", action="lambda:InvokeFunction", function_name=fn_name,
                             principal="events.amazonaws.com", source_arn=rule_arn)
        self.function_name = fn_name
