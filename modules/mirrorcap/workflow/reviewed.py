"""Apply what was reviewed, nothing else: the pull request's plan, recorded; the
merge's fresh plan, checked against it; the gate on destroying pcaps.

- `normalize(plan)`: the changes of a `terraform show -json` plan as the
  comparison sees them: per managed resource its address, its actions and its
  planned values, with Terraform's "(known after apply)" kept as a marker and
  sensitive values replaced by their SHA-256 (the record travels as a workflow
  artifact: no secret in it);
- `fingerprint(changes)`: one SHA-256 of those changes, shown in the pull
  request and the apply report (a person approves a plan by it);
- `record(...)`: what the plan workflow uploads for each stack;
- `check(...)`: whether a fresh plan may be applied: every change in it must be
  a change the reviewed plan made, with the same actions and values (a value the
  reviewed plan did not know yet may be anything now); reviewed changes no longer
  in it were applied already. Or the person's approval names its fingerprint.
  A plan that destroys or replaces pcap data (the pcap volume, the archive
  bucket, their key) also needs an explicit allowance.
- `config_digest(dir)`: the synthesized stack directory, as one SHA-256.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import MirrorcapError, Problem

RECORD_VERSION = 1
UNKNOWN = {"(known after apply)": True}  # not a value any resource attribute can hold
# Resources whose destruction loses pcaps: the volume holding them, the archive
# bucket, and the key both are encrypted with (a key scheduled for deletion
# makes every snapshot and archived object unreadable).
DATA_TYPES = {"aws_ebs_volume": "the pcap volume: every pcap on it",
              "aws_s3_bucket": "the pcap archive bucket: every archived pcap",
              "aws_kms_key": "the key the pcaps are encrypted with: pcaps in snapshots and the archive become unreadable"}
DESTROY_LABEL = "mirrorcap:destroy-pcaps"  # on a pull request: a person allows its plan to destroy pcap data
# Terraform's action_reason values, in words.
REASONS = {
    "replace_because_cannot_update": "an argument that cannot change in place changed",
    "replace_because_tainted": "it is tainted (a failed create, or `terraform taint`)",
    "replace_by_request": "replacement was requested (-replace)",
    "replace_by_triggers": "its replace_triggered_by changed",
    "delete_because_no_resource_config": "it left the configuration",
    "delete_because_no_module": "its module left the configuration",
    "delete_because_wrong_repetition": "count/for_each was added or removed",
    "delete_because_count_index": "count shrank",
    "delete_because_each_key": "its for_each key left the map (a source removed, or renamed)",
    "delete_because_no_move_target": "its moved block has no target",
}
SKIP_ACTIONS = (("no-op",), ("read",), ())


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _sha(value: Any) -> str:
    return hashlib.sha256(_canon(value).encode()).hexdigest()


def _shape(value: Any, unknown: Any, sensitive: Any) -> Any:
    """A planned value with its unknown parts marked and its sensitive parts hashed."""
    if sensitive is True:
        return {"(sensitive sha256)": _sha(value)}
    if unknown is True:
        return UNKNOWN
    if isinstance(value, Mapping) or isinstance(unknown, Mapping):
        v = value if isinstance(value, Mapping) else {}
        u = unknown if isinstance(unknown, Mapping) else {}
        s = sensitive if isinstance(sensitive, Mapping) else {}
        return {k: _shape(v.get(k), u.get(k), s.get(k)) for k in sorted(set(v) | set(u))}
    if isinstance(value, list) or isinstance(unknown, list):
        v = value if isinstance(value, list) else []
        u = unknown if isinstance(unknown, list) else []
        s = sensitive if isinstance(sensitive, list) else []
        return [_shape(v[i] if i < len(v) else None, u[i] if i < len(u) else None, s[i] if i < len(s) else None)
                for i in range(max(len(v), len(u)))]
    return value


def normalize(plan: Mapping[str, Any]) -> list[dict]:
    """The plan's managed-resource changes, sorted by address: what a review approves."""
    out = []
    for rc in plan.get("resource_changes") or []:
        if rc.get("mode", "managed") != "managed":
            continue
        ch = rc.get("change") or {}
        actions = tuple(ch.get("actions") or ())
        if actions in SKIP_ACTIONS and not ch.get("importing"):
            continue
        out.append({"address": rc.get("address", "?"), "type": rc.get("type", "?"), "actions": list(actions),
                    "after": _shape(ch.get("after"), ch.get("after_unknown"), ch.get("after_sensitive")),
                    "reason": rc.get("action_reason"), "replace_paths": ch.get("replace_paths") or []})
    return sorted(out, key=lambda c: c["address"])


