"""A moto account built from a synthesized stack's own Terraform JSON (cdk.tf.json).

The live-account tests (`mirrorcap check`, `mirrorcap window`) must read what
Terraform would have created, not what the code under test expects to find: so
every resource is made here from the JSON the stack synthesized, with its names,
its references and its tags as Terraform applies them (the provider's
default_tags merged under the resource's own `tags`; an Auto Scaling group only
its `tag` blocks, which default_tags never reach). A name changed on one side
(stack or check) then fails a test.

Each resource type a stack declares is either built (BUILDERS) or listed in
NOT_READ with why no check reads it: a stack declaring any other type fails
`build`, so a new kind of resource is a decision, never silently skipped.
Expressions are evaluated, not pattern-matched: references to resources and
data sources, `each`, `local`, `var` (the stack's sessions.auto.tfvars.json), `lookup(...)`,
`toset(...)`, `contains(...) ? a : b` and string literals;
anything else raises, naming it.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

MOTO_ID = re.compile(r"\b(?:vpc|subnet|sg|i|eni|ami)-[0-9a-f]{8,17}\b")

# Declared by the stacks, read by no live check (`mirrorcap check`, `mirrorcap window`).
NOT_READ = {
    "aws_ec2_traffic_mirror_filter_rule": "moto 5.2 does not implement filter rules; no check reads them",
    "aws_iam_role": "IAM: no check reads it", "aws_iam_role_policy": "IAM", "aws_iam_role_policy_attachment": "IAM",
    "aws_iam_instance_profile": "IAM", "aws_kms_key": "the volumes' key: no check reads it", "aws_kms_alias": "KMS",
    "aws_lambda_function": "the re-mirroring Lambda's runtime is tested on its own (tests/aws/test_remirror_aws.py)",
    "aws_lambda_permission": "Lambda", "aws_cloudwatch_event_rule": "EventBridge", "aws_cloudwatch_event_target": "EventBridge",
    "aws_cloudwatch_log_group": "logs",
    "aws_s3_bucket_policy": "bucket settings: window reads the bucket by its name and tags only",
    "aws_s3_bucket_public_access_block": "bucket settings", "aws_s3_bucket_ownership_controls": "bucket settings",
    "aws_s3_bucket_versioning": "bucket settings", "aws_s3_bucket_server_side_encryption_configuration": "bucket settings",
    "aws_s3_bucket_lifecycle_configuration": "bucket settings",
    "aws_cloudwatch_metric_alarm": "the alarms: evaluated against a booted host's metrics (tests/host/test_health_alarms.py)",
    "aws_sns_topic": "the alarms' topic: no check reads it",
    # `mirrorcap find --engine athena` queries these; moto runs no query, so tests/aws/test_find_athena.py
    # makes the workgroup by its contract name and answers from the synthesized table, rebuilt in DuckDB.
    "aws_athena_workgroup": "no check reads it; find --engine athena names it (tests/aws/test_find_athena.py)",
    "aws_glue_catalog_database": "Athena's catalog: no check reads it",
    "aws_glue_catalog_table": "Athena's table: no check reads it (tests/synth/test_athena_synth.py runs Athena's SQL on it)",
}


class Unsupported(Exception):
    pass


def substitute(text: str, ids: dict[str, str]) -> str:
    """The inventory's IDs swapped for the fake account's (whole IDs: i-... is inside eni-...)."""
    return MOTO_ID.sub(lambda m: ids.get(m.group(0), m.group(0)), text)


def _hcl_string(text: str, i: int) -> tuple[str, int]:
    """The HCL quoted string literal starting at text[i] (a quote): (its value, the index after it)."""
    out, i = [], i + 1
    escapes = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}
    while text[i] != '"':
        if text[i] == "\\":
            if text[i + 1] == "u":
                out.append(chr(int(text[i + 2:i + 6], 16)))
                i += 6
            else:
                out.append(escapes[text[i + 1]])
                i += 2
        elif text.startswith(("$${", "%%{"), i):
            out.append(text[i] + "{")
            i += 3
        else:
            out.append(text[i])
            i += 1
    return "".join(out), i + 1


def _interpolation_end(text: str, start: int) -> int:
    """Index of the `}` closing the interpolation whose body starts at `start` (quotes and braces skipped)."""
    depth, i = 0, start
    while True:
        c = text[i]
        if c == '"':
            _, i = _hcl_string(text, i)
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1


@dataclass
class Account:
    """build() the stack `doc` (its IDs already those of the fake account) with `client(service)`."""

    doc: dict
    client: Callable[[str], Any]
    variables: dict = field(default_factory=dict)  # the stack's sessions.auto.tfvars.json
    built: dict = field(default_factory=dict)  # (type, name) -> attributes (for_each: key -> attributes)
    read: dict = field(default_factory=dict)  # (type, name) -> data source attributes
    _each: list = field(default_factory=list)  # the (key, value) of the for_each instance being built

    # --- expressions ---------------------------------------------------------------------------

    def value(self, v: Any) -> Any:
        if isinstance(v, dict):
            return {self.value(k): self.value(x) for k, x in v.items()}
        if isinstance(v, list):
            return [self.value(x) for x in v]
        return self.template(v) if isinstance(v, str) else v

    def template(self, text: str) -> Any:
        """A Terraform string template; one that is a single interpolation keeps its value's type."""
        parts, i = [], 0
        while i < len(text):
            if text.startswith(("$${", "%%{"), i):
                parts.append(text[i] + "{")
                i += 3
            elif text.startswith("${", i):
                end = _interpolation_end(text, i + 2)
                parts.append(self.expression(text[i + 2:end].strip()))
                i = end + 1
            elif text.startswith("%{", i):
                raise Unsupported(f"template directive in {text!r}")
            else:
                parts.append(text[i])
                i += 1
        if len(parts) == 1 and not isinstance(parts[0], str):
            return parts[0]
        return "".join(p if isinstance(p, str) else json.dumps(p) if isinstance(p, (dict, list)) else str(p) for p in parts)

    def expression(self, expr: str) -> Any:
        if expr.startswith('"'):
            text, end = _hcl_string(expr, 0)
            if end != len(expr):
                raise Unsupported(expr)
            inner = expr[1:-1]
            if "${" in inner.replace("$${", ""):  # a quoted template: its interpolations evaluated
                if "\\" in inner or '"' in inner:
                    raise Unsupported(f"escapes in a quoted template {expr!r}")
                return self.template(inner)
            return text
        if expr == "null":
            return None
        if re.fullmatch(r"\d+", expr):
            return int(expr)
        if expr == "each.value":
            return self._each[-1][1]
        if m := re.fullmatch(r"lookup\(var\.(\w+), each\.key, (.+)\)", expr):  # a sparse map, else the default
            table, key = self.variables[m.group(1)], self._each[-1][0]
            return table[key] if key in table else self.expression(m.group(2))
        if m := re.fullmatch(r"toset\((.+)\)", expr):
            return sorted(set(self.expression(m.group(1))))
        if expr == "each.key":
            return self._each[-1][0]
        if m := re.fullmatch(r"local\.(\w+)", expr):
            return self.value(self.doc["locals"][m.group(1)])
        if m := re.fullmatch(r"var\.(\w+)", expr):
            return self.variables[m.group(1)]  # values, not templates (a .tfvars.json string is literal)
        if m := re.fullmatch(r"contains\((.+?), (.+?)\) \? (.+) : (.+)", expr):
            picked = m.group(3) if self.expression(m.group(2)) in self.expression(m.group(1)) else m.group(4)
            return self.expression(picked)
        if m := re.fullmatch(r'data\.(\w+)\.(\w+)(?:\["([^"]+)"\]|\[(each\.key)\])?\.(\w+)', expr):
            attrs = self.data(m.group(1), m.group(2))
            key = m.group(3) or (self.expression(m.group(4)) if m.group(4) else None)
            return (attrs[key] if key else attrs)[m.group(5)]
        if m := re.fullmatch(r"(aws_\w+)\.(\w+)\.(\w+)", expr):
            return self.resource(m.group(1), m.group(2))[m.group(3)]
        raise Unsupported(f"expression {expr!r}")

    def tags(self, body: dict) -> dict[str, str]:
        """tags_all: the provider's default_tags, then the resource's own."""
        provider = self.doc["provider"]["aws"][0]
        defaults = (provider.get("default_tags") or [{}])[0].get("tags", {})
        return {**self.value(defaults), **self.value(body.get("tags") or {})}

    @staticmethod
    def tag_list(tags: dict) -> list[dict]:
        return [{"Key": k, "Value": v} for k, v in tags.items()]

    def spec(self, kind: str, body: dict) -> list[dict]:
        return [{"ResourceType": kind, "Tags": self.tag_list(self.tags(body))}]

    # --- building ----------------------------------------------------------------------------

    def build(self, only=None) -> "Account":
        """Every resource a check reads, or those of the types in `only` (and what they reference)."""
        unknown = sorted(set(self.doc["resource"]) - set(BUILDERS) - set(NOT_READ))
        if unknown:
            raise Unsupported(f"the stack declares {unknown}: build them here or say in NOT_READ why no check reads them")
        for rtype in sorted(set(self.doc["resource"]) & set(BUILDERS) & set(only or BUILDERS)):
            for name in self.doc["resource"][rtype]:
                self.resource(rtype, name)
        return self

    @contextmanager
    def instance(self, key: str, value: Any):
        """Inside one for_each instance: `each.key` and `each.value` are these."""
        self._each.append((key, value))
        try:
            yield
        finally:
            self._each.pop()

    def resource(self, rtype: str, name: str) -> dict:
        if (rtype, name) not in self.built:
            if rtype not in BUILDERS:
                raise Unsupported(f"{rtype}.{name} is referenced but not built ({NOT_READ.get(rtype, 'unknown type')})")
            body = {k: v for k, v in self.doc["resource"][rtype][name].items() if k != "//"}
            each = body.pop("for_each", None)
            if each is None:
                self.built[(rtype, name)] = BUILDERS[rtype](self, name, body)
            else:
                out = {}
                for key, val in self.value(each).items():
                    with self.instance(key, val):
                        out[key] = BUILDERS[rtype](self, name, body)
                self.built[(rtype, name)] = out
        return self.built[(rtype, name)]

    def data(self, dtype: str, name: str) -> dict:
        if (dtype, name) not in self.read:
            body = {k: v for k, v in self.doc["data"][dtype][name].items() if k != "//"}
            each = body.pop("for_each", None)
            if each is None:
                self.read[(dtype, name)] = READERS[dtype](self, body)
            else:
                out = {}
                for key in self.value(each):
                    self._each.append((key, key))
                    try:
                        out[key] = READERS[dtype](self, body)
                    finally:
                        self._each.pop()
                self.read[(dtype, name)] = out
        return self.read[(dtype, name)]


