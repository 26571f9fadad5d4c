"""Inventory file (HCL) -> validated `Inventory`. The single entry point for input.

Every mistake is reported as file + field + fix, all at once, and nothing is
written anywhere while loading.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import posixpath
import re
import unicodedata
from collections import Counter
from datetime import datetime
from pathlib import Path

from .. import aws_limits as L
from .. import regions
from ..contract import OWN_TAG_KEYS, OWN_TAG_PREFIX
from .model import Alarms, Archive, AutoMirror, Backend, Capture, Fleet, FilterRule, Host, Inventory, Network, PortRange, Source, Storage, TagSource
from ..errors import Collector, Problem
from .fields import Block
from .hclfile import parse_hcl, read_hcl_text


HEX_ID = r"(?:[0-9a-f]{8}|[0-9a-f]{17})"
ID_PATTERNS = {
    "eni": (rf"eni-{HEX_ID}", "an ENI ID (eni- and 8 or 17 hex digits)"),
    "instance": (rf"i-{HEX_ID}", "an instance ID (i- and 8 or 17 hex digits)"),
    "sg": (rf"sg-{HEX_ID}", "a security group ID (sg- and 8 or 17 hex digits)"),
    "subnet": (rf"subnet-{HEX_ID}", "a subnet ID (subnet- and 8 or 17 hex digits)"),
    "vpc": (rf"vpc-{HEX_ID}", "a VPC ID (vpc- and 8 or 17 hex digits)"),
    "ami": (rf"ami-{HEX_ID}", "an AMI ID (ami- and 8 or 17 hex digits)"),
    "pl": (rf"pl-{HEX_ID}", "a managed prefix list ID (pl- and 8 or 17 hex digits)"),
}
KMS_KEY = r"(?:arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(?:key/[0-9a-f-]{36}|alias/[A-Za-z0-9/_-]+)|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|alias/[A-Za-z0-9/_-]+)"
REGION = r"[a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-\d"
STACK_NAME = r"[a-z][a-z0-9-]{0,31}"
INSTANCE_TYPE = r"[a-z][a-z0-9-]*\.[a-z0-9]+"
# S3's naming rules for a general purpose bucket (S3 User Guide, "General purpose bucket naming rules").
S3_BUCKET = (r"(?!\d+\.\d+\.\d+\.\d+$)(?!xn--|sthree-|amzn-s3-demo-)(?!.*\.\.)(?!.*(?:-s3alias|--ol-s3|\.mrap|--x-s3|--table-s3)$)"
             r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# Backend settings cannot be escaped like other text: Terraform reads them from
# cdk.tf.json literally, OpenTofu as templates. So what the two would read
# differently (`${`, `%{`), or cdk.tf cannot show (quotes, backslashes, control
# characters), is refused.
STATE_CHAR = r'(?:(?![$%]\{)[^"\\\x00-\x1f\x7f])'
STATE_TEXT = "without quotes, backslashes, control characters, `${` or `%{` (backend settings are not templates)"

PROTOCOLS = {"all": None, "tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}

CAPTURE_FIELDS = {
    "region", "vpc_id", "subnet_id", "instance_type", "ami", "root_volume_gib", "vni",
    "max_sources_per_target", "tags", "storage", "network", "filter", "source", "host", "backend", "auto_mirror",
    "fleet", "archive", "alarms",
}
ROLE_ARN = r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+"
# A standard SNS topic's ARN (CloudWatch alarm actions cannot publish to a FIFO topic).
SNS_TOPIC_ARN = r"arn:aws[a-z-]*:sns:([a-z0-9-]+):\d{12}:[A-Za-z0-9_-]{1,256}"
# Instance sizes that cannot run the capture (t3.micro froze under tshark in the hand-built runbook).
TOO_SMALL = ("nano", "micro")


def _id(kind: str) -> dict:
    pattern, what = ID_PATTERNS[kind]
    return {"pattern": pattern, "what": what}


def load(path: str | Path) -> Inventory:
    """The validated inventory at `path`. A command may ask for it more than once (find, the deploy
    checks): the file is read each time, and parsed and validated once per name and text."""
    path = Path(path)
    return _validated(str(path), read_hcl_text(path))


@functools.lru_cache(maxsize=4)  # an Inventory is immutable (frozen dataclasses, tuples): shared safely
def _validated(name: str, text: str) -> Inventory:
    path = Path(name)
    raw = parse_hcl(text, name)
    errors = Collector(str(path))
    top = Block(errors, "", raw, {"capture"})
    captures = []
    entries = top.blocks("capture")
    if not entries and not errors.problems:
        errors.add("capture", "no `capture \"<name>\" { ... }` block", 'add one, e.g. capture "prod" { region = "..." ... } (see capture.hcl in the repository)')
    for entry in entries:
        if not isinstance(entry, dict) or len(entry) != 1:
            errors.add("capture", "a capture block needs exactly one name label", 'write capture "prod" { ... }')
            continue
        (name, body), = entry.items()
        captures.append(_capture(errors, name, body))
    _check_across_captures(errors, captures)
    errors.raise_if_any()
    return Inventory(path=str(path), captures=tuple(captures))


def capture_block(name: str, body, source: str) -> Capture:
    """One capture block's values (review.inventory_captures) as `load` reads them, with its own checks
    (not those across captures), or a MirrorcapError naming `source`: e.g. a block another revision had."""
    errors = Collector(source)
    capture = _capture(errors, name, body)
    errors.raise_if_any()
    return capture


def unbaked(inventory: Inventory) -> list[Problem]:
    """What cannot be deployed though it is valid: a capture without the AMI its host boots.
    (render and make bake need no AMI: the first bake makes it.)"""
    return [Problem(str(inventory.path), f'capture "{c.name}" > ami', "missing: the capture host boots an AMI with its bake.sh baked in",
                    f'bake it (make bake CAPTURE={c.name} prints the line), then write ami = "ami-..." here')
            for c in inventory.captures if not c.ami]


def _capture(errors: Collector, name: str, body) -> Capture:
    path = f'capture "{name}"'
    if not re.fullmatch(STACK_NAME, name):
        errors.add(path, f"capture name {name!r} is not usable as a stack name",
                   "use 1-32 characters: lowercase letters, digits and dashes, starting with a letter (e.g. \"prod\")")
    b = Block(errors, path, body, CAPTURE_FIELDS)
    region = _region(b, "region", required=True)
    instance_type = b.string("instance_type", Capture.instance_type, pattern=INSTANCE_TYPE, what="an EC2 instance type", fix='write e.g. instance_type = "t3.small"')
    if instance_type.rsplit(".", 1)[-1] in TOO_SMALL:
        errors.add(f"{path} > instance_type", f"{instance_type} is too small for a capture host (t3.micro froze under tshark; "
                   "tcpdump, its watcher and the archive's uploader need the memory)", 'use t3.small or larger, e.g. instance_type = "t3.small"')
    fleet = _fleet(errors, path, b.single_block("fleet")) if b.has("fleet") else None
    archive = _archive(errors, path, region, b.single_block("archive")) if b.has("archive") else None
    if fleet:
        # An NLB target takes any number of sources: the account's session quota bounds them.
        if b.has("max_sources_per_target"):
            errors.add(f"{path} > max_sources_per_target", "a fleet's target is a Network Load Balancer, which has no source limit",
                       "remove max_sources_per_target")
        if b.has("subnet_id"):
            errors.add(f"{path} > subnet_id", "a fleet's hosts are placed in fleet.subnet_ids", "remove subnet_id (list the subnets in fleet { subnet_ids = [...] })")
        if archive is None:
            errors.add(f"{path} > fleet", "a fleet's hosts come and go with their volumes: without an archive their pcaps go with them",
                       "add `archive {}` (every closed pcap is uploaded to an S3 bucket the stack creates)")
        max_sources = L.SESSIONS_PER_ACCOUNT
    else:
        max_sources = b.integer("max_sources_per_target", L.sources_per_target(instance_type), lo=1, hi=L.SOURCES_PER_ENI_TARGET_LARGE,
                                fix="set 10, or 100 only if the Traffic Mirroring quotas page lists your instance type")
    rules, services = _filter(errors, path, b.single_block("filter"))
    storage = _storage(errors, path, region, b.single_block("storage"))
    storage_gib = storage.size_gib
    sources, tag_sources = _sources(errors, path, b.blocks("source"), max_sources, instance_type)
    auto_mirror = _auto_mirror(errors, path, b.blocks("auto_mirror"))
    if tag_sources and auto_mirror is None:
        errors.add(f"{path} > source", "sources selected by tags are mirrored at runtime, and nothing here does that",
                   "add `auto_mirror {}` to this capture (deploys the re-mirroring Lambda), or list the sources by eni_id/instance_id")
    return Capture(
        name=name,
        region=region,
        vpc_id=b.string("vpc_id", required=True, **_id("vpc"), fix='write vpc_id = "vpc-..." (the VPC of the production instances)'),
        subnet_id="" if fleet else b.string("subnet_id", required=True, **_id("subnet"),
                                            fix='write subnet_id = "subnet-..." (a subnet in the VPC, ideally the production subnet)'),
        instance_type=instance_type,
        ami=b.string("ami", **_id("ami"), fix=f'write ami = "ami-..." (make bake CAPTURE={name} prints the line)') or None,
        root_volume_gib=b.integer("root_volume_gib", Capture.root_volume_gib, lo=8, hi=1024),
        vni=b.integer("vni", required=True, lo=L.VNI_MIN, hi=L.VNI_MAX,
                      fix=f"set vni = <{L.VNI_MIN}-{L.VNI_MAX}>: the VXLAN ID the sessions stamp and the host decapsulates"),
        max_sources_per_target=max_sources,
        storage=storage,
        network=_network(errors, path, b.single_block("network")),
        filter_rules=rules,
        filter_network_services=services,
        sources=sources,
        tag_sources=tag_sources,
        auto_mirror=auto_mirror,
        host=_host(errors, path, b.single_block("host"), storage_gib),
        tags=_tags(errors, b),
        backend=_backend(errors, path, name, region, b.blocks("backend")),
        fleet=fleet,
        archive=archive,
        alarms=_alarms(errors, path, region, b.single_block("alarms")),
    )


def _region(b: Block, key: str, *, required: bool = False, default: str = "") -> str:
    """A region the pinned botocore knows (regions.known), with the nearest names as the fix."""
    value = b.string(key, default, required=required, pattern=REGION, what="an AWS region name", fix=f'write e.g. {key} = "ap-northeast-1"')
    if value and value not in regions.known():
        close = difflib.get_close_matches(value, sorted(regions.known()), n=3)
        b.errors.add(b.field(key), f"{value!r} is not an AWS region this mirrorcap knows",
                     ("did you mean " + " or ".join(close) + "? " if close else "") +
                     "use a region's code (aws ec2 describe-regions); a region newer than this mirrorcap's botocore needs an update")
        return default
    return value


def _fleet(errors: Collector, parent: str, body) -> Fleet:
    path = f"{parent} > fleet"
    b = Block(errors, path, body, {"subnet_ids", "min_per_az", "desired_per_az", "max_per_az", "cross_zone"})
    subnets = b.string_list("subnet_ids", **_id("subnet"), fix="use the subnet-... IDs, one per Availability Zone the sources run in")
    if not subnets and not errors.problems_at(path):
        errors.add(f"{path} > subnet_ids", "a fleet needs at least one subnet", 'write subnet_ids = ["subnet-...", ...], one per Availability Zone')
    for i, sid in enumerate(subnets):
        if sid in subnets[:i]:
            errors.add(f"{path} > subnet_ids[{i}]", f"{sid} is listed twice", "list each subnet once")
    if len(subnets) > L.MAX_AZS:
        errors.add(f"{path} > subnet_ids", f"{len(subnets)} subnets: a fleet takes one per Availability Zone and no region has more "
                   f"than {L.MAX_AZS}", f"list at most {L.MAX_AZS} subnets, one in each AZ the sources run in")
    lo = b.integer("min_per_az", Fleet.min_per_az, lo=0, hi=L.MAX_HOSTS_PER_AZ)
    hi = b.integer("max_per_az", Fleet.max_per_az, lo=1, hi=L.MAX_HOSTS_PER_AZ)
    desired = b.integer("desired_per_az", Fleet.desired_per_az, lo=0, hi=L.MAX_HOSTS_PER_AZ)
    if desired == 0:
        errors.add(f"{path} > desired_per_az", "0 hosts: the NLB would drop every mirrored packet while the sessions still cost",
                   "set desired_per_az = 1 or more; to stop capturing, remove the sources (or the capture) and deploy")
    elif not lo <= desired <= hi:
        errors.add(f"{path} > desired_per_az", f"hosts per AZ must be min <= desired <= max (here {lo} <= {desired} <= {hi})",
                   "raise max_per_az or lower min_per_az/desired_per_az")
    return Fleet(subnet_ids=subnets, min_per_az=lo, desired_per_az=desired, max_per_az=hi,
                 cross_zone=b.boolean("cross_zone", Fleet.cross_zone))


def _archive(errors: Collector, parent: str, region: str, body) -> Archive:
    b = Block(errors, f"{parent} > archive", body, {"retention_days", "reader_role_arns"})
    days = b.integer("retention_days", 0, lo=1, hi=36500) if b.has("retention_days") else None
    readers = b.string_list("reader_role_arns", pattern=ROLE_ARN, what="an IAM role ARN",
                            fix="use arn:aws:iam::<account>:role/<name>: the roles allowed to read the pcaps")
    readers = tuple(arn for i, arn in enumerate(readers) if _in_partition(b, f"reader_role_arns[{i}]", arn, region))
    return Archive(retention_days=days, reader_role_arns=readers)


def _in_partition(b: Block, key: str, arn: str, region: str) -> str:
    """`arn` if it is of the region's partition (arn:aws-cn:... is no role, key or topic of
    ap-northeast-1's account) or no ARN at all (a key ID, an alias), else "" and the problem."""
    want, got = regions.partition(region), arn.split(":")[1] if arn.startswith("arn:") else None
    if want is None or got is None or got == want:
        return arn
    b.errors.add(b.field(key), f"{arn} is an ARN of the {got} partition; the capture's region {region} is in {want}",
                 f"use the ARN of the same name in {want} (arn:{want}:...)")
    return ""


