"""boto3 side of the reconciler: read the account into `Observed`, carry out `Changes`."""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import datetime, timezone
from typing import Callable, Iterable

from botocore.exceptions import ClientError

from ..contract import CREATED_KEY, RUNTIME_OWNER_KEY, SOURCE_KEY, STACK_KEY, resource_name, session_description
from .model import Instance, Observed, Session, Settings
from .reconcile import Changes, plan

log = logging.getLogger("mirrorcap")

OBSERVED_STATES = ["pending", "running", "stopping", "stopped"]
FILTER_VALUES_MAX = 200  # EC2 accepts at most 200 values per filter


def tags_of(item: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in item.get("Tags", [])}


def _chunks(values: list[str], size: int = FILTER_VALUES_MAX) -> Iterable[list[str]]:
    for i in range(0, len(values), size):
        yield values[i:i + size]


def _session(raw: dict) -> Session:
    return Session(id=raw["TrafficMirrorSessionId"], eni_id=raw["NetworkInterfaceId"], target_id=raw["TrafficMirrorTargetId"],
                   filter_id=raw["TrafficMirrorFilterId"], number=int(raw["SessionNumber"]), vni=int(raw.get("VirtualNetworkId", 0)),
                   tags=tags_of(raw))


def primary_eni(raw_instance: dict) -> str | None:
    for ni in raw_instance.get("NetworkInterfaces", []):
        att = ni.get("Attachment", {})
        if att.get("DeviceIndex") == 0 and att.get("NetworkCardIndex", 0) == 0:
            return ni["NetworkInterfaceId"]
    return None


def describe_instances(ec2, filters: list[dict] = (), ids: list[str] = ()) -> list[dict]:
    """Instances (reservations flattened) by filters and/or IDs."""
    args = {**({"Filters": list(filters)} if filters else {}), **({"InstanceIds": list(ids)} if ids else {})}
    found = []
    for page in ec2.get_paginator("describe_instances").paginate(**args):
        for reservation in page["Reservations"]:
            found.extend(reservation["Instances"])
    return found


def sessions_where(ec2, name: str, values: list[str]) -> list[Session]:
    found = []
    for chunk in _chunks(sorted(set(values))):
        for page in ec2.get_paginator("describe_traffic_mirror_sessions").paginate(Filters=[{"Name": name, "Values": chunk}]):
            found.extend(_session(s) for s in page["TrafficMirrorSessions"])
    return found


def describe_enis(ec2, eni_ids: Iterable[str]) -> dict[str, dict]:
    """ENI ID -> DescribeNetworkInterfaces entry, for those of `eni_ids` that exist.

    A filter, not NetworkInterfaceIds=: that form fails outright when one ID is gone."""
    found: dict[str, dict] = {}
    for chunk in _chunks(sorted(set(eni_ids))):
        for page in ec2.get_paginator("describe_network_interfaces").paginate(Filters=[{"Name": "network-interface-id", "Values": chunk}]):
            found.update((n["NetworkInterfaceId"], n) for n in page["NetworkInterfaces"])
    return found


def existing_enis(ec2, eni_ids: Iterable[str]) -> frozenset[str]:
    return frozenset(describe_enis(ec2, eni_ids))


def observe(ec2, settings: Settings) -> Observed:
    raw: dict[str, dict] = {}
    for selector in settings.selectors:
        filters = [{"Name": "vpc-id", "Values": [settings.vpc_id]}, {"Name": "instance-state-name", "Values": OBSERVED_STATES}]
        filters += [{"Name": f"tag:{k}", "Values": [v]} for k, v in selector.tags]
        for inst in describe_instances(ec2, filters):
            raw[inst["InstanceId"]] = inst
    instances = tuple(Instance(i["InstanceId"], i["State"]["Name"], primary_eni(i), tags_of(i)) for i in raw.values())
    on_target = sessions_where(ec2, "traffic-mirror-target-id", [settings.target_id])
    candidate_enis = [i.primary_eni for i in instances if i.primary_eni]
    others = sessions_where(ec2, "network-interface-id", candidate_enis) if candidate_enis else []
    sessions = {s.id: s for s in on_target + others}
    return Observed(instances=instances, sessions=tuple(sessions.values()),
                    live_enis=existing_enis(ec2, [s.eni_id for s in sessions.values()]) if sessions else frozenset())


