"""`mirrorcap check`: the inventory (and its tag selectors) against the live account.

Terraform-managed sessions (explicit sources) are reported with "deploy" as
the fix: `--fix` never writes what Terraform owns, or the next plan would
fight it. Runtime-owned sessions (tag sources) are fixed by the same planner
the Lambda runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Mapping

from botocore.exceptions import ClientError

from ..inventory.model import Capture
from ..remirror.ec2 import describe_enis, existing_enis, observe, sessions_where, tags_of
from .clients import (auto_scaling_group, describe_instances, load_balancers, primary_eni, target_groups, target_health,
                  traffic_mirror_filters, traffic_mirror_targets)
from ..contract import FILTER, FLEET, HEALTH_PORT, HOST, NLB, STACK_KEY, TARGET, TARGETS, resource_name, source_vni
from ..remirror.reconcile import plan
from ..remirror_settings import settings_for


@dataclass(frozen=True)
class Finding:
    capture: str
    kind: str  # not-deployed | host-not-running | fleet-not-deployed | fleet-capacity | target-unhealthy | target-unregistered | az-no-healthy-host | source-gone | missing-session | number-mismatch | vni-mismatch | dangling-session | runtime | limit | campaign-over
    subject: str
    detail: str
    fix: str
    fixable: bool = False  # by `mirrorcap check --fix`

    def as_dict(self) -> dict:
        return asdict(self)


def find_owned(items: list[dict], capture: str, name: str) -> dict | None:
    """The stack's resource: default_tags put mirrorcap:stack on it, the stack a Name."""
    for item in items:
        tags = tags_of(item)
        if tags.get(STACK_KEY) == capture and tags.get("Name") == name:
            return item
    return None


def locate(ec2, capture: Capture) -> tuple[str | None, str | None]:
    target = find_owned(traffic_mirror_targets(ec2), capture.name, resource_name(capture.name, TARGET))
    mfilter = find_owned(traffic_mirror_filters(ec2), capture.name, resource_name(capture.name, FILTER))
    return (target or {}).get("TrafficMirrorTargetId"), (mfilter or {}).get("TrafficMirrorFilterId")


def _source_eni(ec2, source_id: str) -> str | None:
    if not source_id.startswith("i-"):
        return source_id
    try:
        found = describe_instances(ec2, ids=[source_id])
    except ClientError as exc:
        if exc.response["Error"]["Code"].startswith("InvalidInstanceID"):
            return None
        raise
    instances = [i for i in found if i["State"]["Name"] != "terminated"]
    return primary_eni(instances[0]) if instances else None