def _alarms(errors: Collector, parent: str, region: str, body) -> Alarms:
    b = Block(errors, f"{parent} > alarms", body, {"topic_arn"})
    fix = (f'write topic_arn = "arn:aws:sns:{region or "<region>"}:<account>:<topic>" (a standard topic in the capture\'s '
           "region whose key policy, if encrypted, lets cloudwatch.amazonaws.com use the key), or remove it: the stack "
           "creates an encrypted topic")
    arn = b.string("topic_arn", pattern=SNS_TOPIC_ARN, what="a standard SNS topic ARN", fix=fix)
    arn = arn and _in_partition(b, "topic_arn", arn, region)
    if arn and region and arn.split(":")[3] != region:
        errors.add(b.field("topic_arn"), f"the topic is in {arn.split(':')[3]}, the capture in {region}: "
                   "a CloudWatch alarm notifies a topic in its own region only", fix)
        arn = ""
    return Alarms(topic_arn=arn or None)


def _storage(errors: Collector, parent: str, region: str, body) -> Storage:
    b = Block(errors, f"{parent} > storage", body, {"size_gib", "type", "kms_key_id", "iops", "throughput_mibps", "prevent_destroy",
                                                      "expected_mbps"})
    vtype = b.string("type", Storage.type, pattern="st1|sc1|gp3", what="a supported volume type",
                     fix='use "st1" (default: cheap sequential throughput), "sc1" (colder, slower) or "gp3" (small, fast volumes)')
    lo, hi = L.VOLUME_SIZE_GIB[vtype]
    size = b.integer("size_gib", Storage.size_gib, lo=lo, hi=hi, fix=f"{vtype} volumes are {lo}-{hi} GiB: pick a size in that range")
    iops = b.integer("iops", 0, lo=3000, hi=80000) or None
    throughput = b.integer("throughput_mibps", 0, lo=125, hi=2000) or None
    if vtype != "gp3" and (iops or throughput):
        errors.add(f"{parent} > storage", "iops/throughput_mibps only apply to gp3", "remove them, or set type = \"gp3\"")
    return Storage(
        size_gib=size, type=vtype,
        kms_key_id=_in_partition(b, "kms_key_id", b.string("kms_key_id", pattern=KMS_KEY, what="a KMS key ID, alias or ARN",
                                 fix="use a key ARN, key ID, or alias/NAME; remove it to have the stack create a dedicated key for the capture"),
                                 region) or None,
        iops=iops, throughput_mibps=throughput,
        prevent_destroy=b.boolean("prevent_destroy", Storage.prevent_destroy),
        expected_mbps=b.integer("expected_mbps", 0, lo=1, hi=100_000,
                                fix="the average mirrored traffic in Mbit/s (1-100000), or remove it") or None,
    )


