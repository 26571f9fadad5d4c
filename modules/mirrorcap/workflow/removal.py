"""A capture removed from the inventory: the Terraform configuration that plans its destroy.

Its stack is no longer synthesized, but what it deployed is still in its state. A configuration with
the same state backend, the same provider and no resource makes a plain `terraform plan` destroy
everything in that state (each resource "left the configuration": delete_because_no_resource_config),
so review record/verify and both workflows' loops treat it as any stack (no -destroy to carry from the
review to the apply). Terraform's prevent_destroy lives in the resource block and goes with it, so
mirrorcap keeps it here: a capture whose pcap volume had prevent_destroy = true gets a configuration
whose plan fails, saying how to remove it.

Pure: `plan_removals` decides, `destroy_config` writes the JSON (cdk.tf.json, as cdktn names it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..inventory.model import Backend, Capture

REASON = "removed from the inventory"
MARK = "mirrorcap: the destroy configuration of a capture removed from the inventory"


@dataclass(frozen=True)
class Removal:
    name: str
    capture: Capture  # its block at the base revision
    kind: str  # "destroy": planned; "local": its state is on someone's machine; "kept": another capture has its state
    kept_by: str = ""  # the capture (at the head) whose backend is this one's state

    @property
    def protected(self) -> bool:
        return self.capture.storage.prevent_destroy


def state_location(b: Backend) -> tuple[str, ...]:
    """Where a backend keeps the state: two captures with the same location share it."""
    return (b.kind, b.bucket, b.key) if b.kind == "s3" else (b.kind, b.path)


def plan_removals(removed: Sequence[Capture], head: Sequence[Capture]) -> list[Removal]:
    """What to do with each removed capture: plan its destroy, or not (local state; a capture of the
    head keeping its state: that stack's plan is what happens to its resources, nothing to destroy)."""
    owners = {state_location(c.backend): c.name for c in head}
    out = []
    for c in removed:
        owner = owners.get(state_location(c.backend))
        kind = "kept" if owner else "local" if c.backend.kind != "s3" else "destroy"
        out.append(Removal(c.name, c, kind, owner or ""))
    return out


def backend_block(b: Backend) -> dict[str, Any]:
    """The `terraform.backend` of the capture's stack, as cdktn's S3Backend writes it (stack/capture_stack.py)."""
    s3: dict[str, Any] = {"bucket": b.bucket, "encrypt": b.encrypt, "key": b.key, "region": b.region}
    if b.use_lockfile:
        s3["use_lockfile"] = True
    if b.dynamodb_table:
        s3["dynamodb_table"] = b.dynamodb_table
    if b.kms_key_id:
        s3["kms_key_id"] = b.kms_key_id
    if b.role_arn:
        s3["assume_role"] = {"role_arn": b.role_arn}
    return {"s3": s3}


def protected_message(name: str) -> str:
    return (f'capture "{name}" was removed from the inventory, but its pcap volume and key keep prevent_destroy = true '
            f"(storage.prevent_destroy, the default): nothing is destroyed. To remove it, first set storage "
            f"{{ prevent_destroy = false }} in its block in a pull request of its own (merged and applied), then remove the block.")


def destroy_config(removal: Removal, required_providers: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration that plans `removal`'s destroy: its backend, the provider in its region (pinned as
    every stack of this synth is), no resource. A protected capture's gets an output whose precondition fails."""
    c = removal.capture
    doc: dict[str, Any] = {
        "//": {"mirrorcap": f"{MARK} ({c.name}): its state, its provider, no resource"},
        "terraform": {"backend": backend_block(c.backend), "required_providers": dict(required_providers)},
        "provider": {"aws": [{"region": c.region}]},
    }
    if removal.protected:
        # The names and settings in the message match patterns without `${` or `%{`: no template in it.
        # (Terraform wants a condition that refers to something: a local, which nothing can set otherwise.)
        doc["locals"] = {"prevent_destroy": True}
        doc["output"] = {"prevent_destroy": {"value": "${local.prevent_destroy}", "precondition": [
            {"condition": "${!local.prevent_destroy}", "error_message": protected_message(c.name)}]}}
    return doc


def entries(chosen: Sequence[Mapping[str, Any]], removals: Sequence[Removal], added: Sequence[str], root: str) -> list[dict]:
    """`review stacks`' list: the chosen stacks, then each removal planned (its directory under `root`).
    A capture added in the change that removes another is said so on both sides (a renamed block is
    a removal and an addition: a new host and volume, the old destroyed); a capture keeping a removed
    one's state is said so on its own."""
    gone = [r.name for r in removals if r.kind == "destroy"]
    out = []
    for entry in chosen:
        e = {**entry, "reasons": list(entry["reasons"])}
        if e["name"] in added and gone:
            e["added_with_removal"] = gone
        for r in removals:
            if r.kind == "kept" and r.kept_by == e["name"]:
                e["reasons"].append(f'keeps the state of removed capture "{r.name}" (the same backend): '
                                    "its plan is what happens to that capture's resources")
        out.append(e)
    for r in removals:
        if r.kind == "destroy":
            out.append({"name": r.name, "dir": f"{root}/{r.name}", "region": r.capture.region, "remote_state": True,
                        "reasons": [REASON], "removal": {"protected": r.protected, "added": list(added)}})
    return out