# --- Data sources: read from the fake account ----------------------------------------------------

def _subnet(a: Account, body: dict) -> dict:
    s = a.client("ec2").describe_subnets(SubnetIds=[a.value(body["id"])])["Subnets"][0]
    return {"id": s["SubnetId"], "cidr_block": s["CidrBlock"], "availability_zone": s["AvailabilityZone"], "vpc_id": s["VpcId"]}


def _instance(a: Account, body: dict) -> dict:
    i = a.client("ec2").describe_instances(InstanceIds=[a.value(body["instance_id"])])["Reservations"][0]["Instances"][0]
    primary = next(n for n in i["NetworkInterfaces"] if n["Attachment"]["DeviceIndex"] == 0)
    return {"id": i["InstanceId"], "network_interface_id": primary["NetworkInterfaceId"]}


def _ssm_parameter(a: Account, body: dict) -> dict:
    p = a.client("ssm").get_parameter(Name=a.value(body["name"]))["Parameter"]
    return {"value": p["Value"], "insecure_value": p["Value"]}


def _ami(a: Account, body: dict) -> dict:
    (flt,) = a.value(body["filter"])
    (image,) = a.client("ec2").describe_images(Filters=[{"Name": flt["name"], "Values": flt["values"]}])["Images"]
    return {"id": image["ImageId"], "root_device_name": image["RootDeviceName"]}