def _network(errors: Collector, parent: str, body) -> Network:
    path = f"{parent} > network"
    b = Block(errors, path, body, {"mirror_source_cidrs", "mirror_source_security_group_ids", "egress_cidrs", "egress_prefix_list_ids"})
    cidrs = b.cidr_list("mirror_source_cidrs")
    sgs = b.string_list("mirror_source_security_group_ids", **_id("sg"), fix="use the sg-... ID of the production instances' security group")
    if not cidrs and not sgs and not errors.problems_at(path):
        errors.add(path + " > mirror_source_cidrs", "no mirror source allowed: the security group would drop all VXLAN traffic",
                   'set mirror_source_cidrs = ["<production subnet CIDR>"] and/or mirror_source_security_group_ids = ["sg-..."]')
    for i, c in enumerate(cidrs):
        if ipaddress.ip_network(c).prefixlen == 0:
            errors.add(f"{path} > mirror_source_cidrs[{i}]", f"{c} lets anyone send VXLAN to the capture host",
                       "narrow it to the production subnet or VPC CIDR")
    egress = b.cidr_list("egress_cidrs") if b.has("egress_cidrs") else Network.egress_cidrs
    pls = b.string_list("egress_prefix_list_ids", **_id("pl"), fix="use a pl-... ID (e.g. the S3 gateway endpoint's prefix list)")
    if not egress and not pls:
        errors.add(path + " > egress_cidrs", "no HTTPS egress: SSM Session Manager and package installs cannot work",
                   'allow at least your VPC endpoints\' CIDR, e.g. egress_cidrs = ["10.0.0.0/16"], or a prefix list')
    return Network(mirror_source_cidrs=cidrs, mirror_source_security_group_ids=sgs, egress_cidrs=egress, egress_prefix_list_ids=pls)