def check_capture(ec2, capture: Capture, numbers: Mapping[str, int], now: datetime, fleet=None) -> list[Finding]:
    """fleet: the ELBv2 and Auto Scaling clients (account.aws.FleetClients) for a capture with `fleet {}`."""
    name = capture.name
    deploy = f"make deploy STACK={name}"
    target_id, filter_id = locate(ec2, capture)
    if not target_id or not filter_id:
        return [Finding(name, "not-deployed", resource_name(name, TARGET), "no traffic mirror target/filter tagged for this capture", deploy)]
    findings: list[Finding] = []

    if capture.fleet is not None:
        if fleet is None:
            raise ValueError("a fleet's drift check needs its ELBv2 and Auto Scaling clients")
        findings += check_fleet(ec2, fleet.elbv2, fleet.autoscaling, capture, target_id)
        hosts = live_hosts = []
    else:
        hosts = describe_instances(ec2, [{"Name": f"tag:{STACK_KEY}", "Values": [name]}, {"Name": "tag:Name", "Values": [resource_name(name, HOST)]}])
        live_hosts = [h for h in hosts if h["State"]["Name"] != "terminated"]
    if capture.fleet is None and (not live_hosts or live_hosts[0]["State"]["Name"] != "running"):
        state = live_hosts[0]["State"]["Name"] if live_hosts else "missing"
        subject = live_hosts[0]["InstanceId"] if live_hosts else resource_name(name, HOST)
        fix = f"aws ec2 start-instances --instance-ids {subject}" if state in ("stopped", "stopping") else deploy
        findings.append(Finding(name, "host-not-running", subject, f"capture instance is {state}: mirrored traffic is dropped", fix))

    on_target = sessions_where(ec2, "traffic-mirror-target-id", [target_id])
    live = existing_enis(ec2, [s.eni_id for s in on_target]) if on_target else frozenset()
    managed = [s for s in on_target if not s.owned_by(name)]
    for source in capture.sources:
        eni = _source_eni(ec2, source.id)
        if eni is None:
            findings.append(Finding(name, "source-gone", source.id, "instance no longer exists (replaced by a release or scaling?)",
                                    "select it by tags (source { tags = {...} } with auto_mirror {}) or update the ID, then " + deploy))
            continue
        session = next((s for s in managed if s.eni_id == eni), None)
        want_vni = source_vni(source.vni, capture.vni)
        if session is None:
            findings.append(Finding(name, "missing-session", source.id, f"{eni} has no session on {target_id}", deploy))
            continue
        if session.number != numbers.get(source.id):
            findings.append(Finding(name, "number-mismatch", session.id,
                                    f"session number {session.number}, lock file says {numbers.get(source.id)}", deploy))
        if session.vni != want_vni:
            findings.append(Finding(name, "vni-mismatch", session.id, f"VNI {session.vni}, inventory says {want_vni}", deploy))
    for s in managed:
        if s.eni_id not in live:
            findings.append(Finding(name, "dangling-session", s.id, f"source {s.eni_id} no longer exists; the session mirrors nothing",
                                    f"remove the source from the inventory and {deploy} (mirrorcap does not delete sessions it does not own)"))

    settings = settings_for(capture, target_id=target_id, filter_id=filter_id)
    changes = plan(settings, observe(ec2, settings), now)
    for c in changes.creates:
        findings.append(Finding(name, "missing-session", c.instance_id, f"matches the tag sources; {c.eni_id} is not mirrored",
                                "mirrorcap check --fix (or wait for the re-mirroring Lambda)", fixable=True))
    for d in changes.deletes:
        kind = "campaign-over" if d.reason.startswith("campaign") else "runtime"
        findings.append(Finding(name, kind, d.session_id, f"owned session on {d.eni_id}: {d.reason}", "mirrorcap check --fix", fixable=True))
    for note in changes.notes:
        findings.append(Finding(name, "limit", target_id, note, "split the sources over another capture, or narrow the tag selectors"))
    ended = capture.auto_mirror and capture.auto_mirror.ends_at and now >= capture.auto_mirror.ends_at
    if ended and managed:
        findings.append(Finding(name, "campaign-over", target_id,
                                f"campaign ended at {capture.auto_mirror.ends_at.isoformat()}; {len(managed)} Terraform-managed session(s) still cost money",
                                f"remove the explicit sources from the inventory and {deploy}"))
    return findings


# --- A fleet: the NLB's target group and the Auto Scaling group --------------

def _tagged(items: list[dict], capture: str, name: str) -> dict | None:
    """ELBv2 resources as account.aws lists them (Tags a dict)."""
    return next((i for i in items if i["Tags"].get(STACK_KEY) == capture and i["Tags"].get("Name") == name), None)


def fleet_capacity(capture: str, asg: dict) -> Finding | None:
    """Fewer hosts InService than the group's DesiredCapacity (as DescribeAutoScalingGroups states them)."""
    name = asg["AutoScalingGroupName"]
    instances = asg.get("Instances", [])
    in_service = [i for i in instances if i["LifecycleState"] == "InService"]
    if len(in_service) >= asg["DesiredCapacity"]:
        return None
    others = ", ".join(f"{i['InstanceId']} {i['LifecycleState']}" for i in instances if i not in in_service) or "none launched"
    return Finding(capture, "fleet-capacity", name, f"{len(in_service)} of {asg['DesiredCapacity']} desired host(s) in service ({others})",
                   f"aws autoscaling describe-scaling-activities --auto-scaling-group-name {name} (why launches fail: "
                   "capacity, quota, launch template)")


