"""`mirrorcap validate --live`: what the account says about the inventory before a deploy.

- a source whose instance type Traffic Mirroring may refuse: the EC2 API is
  asked (DescribeInstanceTypes: Nitro or Xen; and, once the target exists, a
  DryRun CreateTrafficMirrorSession, which is AWS's own verdict);
- a source in another Availability Zone than the capture host (inter-AZ
  transfer is billed per GB of mirrored traffic);
- a packet_length that truncates, and source MTU + 50 bytes of VXLAN above
  the target's MTU (AWS truncates such packets at the target).
The source MTU is an OS setting the EC2 API does not expose: it is a parameter
(9001, the VPC default on current instance types, unless told otherwise).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from botocore.exceptions import ClientError

from .. import aws_limits as L
from ..contract import source_vni
from ..inventory.model import Capture
from .clients import describe_instances, dry_run_session, hypervisors, network_interface, primary_eni, subnet


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" | "warning"
    capture: str
    field: str
    message: str
    fix: str

    def as_dict(self) -> dict:
        return asdict(self)


def _resolve(ec2, source_id: str) -> tuple[Optional[dict], Optional[dict]]:
    """(instance, eni) for an instance or ENI ID; (None, None) when it does not exist."""
    try:
        if source_id.startswith("i-"):
            found = describe_instances(ec2, ids=[source_id])
            inst = found[0] if found else None
            eni_id = primary_eni(inst) if inst else None
            return inst, (network_interface(ec2, eni_id) if eni_id else None)
        eni = network_interface(ec2, source_id)
        inst_id = eni.get("Attachment", {}).get("InstanceId")
        inst = None
        if inst_id:
            inst = describe_instances(ec2, ids=[inst_id])[0]
        return inst, eni
    except ClientError as exc:
        if ".NotFound" in exc.response["Error"]["Code"] or "Malformed" in exc.response["Error"]["Code"]:
            return None, None
        raise


def preflight(ec2, capture: Capture, *, source_mtu: int = 9001, target_mtu: int = 9001,
              target_id: Optional[str] = None, filter_id: Optional[str] = None) -> list[Finding]:
    out: list[Finding] = []
    name = capture.name
    where = subnet(ec2, capture.subnet_id)
    if where is None:
        return [Finding("error", name, "subnet_id", f"{capture.subnet_id} does not exist in {capture.region} (or is not visible)",
                        "use a subnet ID from `aws ec2 describe-subnets`, in the capture's region")]
    if where["VpcId"] != capture.vpc_id:
        out.append(Finding("error", name, "subnet_id", f"{capture.subnet_id} is in {where['VpcId']}, not {capture.vpc_id}",
                           "set vpc_id to the subnet's VPC, or pick a subnet in vpc_id"))
    capture_az = where["AvailabilityZone"]

    # (field, instance, eni, packet_length, vni) for every source known now
    rows = []
    for i, s in enumerate(capture.sources):
        inst, eni = _resolve(ec2, s.id)
        if eni is None:
            out.append(Finding("error", name, f"source[{i}]", f"{s.id} does not exist in {capture.region}",
                               "fix the ID, or select the instances by tags (source { tags = {...} } with auto_mirror {})"))
            continue
        rows.append((f"source[{i}] ({s.id})", inst, eni, s.packet_length, source_vni(s.vni, capture.vni)))
    for i, t in enumerate(capture.tag_sources):
        filters = [{"Name": "vpc-id", "Values": [capture.vpc_id]}, {"Name": "instance-state-name", "Values": ["pending", "running"]}]
        filters += [{"Name": f"tag:{k}", "Values": [v]} for k, v in t.tags]
        for inst in describe_instances(ec2, filters):
            eni_id = primary_eni(inst)
            eni = next((n for n in inst.get("NetworkInterfaces", []) if n["NetworkInterfaceId"] == eni_id), None)
            if eni is not None:
                rows.append((f"source[tags {dict(t.tags)}] ({inst['InstanceId']})", inst, {**eni, "AvailabilityZone": inst["Placement"]["AvailabilityZone"]},
                             t.packet_length, source_vni(t.vni, capture.vni)))

    types = sorted({inst["InstanceType"] for _, inst, _, _, _ in rows if inst})
    hypervisor = hypervisors(ec2, types)

    oversize = []
    for field, inst, eni, packet_length, vni in rows:
        if inst and hypervisor.get(inst["InstanceType"]) != "nitro":
            out.append(Finding("warning", name, field,
                               f"{inst['InstanceType']} is not Nitro-based (hypervisor: {hypervisor.get(inst['InstanceType']) or 'unknown'}): "
                               "Traffic Mirroring supports Nitro instances and only some older types", "check the type against the Traffic Mirroring docs, or move the source to a Nitro type"))
        if target_id and filter_id:
            refusal = dry_run_session(ec2, eni["NetworkInterfaceId"], target_id, filter_id, vni)
            if refusal:
                out.append(Finding("error", name, field, f"AWS would refuse a session on {eni['NetworkInterfaceId']}: {refusal}",
                                   "remove this source, or fix what AWS names"))
        az = eni.get("AvailabilityZone")
        if az and az != capture_az:
            out.append(Finding("warning", name, field, f"source is in {az}, the capture host in {capture_az}: mirrored traffic is "
                               "billed as inter-AZ data transfer per GB", "mirror it from a capture host in the same AZ (another capture block)"))
        if packet_length and packet_length < source_mtu:
            out.append(Finding("warning", name, f"{field} > packet_length", f"packets over {packet_length} bytes are truncated to {packet_length}",
                               "fine for headers only; remove packet_length to keep payloads"))
        if min(source_mtu, packet_length or source_mtu) + L.VXLAN_OVERHEAD_BYTES > target_mtu:
            oversize.append(field)
    if oversize:
        limit = target_mtu - L.VXLAN_OVERHEAD_BYTES
        out.append(Finding("warning", name, "source",
                           f"{len(oversize)} source(s) at MTU {source_mtu} + {L.VXLAN_OVERHEAD_BYTES} bytes of VXLAN exceed the target MTU "
                           f"{target_mtu}: packets over {limit} bytes arrive truncated",
                           f"set packet_length = {limit} on them (headers intact, tails cut knowingly), or the sources' MTU to {limit} "
                           "or less (pass --source-mtu to tell validate)"))
    return out