def _ports(b: Block, key: str, protocol) -> PortRange | None:
    value = b.data.get(key)
    if value is None:
        return None
    field = b.field(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= 65535 for p in value)
            or value[0] > value[1]):
        b.errors.add(field, f"{value!r} is not a port or port range", f"write {key} = 443 or {key} = [1024, 65535] (from <= to, 0-65535)")
        return None
    if protocol not in (6, 17):
        b.errors.add(field, "ports only apply to TCP and UDP rules", 'set protocol = "tcp" or "udp", or remove the ports')
        return None
    return PortRange(value[0], value[1])


def _filter(errors: Collector, parent: str, body) -> tuple[tuple[FilterRule, ...], tuple[str, ...]]:
    path = f"{parent} > filter"
    b = Block(errors, path, body, {"rule", "network_services"})
    services = b.string_list("network_services", pattern="amazon-dns", what='"amazon-dns"', fix='the only network service AWS mirrors is "amazon-dns"')
    raw_rules = b.blocks("rule")
    if not raw_rules:
        # The post's filter: accept everything, both directions.
        return (FilterRule("ingress", 100, description="accept all inbound"),
                FilterRule("egress", 100, description="accept all outbound")), services
    if len(raw_rules) > L.RULES_PER_FILTER:
        errors.add(f"{path} > rule", f"{len(raw_rules)} rules; AWS allows at most {L.RULES_PER_FILTER} rules per filter",
                   "merge rules (wider CIDRs or port ranges) or drop some")
    rules = []
    next_number = Counter()
    for i, raw in enumerate(raw_rules):
        rb = Block(errors, f"{path} > rule[{i}]", raw, {"direction", "action", "protocol", "source_cidr", "destination_cidr",
                                                        "source_ports", "destination_ports", "rule_number", "description"})
        direction = rb.string("direction", "ingress", required=True, pattern="ingress|egress", what='"ingress" or "egress"',
                              fix='set direction = "ingress" (traffic into the source) or "egress" (traffic out of it)')
        action = rb.string("action", FilterRule.action, pattern="accept|reject", what='"accept" or "reject"', fix='use "accept" or "reject"')
        protocol = _protocol(rb)
        src = rb.cidr("source_cidr", "0.0.0.0/0")
        dst = rb.cidr("destination_cidr", "0.0.0.0/0")
        if ipaddress.ip_network(src).version != ipaddress.ip_network(dst).version:
            errors.add(rb.path, f"source_cidr {src} and destination_cidr {dst} are different IP versions",
                       "use two IPv4 or two IPv6 CIDRs in one rule (add a second rule for the other version)")
        next_number[direction] += 100
        number = rb.integer("rule_number", next_number[direction], lo=L.RULE_NUMBER_MIN, hi=L.RULE_NUMBER_MAX)
        rules.append(FilterRule(
            direction=direction, rule_number=number, action=action, protocol=protocol,
            source_cidr=src, destination_cidr=dst,
            source_ports=_ports(rb, "source_ports", protocol), destination_ports=_ports(rb, "destination_ports", protocol),
            description=_description(rb),
        ))
    seen: dict[tuple[str, int], int] = {}
    for i, r in enumerate(rules):
        key = (r.direction, r.rule_number)
        if key in seen:
            errors.add(f"{path} > rule[{i}] > rule_number", f"{r.direction} rule number {r.rule_number} is also used by rule[{seen[key]}]",
                       "rule numbers must be unique per direction: change one of them")
        seen.setdefault(key, i)
    if rules and all(r.action == "reject" for r in rules):
        errors.add(f"{path} > rule", "every rule rejects: nothing would be mirrored", "add at least one accept rule")
    return tuple(rules), services