def _caller(a: Account, body: dict) -> dict:
    return {"account_id": a.client("sts").get_caller_identity()["Account"]}


READERS = {"aws_subnet": _subnet, "aws_instance": _instance, "aws_ssm_parameter": _ssm_parameter, "aws_ami": _ami,
           "aws_caller_identity": _caller, "aws_partition": lambda a, body: {"partition": "aws"}}


# --- Resources: created in the fake account --------------------------------------------------------

def _security_group(a: Account, name: str, b: dict) -> dict:
    g = a.client("ec2").create_security_group(GroupName=a.value(b["name"]), Description=a.value(b["description"]),
                                              VpcId=a.value(b["vpc_id"]), TagSpecifications=a.spec("security-group", b))
    return {"id": g["GroupId"]}


def _network_interface(a: Account, name: str, b: dict) -> dict:
    n = a.client("ec2").create_network_interface(SubnetId=a.value(b["subnet_id"]), Groups=a.value(b.get("security_groups", [])),
                                                 Description=a.value(b.get("description", "")),
                                                 TagSpecifications=a.spec("network-interface", b))["NetworkInterface"]
    return {"id": n["NetworkInterfaceId"]}


def _instance_resource(a: Account, name: str, b: dict) -> dict:
    i = a.client("ec2").run_instances(ImageId=a.value(b["ami"]), InstanceType=a.value(b["instance_type"]), MinCount=1, MaxCount=1,
                                      SubnetId=a.value(b["subnet_id"]), SecurityGroupIds=a.value(b.get("vpc_security_group_ids", [])),
                                      TagSpecifications=a.spec("instance", b))["Instances"][0]
    return {"id": i["InstanceId"], "primary_network_interface_id": i["NetworkInterfaces"][0]["NetworkInterfaceId"]}


