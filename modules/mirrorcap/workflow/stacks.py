"""Which stacks a change needs planned, and why (`select_stacks`): the captures whose inventory
block, session numbers or rendered bootstrap changed, or every stack for what every stack is made of."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Iterable, Sequence

from ..errors import MirrorcapError
from ..inventory.hclfile import parse_hcl
from .sessions import Lock, lock_path

# Paths whose change can alter every synthesized stack, and why. Anything not
# listed here, not the inventory, its lock or rendered/<capture>/ changes no
# stack (README, tests/, bench/, packer/, the review copy's formatter...).
EVERY_STACK: tuple[tuple[str, str], ...] = (
    ("modules/", "the package that synthesizes every stack"),
    ("main.py", "the cdktn entry point"),
    ("cdktf.json", "the cdktn project file (Terraform target versions)"),
    ("pyproject.toml", "the pinned cdktn library and AWS provider bindings"),
    ("uv.lock", "every Python package synth runs, locked with its hashes"),
    ("Makefile", "the synth the workflows run"),
    (".terraform-version", "the Terraform the workflows plan and apply with"),
    ("tools/package.json", "the pinned cdktn CLI"),
    ("tools/package-lock.json", "the pinned cdktn CLI"),
    ("scripts/", "the host templates every capture's user data is rendered from"),
    (".github/workflows/mirrorcap-", "the workflows that plan and apply (proven on every stack)"),
)


@dataclass(frozen=True)
class Selection:
    stacks: dict[str, list[str]]  # stack to plan -> why, in the synthesized order
    removed: dict[str, str] = field(default_factory=dict)  # capture gone from the inventory -> what to do
    added: list[str] = field(default_factory=list)  # captures new in the inventory (with `removed`: maybe a rename)


def _matches(path: str, pattern: str) -> bool:
    return path.startswith(pattern) if pattern.endswith(("/", "-")) else path == pattern


def _norm(path: str) -> str:
    return str(PurePosixPath(path.strip())) if path.strip() else ""


def inventory_captures(text: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(capture name -> its block's values, every other top-level value), comments ignored."""
    data = parse_hcl(text, name)
    captures: dict[str, Any] = {}
    for block in data.pop("capture", None) or []:
        if isinstance(block, dict):
            captures.update(block)
    return captures, data


def capture_changes(before: str, after: str, name: str) -> dict[str, str] | None:
    """capture -> "added" | "changed" | "removed" between two inventory texts; None when
    something outside the capture blocks changed (which capture it touches is unknown)."""
    after_caps, after_rest = inventory_captures(after, name)
    try:
        before_caps, before_rest = inventory_captures(before, f"{name} (before)")
    except MirrorcapError:
        return None  # the base's inventory did not parse: nothing to attribute the change to
    if before_rest != after_rest:
        return None
    out = {}
    for cap in sorted(set(before_caps) | set(after_caps)):
        if cap not in after_caps:
            out[cap] = "removed"
        elif cap not in before_caps:
            out[cap] = "added"
        elif json.dumps(before_caps[cap], sort_keys=True) != json.dumps(after_caps[cap], sort_keys=True):
            out[cap] = "changed"
    return out


def removed_advice(capture: str, inventory: str) -> str:
    return (f'capture "{capture}" was removed from {inventory}, and its state is local (no backend "s3" in its block): '
            "no workflow can plan its destroy, so the host, its volume and sessions keep running and billing. "
            f"To remove it: restore the block, run `make destroy STACK={capture}` with AWS credentials (it runs cdktn on "
            "the Node the project installs, says what is lost and asks first; the pcap volume and its key refuse until "
            "`storage { prevent_destroy = false }`), then remove the block.")


def select_stacks(changed: Iterable[str], known: Sequence[str], *, inventory: str = "capture.hcl",
                  inventory_before: str | None = None, inventory_after: str | None = None,
                  lock_before: Lock | None = None, lock_after: Lock | None = None,
                  rendered: str = "rendered") -> Selection:
    """The stacks among `known` (the synthesized ones) that a change to `changed`
    (repository-relative paths) needs planned.

    - the inventory: only the captures whose block differs (comments and
      formatting do not count); every stack when something outside the capture
      blocks changed or there is no earlier inventory to compare;
    - the lock: only the captures whose session numbers differ;
    - rendered/<capture>/: that capture (its user data);
    - EVERY_STACK: code, pins and templates every stack is made from.
    """
    inventory, rendered = _norm(inventory), _norm(rendered)
    lock = lock_path(inventory)
    reasons: dict[str, list[str]] = {}
    removed: dict[str, str] = {}
    added: list[str] = []

    def add(names: Iterable[str], why: str) -> None:
        for n in names:
            if why not in reasons.setdefault(n, []):
                reasons[n].append(why)

    for path in sorted({_norm(p) for p in changed} - {""}):
        if path == inventory:
            diff = None
            if inventory_before is not None and inventory_after is not None:
                diff = capture_changes(inventory_before, inventory_after, inventory)
            if diff is None:
                why = "no earlier version to compare" if inventory_before is None else "a change outside the capture blocks"
                add(known, f"{path}: {why}")
                continue
            for cap, what in diff.items():
                if what == "removed":
                    removed[cap] = removed_advice(cap, inventory)
                    continue
                if what == "added":
                    added.append(cap)
                if cap in known:
                    add([cap], f'{path}: capture "{cap}" {what}')
        elif path == lock:
            if lock_before is None or lock_after is None:
                add(known, f"{path}: no earlier version to compare")
                continue
            for cap in sorted(set(lock_before) | set(lock_after)):
                if dict(lock_before.get(cap, {})) != dict(lock_after.get(cap, {})) and cap in known:
                    add([cap], f'{path}: session numbers of "{cap}" changed')
        elif path.startswith(rendered + "/"):
            cap = path[len(rendered) + 1:].split("/", 1)[0]
            if cap in known:
                add([cap], f"{path} changed (its bootstrap)")
        else:
            for pattern, why in EVERY_STACK:
                if _matches(path, pattern):
                    add(known, f"{path}: {why}")
                    break
    return Selection({n: reasons[n] for n in known if n in reasons}, removed, added)