def _protocol(rb: Block):
    value = rb.data.get("protocol")
    if value is None:
        return None
    if isinstance(value, str) and value.lower() in PROTOCOLS:
        return PROTOCOLS[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
        return value
    rb.errors.add(rb.field("protocol"), f"{value!r} is not a protocol", 'use "all", "tcp", "udp", "icmp", or an IANA protocol number 0-255')
    return None


def _sources(errors: Collector, parent: str, raw_sources: list, limit: int,
             instance_type: str) -> tuple[tuple[Source, ...], tuple[TagSource, ...]]:
    path = f"{parent} > source"
    sources = []
    tag_sources: list[TagSource] = []
    seen: dict[str, int] = {}
    seen_tags: dict[tuple, int] = {}
    for i, raw in enumerate(raw_sources):
        sb = Block(errors, f"{path}[{i}]", raw, {"eni_id", "instance_id", "tags", "session_number", "packet_length", "vni", "description"})
        if sb.has("tags"):
            ts = _tag_source(sb)
            if ts is None:
                continue
            if ts.tags in seen_tags:
                errors.add(f"{sb.path} > tags", f"the same tags are already selected by source[{seen_tags[ts.tags]}]",
                           "remove the duplicate selector")
                continue
            seen_tags[ts.tags] = i
            tag_sources.append(ts)
            continue
        eni = sb.string("eni_id", **_id("eni"), fix="copy the ID from `aws ec2 describe-network-interfaces` (eni- and 8 or 17 hex digits)")
        inst = sb.string("instance_id", **_id("instance"), fix="copy the ID from `aws ec2 describe-instances` (i- and 8 or 17 hex digits)")
        if sb.has("eni_id") == sb.has("instance_id"):
            errors.add(sb.path, "a source needs exactly one of eni_id, instance_id or tags",
                       "set eni_id = \"eni-...\" for a network interface, instance_id = \"i-...\" to mirror its primary interface, "
                       "or tags = { Service = \"web\" } to mirror every matching instance")
        source_id = eni or inst
        if not source_id:
            continue
        if source_id in seen:
            errors.add(f"{sb.path} > {'eni_id' if eni else 'instance_id'}", f"{source_id} is already listed as source[{seen[source_id]}]",
                       "remove the duplicate: one capture mirrors a source once")
            continue
        seen[source_id] = i
        sources.append(Source(
            id=source_id,
            session_number=sb.integer("session_number", 0, lo=L.SESSION_NUMBER_MIN, hi=L.SESSION_NUMBER_MAX) or None,
            packet_length=_packet_length(sb),
            vni=sb.integer("vni", -1, lo=L.VNI_MIN, hi=L.VNI_MAX) if sb.has("vni") else None,
            description=_description(sb),
        ))
    if len(sources) > limit:
        errors.add(path, f"{len(sources)} sources, but an ENI target on {instance_type} accepts at most {limit} "
                   f"(AWS would fail with TrafficMirrorSourcesPerTargetLimitExceeded)",
                   "split the sources over two capture blocks (two capture hosts), or use an instance type the Traffic Mirroring quotas page lists for 100 sources")
    return tuple(sources), tuple(tag_sources)


def _packet_length(sb: Block) -> int | None:
    return sb.integer("packet_length", 0, lo=L.PACKET_LENGTH_MIN, hi=L.PACKET_LENGTH_MAX,
                      fix=f"use {L.PACKET_LENGTH_MIN}-{L.PACKET_LENGTH_MAX} bytes, or remove it to mirror whole packets") or None


def _tag_source(sb: Block) -> TagSource | None:
    tags = sb.string_map("tags")
    if not tags:
        sb.errors.add(sb.field("tags"), "an empty tag selector would mirror every instance in the VPC",
                      'select by at least one tag, e.g. tags = { Service = "web", Environment = "prod" }')
        return None
    for key in ("eni_id", "instance_id", "session_number"):
        if sb.has(key):
            fix = ("remove it: numbers for tag-selected instances are chosen at runtime, lowest free on each ENI"
                   if key == "session_number" else "use one source block per selector: either tags or an ID")
            sb.errors.add(sb.field(key), f"`{key}` cannot be combined with `tags`", fix)
            return None
    return TagSource(tags=tags, packet_length=_packet_length(sb),
                     vni=sb.integer("vni", -1, lo=L.VNI_MIN, hi=L.VNI_MAX) if sb.has("vni") else None,
                     description=_description(sb))


def _auto_mirror(errors: Collector, parent: str, entries: list) -> AutoMirror | None:
    if not entries:
        return None
    path = f"{parent} > auto_mirror"
    if len(entries) > 1:
        errors.add(path, f"`auto_mirror` block given {len(entries)} times", "merge them into one `auto_mirror { ... }` block")
    b = Block(errors, path, entries[0], {"deploy_lambda", "sweep_minutes", "ends_at", "max_concurrency"})
    ends_at = None
    raw = b.string("ends_at")
    if raw:
        try:
            ends_at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            ends_at = None
        if ends_at is None or ends_at.tzinfo is None:
            errors.add(b.field("ends_at"), f"{raw!r} is not a date and time with a time zone",
                       'write RFC 3339 with an offset, e.g. ends_at = "2026-12-01T18:00:00+09:00" or "2026-12-01T09:00:00Z"')
            ends_at = None
    return AutoMirror(
        deploy_lambda=b.boolean("deploy_lambda", AutoMirror.deploy_lambda),
        sweep_minutes=b.integer("sweep_minutes", AutoMirror.sweep_minutes, lo=1, hi=1440, fix="1 to 1440 minutes between scheduled reconciles"),
        ends_at=ends_at,
        max_concurrency=b.integer("max_concurrency", AutoMirror.max_concurrency, lo=1, hi=10,
                                  fix="1-10 concurrent re-mirroring invocations (reserved concurrency)"),
    )


def _host(errors: Collector, parent: str, body, volume_gib: int) -> Host:
    b = Block(errors, f"{parent} > host", body, {"rotate_seconds", "retention_days", "min_free_percent", "min_free_gib",
                                                 "stale_after_seconds", "buffer_kib", "snaplen", "capture_dir"})
    # A floor near the volume's size leaves pcaps no room: retention would delete every pcap but the
    # newest. At most 90% of it, like min_free_percent.
    most = volume_gib * 9 // 10
    min_free_gib = b.integer("min_free_gib", Host.min_free_gib, lo=0, hi=most,
                             fix=f"keep at most {most} GiB (90%) of the pcap volume's {volume_gib} GiB free, or grow "
                                 "storage > size_gib (0 = percent floor only)")
    return Host(
        min_free_gib=min_free_gib,
        stale_after_seconds=b.integer("stale_after_seconds", Host.stale_after_seconds, lo=30, hi=86400,
                                      fix="30 s to 1 day: how old the newest pcap may get before mirrorcap-health calls it stale"),
        rotate_seconds=b.integer("rotate_seconds", Host.rotate_seconds, lo=30, hi=86400, fix="rotate every 30 s to 1 day (600 = 10 minutes)"),
        retention_days=b.integer("retention_days", Host.retention_days, lo=1, hi=3650),
        min_free_percent=b.integer("min_free_percent", Host.min_free_percent, lo=1, hi=90, fix="keep 1-90 percent of the pcap volume free"),
        buffer_kib=b.integer("buffer_kib", Host.buffer_kib, lo=256, hi=1048576),
        snaplen=b.integer("snaplen", Host.snaplen, lo=0, hi=262144, fix="0 captures whole packets; otherwise bytes per packet"),
        capture_dir=_capture_dir(errors, b),
    )


# The storage unit mounts the pcap volume over capture_dir and makes it 2750
# mirrorcap:pcap: never a system directory, nor one inside a tree the OS owns.
SYSTEM_TREES = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/efi", "/dev", "/proc",
                "/sys", "/run", "/tmp", "/var/tmp", "/var/run", "/var/lock", "/root", "/home", "/snap")