def _interface_attachment(a: Account, name: str, b: dict) -> dict:
    r = a.client("ec2").attach_network_interface(DeviceIndex=a.value(b["device_index"]), InstanceId=a.value(b["instance_id"]),
                                                 NetworkInterfaceId=a.value(b["network_interface_id"]))
    return {"id": r["AttachmentId"]}


def _volume(a: Account, name: str, b: dict) -> dict:
    v = a.client("ec2").create_volume(AvailabilityZone=a.value(b["availability_zone"]), Size=a.value(b["size"]),
                                      VolumeType=a.value(b["type"]), Encrypted=a.value(b.get("encrypted", False)),
                                      TagSpecifications=a.spec("volume", b))
    return {"id": v["VolumeId"]}


def _volume_attachment(a: Account, name: str, b: dict) -> dict:
    a.client("ec2").attach_volume(Device=a.value(b["device_name"]), InstanceId=a.value(b["instance_id"]), VolumeId=a.value(b["volume_id"]))
    return {"id": name}


def _generated_name(a: Account, prefix: str) -> str:
    """Terraform names an unnamed load balancer or target group itself (tf-lb-..., tf-...)."""
    return f"{prefix}{len(a.built):020d}"[:32]


def _lb(a: Account, name: str, b: dict) -> dict:
    lb = a.client("elbv2").create_load_balancer(
        Name=_generated_name(a, "tf-lb-"), Type=a.value(b["load_balancer_type"]), Scheme="internal" if a.value(b.get("internal")) else "internet-facing",
        Subnets=a.value(b["subnets"]), Tags=a.tag_list(a.tags(b)))["LoadBalancers"][0]
    return {"arn": lb["LoadBalancerArn"], "id": lb["LoadBalancerArn"]}


