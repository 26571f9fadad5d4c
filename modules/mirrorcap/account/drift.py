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
from ..live.ec2 import existing_enis, observe, sessions_where, tags_of
from .aws import describe_instances, primary_eni, traffic_mirror_filters, traffic_mirror_targets
from ..contract import FILTER, HOST, STACK_KEY, TARGET, resource_name
from ..live.reconcile import plan
from ..runtime_settings import settings_for


@dataclass(frozen=True)
class Finding:
    capture: str
    kind: str  # not-deployed | host-not-running | source-gone | missing-session | number-mismatch | vni-mismatch | dangling-session | runtime | limit | campaign-over
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


def check_capture(ec2, capture: Capture, numbers: Mapping[str, int], now: datetime) -> list[Finding]:
    name = capture.name
    deploy = f"make deploy STACK={name}"
    target_id, filter_id = locate(ec2, capture)
    if not target_id or not filter_id:
        return [Finding(name, "not-deployed", resource_name(name, TARGET), "no traffic mirror target/filter tagged for this capture", deploy)]
    findings: list[Finding] = []

    hosts = describe_instances(ec2, [{"Name": f"tag:{STACK_KEY}", "Values": [name]}, {"Name": "tag:Name", "Values": [resource_name(name, HOST)]}])
    live_hosts = [h for h in hosts if h["State"]["Name"] != "terminated"]
    if not live_hosts or live_hosts[0]["State"]["Name"] != "running":
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
        want_vni = source.vni if source.vni is not None else capture.vni
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