SYSTEM_DIRS = ("/var", "/var/log", "/var/lib", "/var/cache", "/var/spool", "/var/mail", "/var/opt", "/var/local",
               "/opt", "/srv", "/mnt", "/media")


def capture_dir_problem(path: str) -> str | None:
    """Why `path` cannot be the capture directory, or None."""
    if not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", path):
        return "not an absolute directory path of letters, digits, '.', '_' and '-'"
    if any(part in (".", "..") for part in path.split("/")):
        return "not normalized ('.' or '..' in it)"
    if path in SYSTEM_DIRS or any(path == t or path.startswith(t + "/") for t in SYSTEM_TREES):
        return "a system directory or inside one: the pcap volume is mounted over it and its mode changed"
    return None


def _capture_dir(errors: Collector, b: Block) -> str:
    default = Host.capture_dir
    value = b.string("capture_dir", default)
    problem = capture_dir_problem(value)
    if problem:
        errors.add(b.field("capture_dir"), f"{value!r} is {problem}",
                   "use a dedicated directory, e.g. /var/log/tcpdump or /srv/pcaps")
        return default
    return value




def _tag_text_problem(text: str) -> str | None:
    bad = sorted({ch for ch in text if not (ch.isalnum() or unicodedata.category(ch).startswith("Z") or ch in L.TAG_SYMBOLS)})
    return f"has characters AWS tags do not allow: {' '.join(repr(c) for c in bad)}" if bad else None