def _event(action: str, **fields) -> None:
    log.info(json.dumps({"action": action, **fields}, sort_keys=True, default=str))


def apply(ec2, settings: Settings, changes: Changes, now: datetime) -> dict[str, list]:
    """Deletes first (they free numbers and target slots), then creates. Returns what was done."""
    done: dict[str, list] = {"created": [], "deleted": [], "skipped": list(changes.notes)}
    for note in changes.notes:
        _event("skip", capture=settings.capture, reason=note)
    for d in changes.deletes:
        try:
            ec2.delete_traffic_mirror_session(TrafficMirrorSessionId=d.session_id)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "InvalidTrafficMirrorSessionId.NotFound":
                raise
            _event("already-deleted", session=d.session_id)  # a concurrent writer got there first
            continue
        _event("delete", capture=settings.capture, session=d.session_id, eni=d.eni_id, reason=d.reason)
        done["deleted"].append(d.session_id)
    for c in changes.creates:
        args = dict(NetworkInterfaceId=c.eni_id, TrafficMirrorTargetId=settings.target_id, TrafficMirrorFilterId=settings.filter_id,
                    SessionNumber=c.number, VirtualNetworkId=c.vni,
                    Description=session_description(settings.capture, f"{c.instance_id} (auto)"),
                    TagSpecifications=[{"ResourceType": "traffic-mirror-session", "Tags": [
                        {"Key": "Name", "Value": resource_name(settings.capture, c.instance_id)},
                        {"Key": RUNTIME_OWNER_KEY, "Value": settings.capture},
                        {"Key": STACK_KEY, "Value": settings.capture},
                        {"Key": SOURCE_KEY, "Value": c.instance_id},
                        {"Key": CREATED_KEY, "Value": now.astimezone(timezone.utc).isoformat(timespec="microseconds")},
                    ]}])
        if c.packet_length:
            args["PacketLength"] = c.packet_length
        try:
            resp = ec2.create_traffic_mirror_session(**args)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if "LimitExceeded" in code:
                # AWS enforces the limits too: another writer filled the slot between our read and this call.
                _event("skip", capture=settings.capture, instance=c.instance_id, eni=c.eni_id, reason=f"limit: AWS said {code}")
                done["skipped"].append(f"limit: {c.instance_id}: {code}")
                continue
            if code in ("InvalidNetworkInterfaceID.NotFound", "InvalidNetworkInterfaceId.NotFound"):
                _event("skip", capture=settings.capture, instance=c.instance_id, eni=c.eni_id, reason="instance gone before it could be mirrored")
                done["skipped"].append(f"gone: {c.instance_id}")
                continue
            raise
        session_id = resp["TrafficMirrorSession"]["TrafficMirrorSessionId"]
        _event("create", capture=settings.capture, session=session_id, instance=c.instance_id, eni=c.eni_id, number=c.number, vni=c.vni)
        done["created"].append(session_id)
    return done


def reconcile(ec2, settings: Settings, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
              passes: int = 3) -> dict[str, list]:
    """Observe, plan, apply -- then look again, so a lost race is undone at once."""
    total: dict[str, list] = {"created": [], "deleted": [], "skipped": []}
    for _ in range(passes):
        changes = plan(settings, observe(ec2, settings), now())
        # A limit note repeats on every pass: log it once per invocation.
        fresh = tuple(n for n in changes.notes if n not in total["skipped"])
        done = apply(ec2, settings, dataclasses.replace(changes, notes=fresh), now())
        for k in total:
            total[k].extend(v for v in done[k] if v not in total[k])
        if not changes:
            break
    return total