def check_fleet(ec2, elbv2, autoscaling, capture: Capture, target_id: str) -> list[Finding]:
    """The fleet against the account: the Auto Scaling group has its desired hosts in
    service, every host passes the NLB's health check, and every mirrored source's
    AZ has a healthy host (with cross-zone off, an NLB node sends only to its own AZ's
    hosts: a source whose AZ has none is mirrored into nothing)."""
    name = capture.name
    deploy = f"make deploy STACK={name}"
    lb = _tagged(load_balancers(elbv2), name, resource_name(name, NLB))
    group = _tagged(target_groups(elbv2, lb["LoadBalancerArn"]), name, resource_name(name, TARGETS)) if lb else None
    asg = auto_scaling_group(autoscaling, resource_name(name, FLEET))
    missing = [what for what, found in ((resource_name(name, NLB), lb), (resource_name(name, TARGETS), group),
                                        (resource_name(name, FLEET), asg)) if found is None]
    if missing:
        return [Finding(name, "fleet-not-deployed", m, "no network load balancer, target group or Auto Scaling group found for this fleet "
                        f"(tags {STACK_KEY}={name}, Name={m})", deploy) for m in missing]
    findings: list[Finding] = []
    asg_name = asg["AutoScalingGroupName"]
    instances = asg.get("Instances", [])
    in_service = [i for i in instances if i["LifecycleState"] == "InService"]
    short = fleet_capacity(name, asg)
    if short:
        findings.append(short)

    health = target_health(elbv2, group["TargetGroupArn"])
    zone_of = {i["InstanceId"]: i["AvailabilityZone"] for i in instances}
    unknown = [h["Target"]["Id"] for h in health if h["Target"]["Id"] not in zone_of and h["Target"]["Id"].startswith("i-")]
    if unknown:
        zone_of.update({i["InstanceId"]: i["Placement"]["AvailabilityZone"] for i in describe_instances(ec2, ids=unknown)})
    healthy_zones = set()
    for h in health:
        target, state = h["Target"]["Id"], h["TargetHealth"]["State"]
        if state == "healthy":
            healthy_zones.add(zone_of.get(target) or h["Target"].get("AvailabilityZone"))
            continue
        why = ": ".join(x for x in (h["TargetHealth"].get("Reason"), h["TargetHealth"].get("Description")) if x)
        findings.append(Finding(name, "target-unhealthy", target, f"{state} in {group['TargetGroupName']}" + (f" ({why})" if why else "")
                                + ": the NLB sends it no mirrored traffic", f"on the host: mirrorcap-health (the NLB asks port {HEALTH_PORT}); "
                                "systemctl status 'mirrorcap-*'; or let the Auto Scaling group replace it"))
    registered = {h["Target"]["Id"] for h in health}
    for i in in_service:
        if i["InstanceId"] not in registered:
            findings.append(Finding(name, "target-unregistered", i["InstanceId"], f"in service in {asg_name} but not a target of "
                                    f"{group['TargetGroupName']}: it receives no mirrored traffic",
                                    f"aws autoscaling describe-auto-scaling-groups --auto-scaling-group-names {asg_name} "
                                    f"(TargetGroupARNs must hold the target group); {deploy}"))

    sessions = sessions_where(ec2, "traffic-mirror-target-id", [target_id])
    zones = {eni: n["AvailabilityZone"] for eni, n in describe_enis(ec2, {s.eni_id for s in sessions}).items()}
    orphaned: dict[str, list[str]] = {}
    for s in sessions:
        zone = zones.get(s.eni_id)
        if zone is None:
            continue  # the source is gone: reported as dangling or fixed as a runtime session
        if (zone not in healthy_zones) if not capture.fleet.cross_zone else not healthy_zones:
            orphaned.setdefault(zone, []).append(s.id)
    for zone, ids in sorted(orphaned.items()):
        where = "no healthy capture host anywhere" if capture.fleet.cross_zone else f"no healthy capture host in {zone} (cross-zone is off)"
        findings.append(Finding(name, "az-no-healthy-host", zone, f"{len(ids)} session(s) mirror sources in {zone}, {where}: "
                                f"their packets are dropped ({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''})",
                                f"bring a host up in {zone} (see the fleet's findings above; is {zone} among fleet > subnet_ids?), "
                                f"or set fleet > cross_zone = true and {deploy}"))
    return findings