def _tags(errors: Collector, b: Block) -> tuple[tuple[str, str], ...]:
    tags = b.string_map("tags")
    most = L.TAGS_PER_RESOURCE - len(OWN_TAG_KEYS)
    if len(tags) > most:
        errors.add(f"{b.path} > tags", f"{len(tags)} tags: EC2 allows {L.TAGS_PER_RESOURCE} per resource and mirrorcap adds {len(OWN_TAG_KEYS)} of its own",
                   f"keep at most {most} tags")
    for k, v in tags:
        field = f"{b.path} > tags.{k}"
        problem = _tag_text_problem(k) or _tag_text_problem(v)
        if k.lower().startswith("aws:"):
            errors.add(field, "tag keys starting with aws: are reserved by AWS", "rename the tag")
        elif k.startswith(OWN_TAG_PREFIX):
            errors.add(field, f"tag keys starting with {OWN_TAG_PREFIX} are set by mirrorcap itself (ownership)", "rename the tag")
        elif not k or len(k) > L.TAG_KEY_MAX or len(v) > L.TAG_VALUE_MAX:
            errors.add(field, f"tag keys are 1-{L.TAG_KEY_MAX} and values 0-{L.TAG_VALUE_MAX} characters", "shorten it")
        elif problem:
            errors.add(field, f"the tag {problem}", f"use letters, digits, spaces and {' '.join(L.TAG_SYMBOLS)}")
    return tags


def _description(b: Block, key: str = "description") -> str:
    text = b.string(key)
    control = any(unicodedata.category(ch) == "Cc" for ch in text)
    if control or len(text) > L.DESCRIPTION_MAX:
        what = "has control characters (a newline, a tab...)" if control else f"is {len(text)} characters long"
        b.errors.add(b.field(key), f"the description {what}", f"write one line of at most {L.DESCRIPTION_MAX} characters")
        return ""
    return text