def fingerprint(changes: Sequence[Mapping]) -> str:
    """What identifies a plan's changes (addresses, actions, planned values; not the reasons)."""
    core = [{"address": c["address"], "actions": c["actions"], "after": c["after"]} for c in changes]
    return "sha256:" + _sha(core)


def config_digest(stack_dir: Path) -> str:
    """The synthesized stack (cdk.tf.json, the user-data template, assets), not what
    terraform init or plan add to the directory."""
    h = hashlib.sha256()
    for p in sorted(stack_dir.rglob("*")):
        rel = p.relative_to(stack_dir).as_posix()
        if not p.is_file() or rel.startswith(".terraform") or rel == "tfplan" or rel.endswith((".tfplan", ".tfstate", ".tfstate.backup")):
            continue
        h.update(rel.encode() + b"\0" + hashlib.sha256(p.read_bytes()).hexdigest().encode() + b"\n")
    return "sha256:" + h.hexdigest()


# ---------------------------------------------------------------------------
# Destroys and replacements


@dataclass(frozen=True)
class Destroy:
    address: str
    type: str
    action: str  # delete | replace
    why: str
    data: str | None  # what pcap data goes with it (DATA_TYPES), or None


def destroys(changes: Iterable[Mapping]) -> list[Destroy]:
    """Every resource the plan deletes or replaces, with Terraform's reason in words
    and, for a replacement, the arguments that force it."""
    out = []
    for c in changes:
        actions = tuple(c["actions"])
        if "delete" not in actions:
            continue
        action = "replace" if "create" in actions else "delete"
        why = REASONS.get(c.get("reason") or "", c.get("reason") or "")
        paths = [".".join(str(x) for x in p) for p in c.get("replace_paths") or [] if isinstance(p, list)]
        if action == "replace" and paths:
            why = (why + ": " if why else "") + ", ".join(f"`{p}`" for p in paths)
        out.append(Destroy(c["address"], c.get("type", "?"), action, why or "not given by Terraform", DATA_TYPES.get(c.get("type", ""))))
    return out


def gated(changes: Iterable[Mapping]) -> list[Destroy]:
    return [d for d in destroys(changes) if d.data]


# ---------------------------------------------------------------------------
# The record the plan workflow keeps, and the check the apply workflow makes

RECORD_FIX = "use the reviewed.json the plan workflow uploaded (mirrorcap review record)"


def record(plan: Mapping[str, Any], *, stack: str, digest: str, pr: int | None, commit: str) -> dict:
    changes = normalize(plan)
    return {"version": RECORD_VERSION, "stack": stack, "config_digest": digest, "pr": pr, "commit": commit,
            "fingerprint": fingerprint(changes), "changes": changes,
            "gated": [d.address for d in gated(changes)]}


def parse_record(text: str, name: str, stack: str) -> dict:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MirrorcapError([Problem(name, "", f"not JSON: {exc}", RECORD_FIX)])
    if not isinstance(data, dict) or data.get("version") != RECORD_VERSION or not isinstance(data.get("changes"), list):
        raise MirrorcapError([Problem(name, "version", f"not a version {RECORD_VERSION} reviewed-plan record", RECORD_FIX)])
    if data.get("stack") != stack:
        raise MirrorcapError([Problem(name, "stack", f"is the record of stack {data.get('stack')!r}, not {stack!r}", RECORD_FIX)])
    if data.get("fingerprint") != fingerprint(data["changes"]):
        raise MirrorcapError([Problem(name, "fingerprint", "does not match its changes (edited or truncated)", RECORD_FIX)])
    return data