def _target_group(a: Account, name: str, b: dict) -> dict:
    hc = a.value(b.get("health_check") or {})
    tg = a.client("elbv2").create_target_group(
        Name=_generated_name(a, "tf-"), Protocol=a.value(b["protocol"]), Port=a.value(b["port"]), VpcId=a.value(b["vpc_id"]),
        TargetType=a.value(b["target_type"]), HealthCheckProtocol=hc.get("protocol", "TCP"), HealthCheckPort=str(hc.get("port", "traffic-port")),
        Tags=a.tag_list(a.tags(b)))["TargetGroups"][0]
    return {"arn": tg["TargetGroupArn"], "id": tg["TargetGroupArn"]}


def _listener(a: Account, name: str, b: dict) -> dict:
    actions = [{"Type": x["type"], "TargetGroupArn": x["target_group_arn"]} for x in a.value(b["default_action"])]
    listener = a.client("elbv2").create_listener(LoadBalancerArn=a.value(b["load_balancer_arn"]), Protocol=a.value(b["protocol"]),
                                                 Port=a.value(b["port"]), DefaultActions=actions,
                                                 Tags=a.tag_list(a.tags(b)))["Listeners"][0]
    return {"arn": listener["ListenerArn"], "id": listener["ListenerArn"]}


def _launch_template(a: Account, name: str, b: dict) -> dict:
    specs = [{"ResourceType": s["resource_type"], "Tags": a.tag_list(s["tags"])} for s in a.value(b.get("tag_specifications", []))]
    lt = a.client("ec2").create_launch_template(
        LaunchTemplateName=a.value(b["name"]), TagSpecifications=a.spec("launch-template", b),
        LaunchTemplateData={"ImageId": a.value(b["image_id"]), "InstanceType": a.value(b["instance_type"]), "TagSpecifications": specs},
    )["LaunchTemplate"]
    return {"id": lt["LaunchTemplateId"], "latest_version": str(lt["LatestVersionNumber"]), "name": lt["LaunchTemplateName"]}


def _autoscaling_group(a: Account, name: str, b: dict) -> dict:
    lt = a.value(b["launch_template"])
    tags = [{"Key": t["key"], "Value": t["value"], "PropagateAtLaunch": t["propagate_at_launch"]} for t in a.value(b.get("tag", []))]
    group = a.value(b["name"])
    a.client("autoscaling").create_auto_scaling_group(
        AutoScalingGroupName=group, MinSize=a.value(b["min_size"]), MaxSize=a.value(b["max_size"]),
        DesiredCapacity=a.value(b["desired_capacity"]), LaunchTemplate={"LaunchTemplateId": lt["id"], "Version": lt["version"]},
        VPCZoneIdentifier=",".join(a.value(b["vpc_zone_identifier"])), TargetGroupARNs=a.value(b.get("target_group_arns", [])),
        HealthCheckType=a.value(b.get("health_check_type", "EC2")), HealthCheckGracePeriod=a.value(b.get("health_check_grace_period", 300)),
        Tags=tags)
    return {"id": group, "name": group}


def _mirror_target(a: Account, name: str, b: dict) -> dict:
    where = ({"NetworkLoadBalancerArn": a.value(b["network_load_balancer_arn"])} if "network_load_balancer_arn" in b
             else {"NetworkInterfaceId": a.value(b["network_interface_id"])})
    t = a.client("ec2").create_traffic_mirror_target(**where, Description=a.value(b.get("description", "")),
                                                     TagSpecifications=a.spec("traffic-mirror-target", b))["TrafficMirrorTarget"]
    return {"id": t["TrafficMirrorTargetId"]}