def _backend(errors: Collector, parent: str, name: str, region: str, entries: list) -> Backend:
    path = f"{parent} > backend"
    if not entries:
        # Relative to the stack's working directory (cdktf.out/stacks/<name>): the state
        # lands in the project root, and the synthesized file stays the same on every machine.
        return Backend(kind="local", path=f"../../../terraform.{name}.tfstate")
    if len(entries) > 1 or not isinstance(entries[0], dict) or len(entries[0]) != 1:
        errors.add(path, "give exactly one backend block with a type label", 'write backend "s3" { bucket = "..." } once')
        return Backend(kind="local")
    (kind, body), = entries[0].items()
    bpath = f'{path} "{kind}"'
    if kind == "local":
        b = Block(errors, bpath, body, {"path"})
        # Relative to the stack's directory; a .tfstate file, never any other file Terraform would overwrite.
        fix = f'write a path relative to cdktf.out/stacks/{name}, ending in .tfstate, e.g. path = "../../../terraform.{name}.tfstate"'
        default = f"../../../terraform.{name}.tfstate"
        state = b.string("path", default, pattern=rf"(?!/){STATE_CHAR}*\.tfstate", what=f"a relative path to a .tfstate file {STATE_TEXT}",
                         fix=fix)
        # ... inside the project: `../../../../../../etc/cron.d/x.tfstate` is a file cron would run.
        if posixpath.normpath(posixpath.join("cdktf.out/stacks", name, state)).startswith("../"):
            errors.add(b.field("path"), f"{state!r} leaves the project directory (three levels up from cdktf.out/stacks/{name})",
                       fix + " (at most three `../`: the state stays in the project)")
            state = default
        return Backend(kind="local", path=state)
    if kind != "s3":
        errors.add(bpath, f"backend type {kind!r} is not supported", 'use backend "s3" (remote state) or remove the block for local state')
        return Backend(kind="local")
    b = Block(errors, bpath, body, {"bucket", "key", "region", "use_lockfile", "dynamodb_table", "encrypt", "kms_key_id", "role_arn"})
    dynamodb = b.string("dynamodb_table", pattern=r"[A-Za-z0-9_.-]{3,255}", what="a DynamoDB table name", fix="use the lock table's name")
    backend = Backend(
        kind="s3",
        bucket=b.string("bucket", required=True, pattern=S3_BUCKET, what="an S3 bucket name (S3's naming rules)",
                        fix="set bucket = \"<existing state bucket>\": 3-63 lowercase letters, digits, dots, dashes, starting and "
                            "ending with a letter or digit, not shaped like an IP address, no '..', no prefix xn--/sthree-"),
        key=b.string("key", f"mirrorcap/{name}.tfstate", pattern=rf"(?!/)(?!.*//)(?:(?!\s){STATE_CHAR})+\.tfstate",
                     what=f"a state object key ending in .tfstate, not starting with '/', no '//', {STATE_TEXT}",
                     fix=f'e.g. key = "mirrorcap/{name}.tfstate"'),
        region=(state_region := _region(b, "region", default=region)),
        # S3 native locking (Terraform/OpenTofu >= 1.10) unless the user kept a DynamoDB lock table.
        use_lockfile=b.boolean("use_lockfile", not dynamodb),
        dynamodb_table=dynamodb,
        encrypt=b.boolean("encrypt", Backend.encrypt),
        kms_key_id=_in_partition(b, "kms_key_id", b.string("kms_key_id", pattern=KMS_KEY, what="a KMS key ID, alias or ARN",
                                                           fix="use a key ARN or remove it"), state_region),
        role_arn=_in_partition(b, "role_arn", b.string("role_arn", pattern=ROLE_ARN, what="an IAM role ARN",
                                                       fix="use arn:aws:iam::<account>:role/<name>"), state_region),
    )
    if not backend.encrypt:
        errors.add(f"{bpath} > encrypt", "state holds resource IDs and must be encrypted at rest", "remove `encrypt = false`")
    if not backend.use_lockfile and not backend.dynamodb_table:
        errors.add(f"{bpath} > use_lockfile", "state without locking: two deploys at once can corrupt it", "keep use_lockfile = true, or set dynamodb_table")
    return backend


def _check_across_captures(errors: Collector, captures: list[Capture]) -> None:
    names = Counter(c.name for c in captures)
    for n, count in names.items():
        if count > 1:
            errors.add(f'capture "{n}"', f"{count} capture blocks are named {n!r}", "give each capture block its own name: each becomes its own stack")
    state = Counter((c.backend.kind, c.backend.bucket, c.backend.key, c.backend.path) for c in captures)
    for c in captures:
        if state[(c.backend.kind, c.backend.bucket, c.backend.key, c.backend.path)] > 1 and names[c.name] == 1:
            errors.add(f'capture "{c.name}" > backend', "another capture uses the same state location",
                       "give each capture its own state key (e.g. mirrorcap/<name>.tfstate)")
    # A source in more sessions than AWS allows is numbering's rule (numbering/sessions.py),
    # which validate, render and synth all run.