def _matches(reviewed: Any, fresh: Any) -> bool:
    if reviewed == UNKNOWN:
        return True  # the review saw "(known after apply)": any value it takes now
    if isinstance(reviewed, dict) and isinstance(fresh, dict):
        return set(reviewed) == set(fresh) and all(_matches(reviewed[k], fresh[k]) for k in reviewed)
    if isinstance(reviewed, list) and isinstance(fresh, list):
        return len(reviewed) == len(fresh) and all(_matches(r, f) for r, f in zip(reviewed, fresh))
    return reviewed == fresh


def _first_difference(reviewed: Any, fresh: Any, path: str = "") -> str:
    if isinstance(reviewed, dict) and isinstance(fresh, dict) and reviewed != UNKNOWN:
        for k in sorted(set(reviewed) | set(fresh)):
            if k not in reviewed or k not in fresh or not _matches(reviewed[k], fresh[k]):
                return _first_difference(reviewed.get(k), fresh.get(k), f"{path}.{k}" if path else k)
    if isinstance(reviewed, list) and isinstance(fresh, list) and len(reviewed) == len(fresh):
        for i, (r, f) in enumerate(zip(reviewed, fresh)):
            if not _matches(r, f):
                return _first_difference(r, f, f"{path}[{i}]")
    show = lambda v: "(known after apply)" if v == UNKNOWN else _canon(v)[:80]
    return f"`{path or '(the whole value)'}`: reviewed {show(reviewed)}, now {show(fresh)}"


@dataclass(frozen=True)
class Verdict:
    apply: bool
    nothing: bool  # the fresh plan changes nothing
    reason: str  # one line
    fingerprint: str  # of the fresh plan
    differences: tuple[str, ...] = ()
    done: tuple[str, ...] = ()  # reviewed changes the fresh plan no longer has (applied already)
    gated: tuple[Destroy, ...] = field(default=())


def check(fresh_plan: Mapping[str, Any], reviewed: Mapping | None, *, approved: Iterable[str] = (),
          allow_destroy: bool = False) -> Verdict:
    """May the fresh plan be applied? `reviewed`: the pull request's record (None: none
    found); `approved`: fingerprints a person approved; `allow_destroy`: the label or input."""
    fresh = normalize(fresh_plan)
    fp = fingerprint(fresh)
    if not fresh:
        return Verdict(False, True, "no changes: nothing to apply", fp)
    data = tuple(gated(fresh))
    if data and not allow_destroy:
        names = ", ".join(f"`{d.address}`" for d in data)
        return Verdict(False, False, f"refused: the plan destroys pcap data ({names}): it needs the `{DESTROY_LABEL}` label "
                       "on the pull request (or allow_destroy when run by hand)", fp, gated=data)
    if fp in set(approved):
        return Verdict(True, False, f"approved by fingerprint {fp}", fp, gated=data)
    if reviewed is None:
        return Verdict(False, False, "refused: no reviewed plan for this stack (no pull request planned it, or its plan "
                       "expired)", fp, gated=data)
    by_address = {c["address"]: c for c in reviewed["changes"]}
    differences = []
    for c in fresh:
        r = by_address.get(c["address"])
        if r is None:
            differences.append(f"`{c['address']}`: {'+'.join(c['actions'])} is not in the reviewed plan")
        elif r["actions"] != c["actions"]:
            differences.append(f"`{c['address']}`: reviewed {'+'.join(r['actions'])}, now {'+'.join(c['actions'])}")
        elif not _matches(r["after"], c["after"]):
            differences.append(f"`{c['address']}`: {_first_difference(r['after'], c['after'])}")
    done = tuple(a for a in by_address if a not in {c["address"] for c in fresh})
    if differences:
        return Verdict(False, False, f"refused: the plan differs from the one reviewed in the pull request "
                       f"({len(differences)} change(s))", fp, tuple(differences), done, data)
    what = "the reviewed plan" if not done else f"the rest of the reviewed plan ({len(done)} change(s) applied already)"
    return Verdict(True, False, f"matches {what}", fp, (), done, data)
