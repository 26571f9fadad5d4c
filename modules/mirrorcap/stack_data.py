"""What a source edit changes, as data Terraform reads: a stack's sessions.auto.tfvars.json.

A capture's sources (their ENI or instance, session number, VNI, packet length,
description) are values, not structure. The synthesized stack (cdk.tf.json)
declares six variables and never sees a source; this module writes their
values in plain Python, beside it, where Terraform loads every *.auto.tfvars.json
of the directory it runs in:

    sessions              source ID -> its session number (for_each of
                          aws_ec2_traffic_mirror_session.source)
    source_vnis           the sources whose VNI is not the capture's: ID -> VNI
    packet_lengths        the sources that truncate: ID -> packet length
    session_descriptions  the sources with a description: ID -> the session's
                          (the others': "mirrorcap <capture>: <ID>")
    instance_sources      the sources that are instances (their primary ENI is
                          looked up at plan time: data.aws_instance.source_instance)
    vnis                  every VNI the capture decapsulates (an alarm pair each,
                          the Athena table's VNI partitions)

The for_each map holds numbers only, the rest sparse maps the session reads with
lookup(): Terraform evaluates for_each again for every instance, and what the map
carries is paid per instance, read or not (1,000 sessions whose map carried every
argument planned about a second slower: docs/benchmarks.md).

So adding, removing or renumbering a source, or giving one another VNI, leaves
cdk.tf.json as it was: `mirrorcap synth` (synth/structure.py) skips cdktn then.
The variables have no default: in a stack directory without its values Terraform
asks for them (with -input=false, fails) rather than planning every session away.

Strings in a .tfvars.json file are literal (no `${` template), so inventory text
goes in as it is. The review copy shows the same values as HCL (review_tfvars).
Pure: nothing here loads cdktn.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Mapping

from .contract import session_description, source_vni
from .hclquote import hcl_string
from .inventory.model import Capture

SESSIONS_FILE = "sessions.auto.tfvars.json"
USER_DATA_FILE = "user-data.sh.tftpl"  # the host's user data, read by templatefile() in cdk.tf.json (stack/host.py)
# Alarms that were one resource per VNI (alarm_not_capturing_<vni>) are one for_each keyed by VNI:
# a moved block per VNI carries a stack deployed before over (a no-op where nothing was).
MOVED_FILE = "vni-alarms-moved.tf.json"

SESSIONS, INSTANCE_SOURCES, VNIS = "sessions", "instance_sources", "vnis"
SOURCE_VNIS, PACKET_LENGTHS, DESCRIPTIONS = "source_vnis", "packet_lengths", "session_descriptions"
# name -> (Terraform type, description): declared by the stack (stack/mirroring.py, stack/alarms.py)
VARIABLES = {
    SESSIONS: ("map(number)", f"source ID -> its traffic mirror session number (written by mirrorcap into {SESSIONS_FILE})"),
    SOURCE_VNIS: ("map(number)", f"the sources whose VNI is not the capture's: source ID -> VNI (written by mirrorcap into {SESSIONS_FILE})"),
    PACKET_LENGTHS: ("map(number)", f"the sources that truncate: source ID -> packet length (written by mirrorcap into {SESSIONS_FILE})"),
    DESCRIPTIONS: ("map(string)", f"the sources with a description: source ID -> the session's (written by mirrorcap into {SESSIONS_FILE})"),
    INSTANCE_SOURCES: ("set(string)", f"the sources that are EC2 instances (written by mirrorcap into {SESSIONS_FILE})"),
    VNIS: ("list(number)", f"every VNI the capture decapsulates, ascending (written by mirrorcap into {SESSIONS_FILE})"),
}
# The per-VNI alarms: (resource name, the name each VNI's alarm had before they were keyed by VNI)
VNI_ALARMS = (("alarm_not_capturing", "alarm_not_capturing_{vni}"), ("alarm_packets_lost", "alarm_packets_lost_{vni}"))
ALARM_TYPE = "aws_cloudwatch_metric_alarm"


def structural(capture: Capture) -> Capture:
    """The capture as its stack sees it: without its sources (their values are data, below)."""
    return dataclasses.replace(capture, sources=())


def values(capture: Capture, numbers: Mapping[str, int]) -> dict:
    """The variables' values for one capture; `numbers` is source ID -> session number (the lock)."""
    vnis = {s.id: source_vni(s.vni, capture.vni) for s in capture.sources}
    return {SESSIONS: {s.id: numbers[s.id] for s in capture.sources},
            SOURCE_VNIS: {i: v for i, v in vnis.items() if v != capture.vni},
            PACKET_LENGTHS: {s.id: s.packet_length for s in capture.sources if s.packet_length is not None},
            DESCRIPTIONS: {s.id: session_description(capture.name, s.description) for s in capture.sources if s.description},
            INSTANCE_SOURCES: sorted(s.id for s in capture.sources if s.is_instance),
            VNIS: list(capture.vnis)}


def moved(capture: Capture) -> dict:
    return {"moved": [{"from": f"{ALARM_TYPE}.{old.format(vni=vni)}", "to": f'{ALARM_TYPE}.{name}["{vni}"]'}
                      for vni in capture.vnis for name, old in VNI_ALARMS]}


def files(capture: Capture, numbers: Mapping[str, int]) -> dict[str, str]:
    """File name -> text, for the stack's directory."""
    return {SESSIONS_FILE: json.dumps(values(capture, numbers), indent=1, sort_keys=True, ensure_ascii=False) + "\n",
            MOVED_FILE: json.dumps(moved(capture), indent=1) + "\n"}


# --- The review copy: the same values as HCL (cdktf.out/review/<capture>.tfvars) ---------------------

def _hcl(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return hcl_string(value)


def review_tfvars(capture: Capture, numbers: Mapping[str, int]) -> str:
    """values() as a .tfvars file, formatted as `terraform fmt` formats it."""
    v = values(capture, numbers)
    lines = [f"# capture {hcl_string(capture.name)}: the values of the stack's variables, as Terraform reads them from",
             f"# stacks/{capture.name}/{SESSIONS_FILE}, written by mirrorcap from the inventory and its lock.",
             ""]
    width = max(len(INSTANCE_SOURCES), len(VNIS))
    lines.append(f"{INSTANCE_SOURCES.ljust(width)} = [" + ", ".join(hcl_string(i) for i in v[INSTANCE_SOURCES]) + "]")
    lines.append(f"{VNIS.ljust(width)} = [" + ", ".join(str(n) for n in v[VNIS]) + "]")
    for name in (SESSIONS, SOURCE_VNIS, PACKET_LENGTHS, DESCRIPTIONS):
        lines.append("")
        if not v[name]:
            lines.append(f"{name} = {{}}")
            continue
        keys = {k: hcl_string(k) for k in v[name]}
        width = max(len(q) for q in keys.values())
        lines.append(f"{name} = {{")
        lines += [f"  {keys[k].ljust(width)} = {_hcl(val)}" for k, val in v[name].items()]
        lines.append("}")
    return "\n".join(lines) + "\n"