def _mirror_filter(a: Account, name: str, b: dict) -> dict:
    f = a.client("ec2").create_traffic_mirror_filter(Description=a.value(b.get("description", "")),
                                                     TagSpecifications=a.spec("traffic-mirror-filter", b))["TrafficMirrorFilter"]
    return {"id": f["TrafficMirrorFilterId"]}


def _mirror_session(a: Account, name: str, b: dict) -> dict:
    optional = {"PacketLength": v for v in [a.value(b.get("packet_length"))] if v is not None}
    s = a.client("ec2").create_traffic_mirror_session(
        NetworkInterfaceId=a.value(b["network_interface_id"]), TrafficMirrorTargetId=a.value(b["traffic_mirror_target_id"]),
        TrafficMirrorFilterId=a.value(b["traffic_mirror_filter_id"]), SessionNumber=int(a.value(b["session_number"])),
        VirtualNetworkId=int(a.value(b["virtual_network_id"])), Description=a.value(b.get("description", "")), **optional,
        TagSpecifications=a.spec("traffic-mirror-session", b))["TrafficMirrorSession"]
    return {"id": s["TrafficMirrorSessionId"]}


def _bucket(a: Account, name: str, b: dict) -> dict:
    """bucket_prefix plus 26 characters, as Terraform names it."""
    s3 = a.client("s3")
    bucket = a.value(b["bucket"]) if "bucket" in b else a.value(b["bucket_prefix"]) + f"{len(a.built):026d}"
    region = a.doc["provider"]["aws"][0]["region"]
    s3.create_bucket(Bucket=bucket, **({"CreateBucketConfiguration": {"LocationConstraint": region}} if region != "us-east-1" else {}))
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": a.tag_list(a.tags(b))})
    return {"id": bucket, "bucket": bucket, "arn": f"arn:aws:s3:::{bucket}"}


BUILDERS = {
    "aws_security_group": _security_group, "aws_network_interface": _network_interface, "aws_instance": _instance_resource,
    "aws_network_interface_attachment": _interface_attachment, "aws_ebs_volume": _volume, "aws_volume_attachment": _volume_attachment,
    "aws_lb": _lb, "aws_lb_target_group": _target_group, "aws_lb_listener": _listener, "aws_launch_template": _launch_template,
    "aws_autoscaling_group": _autoscaling_group, "aws_ec2_traffic_mirror_target": _mirror_target,
    "aws_ec2_traffic_mirror_filter": _mirror_filter, "aws_ec2_traffic_mirror_session": _mirror_session, "aws_s3_bucket": _bucket,
}


def build(stack_json: str, ids: dict[str, str], client: Callable[[str], Any], only=None, values: str = "{}") -> Account:
    """The stack (cdk.tf.json's text, and its variables' values: sessions.auto.tfvars.json's, with the
    inventory's IDs) made in the fake account whose IDs `ids` maps them to."""
    doc, variables = json.loads(substitute(stack_json, ids)), json.loads(substitute(values, ids))
    for name, spec in doc.get("variable", {}).items():  # Terraform's conversion: an absent optional() attribute is null
        optional = re.findall(r"(\w+) = optional\(", spec.get("type", ""))
        if optional and isinstance(variables.get(name), dict):
            for element in variables[name].values():
                for attr in optional:
                    element.setdefault(attr, None)
    return Account(doc, client, variables).build(only)


def deploy(synthesized, work, ids: dict[str, str], client: Callable[[str], Any], stacks=(), only=None) -> dict[str, Account]:
    """Into `work`: the synthesized inventory and its lock with the fake account's IDs; into the
    fake account: each of `stacks` as its cdk.tf.json declares it (`only`: these resource types).
    Returns the built stacks."""
    for name in ("capture.hcl", "capture.lock.json"):
        (work / name).write_text(substitute((synthesized / name).read_text(), ids))
    stack = synthesized / "cdktf.out" / "stacks"
    return {s: build((stack / s / "cdk.tf.json").read_text(), ids, client, only, (stack / s / "sessions.auto.tfvars.json").read_text())
            for s in stacks}
