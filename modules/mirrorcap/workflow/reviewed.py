"""Apply what was reviewed, nothing else: the pull request's plan, recorded; the
merge's fresh plan, checked against it; the gate on destroying pcaps.

- `normalize(plan)`: the changes of a `terraform show -json` plan as the
  comparison sees them: per managed resource (and per output) its address, its
  actions and its planned values, with Terraform's "(known after apply)" kept as
  a marker and each sensitive value replaced by whether it changes, nothing else
  (the record travels as a workflow artifact every reader of the repository can
  download: nothing in it can be inverted to a secret);
- `fingerprint(changes)`: one SHA-256 of those changes, shown in the pull
  request and the apply report (a person approves a plan by it);
- `record(...)`: what the plan workflow uploads for each stack;
- `check(...)`: whether a fresh plan may be applied: every change in it must be
  a change the reviewed plan made, with the same actions and values (a value the
  reviewed plan did not know yet may be anything now), or what a failed apply left of
  one (a reviewed create that failed is tainted: its replacement). A reviewed
  change the fresh plan no longer has counts as applied only where the fresh
  plan's prior state shows it done. Or the person's approval names its fingerprint.
  A plan that destroys or replaces pcap data (the pcap volume, the archive
  bucket, their key) also needs an explicit allowance.
- `config_digest(dir)`: the synthesized stack directory, as one SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .. import jsontext
from ..errors import MirrorcapError, Problem
from .markdown import md_code, md_escape, one_line

RECORD_VERSION = 2  # 2: outputs recorded; sensitive values as "changed"/"unchanged", no digest of them
UNKNOWN = {"(known after apply)": True}  # not a value any resource attribute can hold
SENSITIVE = "(sensitive)"  # {SENSITIVE: "changed" | "unchanged"}: all a record keeps of a sensitive value
OUTPUT = "output"  # the type of an output's change; its address is output.<name>
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
# The action lists Terraform writes (plans.Action as JSON), for a managed resource and an output.
MANAGED_ACTIONS = {("no-op",), ("create",), ("update",), ("delete",), ("delete", "create"), ("create", "delete"),
                   ("forget",), ("create", "forget")}
DATA_ACTIONS = {("no-op",), ("read",)}
OUTPUT_ACTIONS = {("no-op",), ("create",), ("update",), ("delete",)}
REPLACE = {("delete", "create"), ("create", "delete")}
_NONE = object()  # no earlier value at this path (a create, a key that is new)


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _sha(value: Any) -> str:
    return hashlib.sha256(_canon(value).encode()).hexdigest()


def _shape(value: Any, unknown: Any, sensitive: Any, before: Any = _NONE) -> Any:
    """A planned value with its unknown parts marked and its sensitive parts replaced by whether
    they change (`before`: the value before the change at the same place)."""
    if unknown is True:
        return UNKNOWN
    if sensitive is True:
        return {SENSITIVE: "unchanged" if before is not _NONE and before == value else "changed"}
    if isinstance(value, Mapping) or isinstance(unknown, Mapping):
        v = value if isinstance(value, Mapping) else {}
        u = unknown if isinstance(unknown, Mapping) else {}
        s = sensitive if isinstance(sensitive, Mapping) else {}
        b = before if isinstance(before, Mapping) else {}
        return {k: _shape(v.get(k), u.get(k), s.get(k), b.get(k, _NONE)) for k in sorted(set(v) | set(u))}
    if isinstance(value, list) or isinstance(unknown, list):
        v = value if isinstance(value, list) else []
        u = unknown if isinstance(unknown, list) else []
        s = sensitive if isinstance(sensitive, list) else []
        b = before if isinstance(before, list) else []
        return [_shape(v[i] if i < len(v) else None, u[i] if i < len(u) else None, s[i] if i < len(s) else None,
                       b[i] if i < len(b) else _NONE)
                for i in range(max(len(v), len(u)))]
    return value


def _before(ch: Mapping[str, Any]) -> Any:
    """The value before the change, shaped as `after` is (nothing unknown in it)."""
    before = ch.get("before")
    return None if before is None else _shape(before, None, ch.get("before_sensitive"), before)


def normalize(plan: Mapping[str, Any]) -> list[dict]:
    """The plan's managed-resource and output changes, sorted by address: what a review approves."""
    out = []
    for rc in plan.get("resource_changes") or []:
        if rc.get("mode", "managed") != "managed":
            continue
        ch = rc.get("change") or {}
        actions = tuple(ch.get("actions") or ())
        if actions in SKIP_ACTIONS and not ch.get("importing"):
            continue
        address = rc.get("address", "?")
        if rc.get("deposed"):  # an object a create_before_destroy replacement left behind: never a reviewed change by itself
            address += f" (deposed object {rc['deposed']})"
        out.append({"address": address, "type": rc.get("type", "?"), "actions": list(actions),
                    "after": _shape(ch.get("after"), ch.get("after_unknown"), ch.get("after_sensitive"), ch.get("before", _NONE)),
                    "before": _before(ch), "reason": rc.get("action_reason"), "replace_paths": ch.get("replace_paths") or []})
    for name, oc in sorted((plan.get("output_changes") or {}).items()):
        actions = tuple(oc.get("actions") or ())
        if actions in SKIP_ACTIONS:
            continue
        out.append({"address": f"output.{name}", "type": OUTPUT, "actions": list(actions),
                    "after": _shape(oc.get("after"), oc.get("after_unknown"), oc.get("after_sensitive"), oc.get("before", _NONE)),
                    "before": _before(oc), "reason": None, "replace_paths": []})
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
    why: str  # Terraform's reason in words (plain text, from the plan: escape it to show it)
    data: str | None  # what pcap data goes with it (DATA_TYPES), or None
    paths: tuple[str, ...] = ()  # the arguments that force a replacement (plain text, from the plan)

    def markdown(self) -> str:
        """Why, as inert Markdown: the reason in words, then each forcing argument as code."""
        why = md_escape(self.why)
        if self.paths:
            why += ": " + ", ".join(md_code(p) for p in self.paths)
        return why


def destroys(changes: Iterable[Mapping]) -> list[Destroy]:
    """Every resource the plan deletes or replaces, with Terraform's reason in words
    and, for a replacement, the arguments that force it."""
    out = []
    for c in changes:
        actions = tuple(c["actions"])
        if "delete" not in actions or c.get("type") == OUTPUT:
            continue
        action = "replace" if "create" in actions else "delete"
        reason = c.get("reason") or ""
        paths = tuple(".".join(str(x) for x in p) for p in c.get("replace_paths") or [] if isinstance(p, list)) if action == "replace" else ()
        out.append(Destroy(c["address"], c.get("type", "?"), action, REASONS.get(reason, reason) or ("" if paths else "not given by Terraform"),
                           DATA_TYPES.get(c.get("type", "")), paths))
    return out


def gated(changes: Iterable[Mapping]) -> list[Destroy]:
    return [d for d in destroys(changes) if d.data]


# ---------------------------------------------------------------------------
# The record the plan workflow keeps, and the check the apply workflow makes

RECORD_FIX = "use the reviewed.json the plan workflow uploaded (mirrorcap review record), or plan the pull request again"


def record(plan: Mapping[str, Any], *, stack: str, digest: str, pr: int | None, commit: str) -> dict:
    changes = [{k: v for k, v in c.items() if k != "before"} for c in normalize(plan)]
    return {"version": RECORD_VERSION, "stack": stack, "config_digest": digest, "pr": pr, "commit": commit,
            "fingerprint": fingerprint(changes), "changes": changes,
            "gated": [d.address for d in gated(changes)]}


def _record_change_problem(c: Any) -> tuple[str, str] | None:
    """(where, what) is not as `record` writes a change, or None."""
    if not isinstance(c, dict):
        return "", "expected an object"
    for key in ("address", "type"):
        if not isinstance(c.get(key), str):
            return f".{key}", "expected a string"
    actions = c.get("actions")
    allowed = OUTPUT_ACTIONS if c["type"] == OUTPUT else MANAGED_ACTIONS
    if not isinstance(actions, list) or tuple(actions) not in allowed or tuple(actions) == ("no-op",) and c["type"] == OUTPUT:
        return ".actions", "expected one of Terraform's action lists for " + ("an output" if c["type"] == OUTPUT else "a resource")
    if c.get("after") == UNKNOWN:
        return ".after", "wholly unknown: Terraform always knows a planned object's shape (a record no plan wrote)"
    if not (c.get("reason") is None or isinstance(c.get("reason"), str)):
        return ".reason", "expected a string or null"
    if not isinstance(c.get("replace_paths", []), list):
        return ".replace_paths", "expected a list"
    return None


def parse_record(text: str, name: str, stack: str) -> dict:
    try:
        data = jsontext.loads(text)
    except ValueError as exc:
        raise MirrorcapError([Problem(name, "", f"not JSON: {str(exc)[:200]}", RECORD_FIX)])
    if not isinstance(data, dict) or data.get("version") != RECORD_VERSION or not isinstance(data.get("changes"), list):
        raise MirrorcapError([Problem(name, "version", f"not a version {RECORD_VERSION} reviewed-plan record", RECORD_FIX)])
    if data.get("stack") != stack:
        raise MirrorcapError([Problem(name, "stack", f"is the record of stack {one_line(repr(data.get('stack')))[:80]}, "
                                      f"not {stack!r}", RECORD_FIX)])
    for key, ok, what in (("pr", lambda v: v is None or isinstance(v, int) and not isinstance(v, bool), "a number or null"),
                          ("commit", lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{40}", v), "a commit SHA"),
                          ("config_digest", lambda v: isinstance(v, str) and re.fullmatch(r"sha256:[0-9a-f]{64}", v), "sha256:<hex>")):
        if not ok(data.get(key)):
            raise MirrorcapError([Problem(name, key, f"expected {what}", RECORD_FIX)])
    seen = set()
    for i, c in enumerate(data["changes"]):
        wrong = _record_change_problem(c)
        if wrong is None and c["address"] in seen:
            wrong = ".address", "given twice"
        if wrong:
            raise MirrorcapError([Problem(name, f"changes[{i}]{wrong[0]}", wrong[1], RECORD_FIX)])
        seen.add(c["address"])
    if data.get("fingerprint") != fingerprint(data["changes"]):
        raise MirrorcapError([Problem(name, "fingerprint", "does not match its changes (edited or truncated)", RECORD_FIX)])
    return data


def _is_sensitive(v: Any) -> bool:
    return isinstance(v, dict) and set(v) == {SENSITIVE}


def _matches(reviewed: Any, fresh: Any, before: Any = _NONE, *, state: bool = False, strict: bool = False) -> bool:
    """Is `fresh` what the review approved as `reviewed`? A value the review did not know may be
    anything now unless `strict` (see check). `state`: `fresh` is a value in the state, where a
    sensitive value is only known to be there."""
    if reviewed == UNKNOWN:
        # the review saw "(known after apply)": after a partial apply, any value it takes now (what was applied
        # makes values known that the review could not know: an output listing what it created,
        # tests/synth/test_reviewed_apply.py). `strict`: nothing was applied since, so nothing can have become
        # known: only "(known after apply)" again.
        return not strict or fresh == UNKNOWN
    if state and _is_sensitive(reviewed) and _is_sensitive(fresh):
        return True
    if isinstance(reviewed, dict) and isinstance(fresh, dict):
        b = before if isinstance(before, dict) else {}
        return set(reviewed) == set(fresh) and all(_matches(reviewed[k], fresh[k], b.get(k, _NONE), state=state, strict=strict) for k in reviewed)
    if isinstance(reviewed, list) and isinstance(fresh, list):
        b = before if isinstance(before, list) else []
        return len(reviewed) == len(fresh) and all(_matches(r, f, b[i] if i < len(b) else _NONE, state=state, strict=strict)
                                                   for i, (r, f) in enumerate(zip(reviewed, fresh)))
    return reviewed == fresh


def _show(v: Any) -> str:
    if v == UNKNOWN:
        return "(known after apply)"
    if _is_sensitive(v):
        return f"(sensitive, {v[SENSITIVE]})"
    text = _canon(v)
    return text if len(text) <= 80 else text[:79] + "…"


def _first_difference(reviewed: Any, fresh: Any, before: Any = _NONE, path: str = "", *, state: bool = False,
                      strict: bool = False) -> tuple[str, str, str]:
    """(path, reviewed, now) of the first place `fresh` does not match `reviewed`, each plain text."""
    if isinstance(reviewed, dict) and isinstance(fresh, dict) and reviewed != UNKNOWN and not _is_sensitive(reviewed):
        b = before if isinstance(before, dict) else {}
        for k in sorted(set(reviewed) | set(fresh)):
            if k not in reviewed or k not in fresh or not _matches(reviewed[k], fresh[k], b.get(k, _NONE), state=state, strict=strict):
                return _first_difference(reviewed.get(k), fresh.get(k), b.get(k, _NONE), f"{path}.{k}" if path else k, state=state, strict=strict)
    if isinstance(reviewed, list) and isinstance(fresh, list) and len(reviewed) == len(fresh):
        b = before if isinstance(before, list) else []
        for i, (r, f) in enumerate(zip(reviewed, fresh)):
            if not _matches(r, f, b[i] if i < len(b) else _NONE, state=state, strict=strict):
                return _first_difference(r, f, b[i] if i < len(b) else _NONE, f"{path}[{i}]", state=state, strict=strict)
    now = _show(fresh)
    return path or "(the whole value)", _show(reviewed), now


@dataclass(frozen=True)
class Difference:
    """One way the fresh plan is not the reviewed one. Every field is plain text from a plan or
    a record: `markdown()` shows it escaped."""
    address: str
    what: str
    path: str | None = None  # where the values differ, with reviewed and now
    reviewed: str = ""
    now: str = ""

    def text(self) -> str:
        values = f" {self.path}: reviewed {self.reviewed}, now {self.now}" if self.path else ""
        return one_line(f"{self.address}: {self.what}{values}")

    def markdown(self) -> str:
        values = f" {md_code(self.path)}: reviewed {md_code(self.reviewed)}, now {md_code(self.now)}" if self.path else ""
        return f"{md_code(self.address)}: {md_escape(self.what)}{values}"


@dataclass(frozen=True)
class Verdict:
    apply: bool
    nothing: bool  # the fresh plan changes nothing
    reason: str  # one line, plain text (addresses in it come from the plan: escape it to show it)
    fingerprint: str  # of the fresh plan
    differences: tuple[Difference, ...] = ()
    done: tuple[str, ...] = ()  # reviewed changes the fresh plan no longer has, done in its prior state
    gated: tuple[Destroy, ...] = field(default=())
    remainders: tuple[str, ...] = ()  # fresh changes accepted as what a failed apply left of a reviewed one


def _state(plan: Mapping[str, Any]) -> dict[str, Mapping]:
    """The fresh plan's prior state (Terraform's refreshed view of what exists): managed resources by address."""
    out: dict[str, Mapping] = {}
    root = ((plan.get("prior_state") or {}).get("values") or {}).get("root_module") or {}
    modules = [root]
    while modules:
        m = modules.pop()
        for r in m.get("resources") or []:
            if r.get("mode", "managed") == "managed":
                out[r["address"]] = r
        modules.extend(m.get("child_modules") or [])
    return out


def _not_done(r: Mapping, plan: Mapping[str, Any], state: Mapping[str, Mapping]) -> Difference | None:
    """Why a reviewed change missing from the fresh plan is not shown done by it, or None (done)."""
    actions = tuple(r["actions"])
    gone = actions in (("delete",), ("forget",), ("create", "forget"))
    what = f"reviewed {'+'.join(actions)}, not in the fresh plan and "
    if r["type"] == OUTPUT:
        oc = (plan.get("output_changes") or {}).get(r["address"][len("output."):])
        if gone:
            return None if oc is None else Difference(r["address"], what + "the output is still there")
        if oc is None:
            return Difference(r["address"], what + "the merged configuration has no such output")
        now = _shape(oc.get("before"), None, oc.get("before_sensitive"), oc.get("before"))
        if _matches(r["after"], now, state=True):
            return None
        return Difference(r["address"], what + "its value is not the reviewed one", *_first_difference(r["after"], now, state=True))
    res = state.get(r["address"])
    if gone:
        return None if res is None else Difference(r["address"], what + "it is still in the state")
    if res is None:
        return Difference(r["address"], what + "not in the state either (the merged configuration dropped it?)")
    if res.get("tainted"):
        return Difference(r["address"], what + "tainted in the state")
    now = _shape(res.get("values"), None, res.get("sensitive_values"), res.get("values"))
    if _matches(r["after"], now, state=True):
        return None
    return Difference(r["address"], what + "the state differs from the reviewed values", *_first_difference(r["after"], now, state=True))


def _remainder(r: Mapping, c: Mapping, state: Mapping[str, Mapping]) -> bool:
    """Is the fresh change `c` what a failed apply left of the reviewed change `r`?
    A reviewed create (or replacement) whose create failed: Terraform keeps the object tainted and
    plans its replacement; a reviewed replacement whose delete was done: a create."""
    fresh, reviewed = tuple(c["actions"]), tuple(r["actions"])
    res = state.get(c["address"])
    if fresh in REPLACE and c.get("reason") == "replace_because_tainted" and res is not None and res.get("tainted"):
        return reviewed == ("create",) or reviewed in REPLACE
    return fresh == ("create",) and reviewed in REPLACE and res is None


def _fresh_difference(r: Mapping, c: Mapping, state: Mapping[str, Mapping]) -> tuple[Difference | None, bool]:
    """(why the fresh change `c` is not the reviewed change `r` or None, whether it is what a failed apply left of it)."""
    remainder = False
    if r["actions"] != c["actions"]:
        if not _remainder(r, c, state):
            return Difference(c["address"], f"reviewed {'+'.join(r['actions'])}, now {'+'.join(c['actions'])}"), False
        remainder = True
    if not _matches(r["after"], c["after"], c.get("before", _NONE)):
        return Difference(c["address"], "planned values differ",
                          *_first_difference(r["after"], c["after"], c.get("before", _NONE))), remainder
    return None, remainder


def check(fresh_plan: Mapping[str, Any], reviewed: Mapping | Sequence[Mapping] | None, *, approved: Iterable[str] = (),
          allow_destroy: bool = False) -> Verdict:
    """May the fresh plan be applied? `reviewed`: the record of the pull request, or the records of
    every pull request the push merged (None or empty: none found); `approved`: fingerprints a person
    approved; `allow_destroy`: the label or input.

    Several records combine as one review of their union: each change of the fresh plan must be the
    change some record made at that address (or what a failed apply left of it), and each change a
    record made that the fresh plan no longer has must be shown done by its prior state in at least one
    record's form of it (a later pull request may have changed what an earlier one created)."""
    records = [reviewed] if isinstance(reviewed, Mapping) else list(reviewed or [])
    fresh = normalize(fresh_plan)
    fp = fingerprint(fresh)
    if not fresh:
        return Verdict(False, True, "no changes: nothing to apply", fp)
    data = tuple(gated(fresh))
    if data and not allow_destroy:
        names = ", ".join(d.address for d in data)
        return Verdict(False, False, f"refused: the plan destroys pcap data ({one_line(names)}): it needs the "
                       f"{DESTROY_LABEL} label on the pull request (or allow_destroy when run by hand)", fp, gated=data)
    if fp in set(approved):
        return Verdict(True, False, f"approved by fingerprint {fp}", fp, gated=data)
    if not records:
        return Verdict(False, False, "refused: no reviewed plan for this stack (no pull request planned it, or its plan "
                       "expired)", fp, gated=data)
    state = _state(fresh_plan)
    by_address: dict[str, list[Mapping]] = {}
    for rec in records:
        for c in rec["changes"]:
            by_address.setdefault(c["address"], []).append(c)
    differences: list[Difference] = []
    remainders: list[str] = []
    for c in fresh:
        candidates = by_address.get(c["address"])
        if not candidates:
            differences.append(Difference(c["address"], f"{'+'.join(c['actions'])} is not in the reviewed plan"))
            continue
        outcomes = [_fresh_difference(r, c, state) for r in candidates]
        passed = [rem for why, rem in outcomes if why is None]
        if not passed:
            differences.append(outcomes[0][0])
        elif all(passed):
            remainders.append(c["address"])
    in_fresh = {c["address"] for c in fresh}
    done = []
    for address, candidates in by_address.items():
        if address in in_fresh:
            continue
        whys = [_not_done(r, fresh_plan, state) for r in candidates]
        if any(why is None for why in whys):
            done.append(address)
        else:
            differences.append(whys[0])
    if not differences and not done and not remainders:
        # Nothing of the reviewed plan was applied since the review (no change of it done, none left tainted), so
        # nothing can have made a value known that the review saw as "(known after apply)": a record that shows a
        # value unknown where the fresh plan knows it is not the plan Terraform made (its unknowns hide values).
        for c in fresh:
            candidates = by_address[c["address"]]
            if not any(r["actions"] == c["actions"] and _matches(r["after"], c["after"], strict=True) for r in candidates):
                r = next((r for r in candidates if r["actions"] == c["actions"]), candidates[0])
                where, was, now = _first_difference(r["after"], c["after"], strict=True)
                differences.append(Difference(c["address"], "known at review, as nothing of the reviewed plan has been "
                                              "applied since, but the record says (known after apply)", where, was, now))
    what_plan = "the reviewed plan" if len(records) == 1 else f"the {len(records)} reviewed plans"
    if differences:
        return Verdict(False, False, f"refused: the plan differs from {'the one' if len(records) == 1 else 'the ones'} "
                       f"reviewed in the pull request{'s' if len(records) > 1 else ''} ({len(differences)} change(s))",
                       fp, tuple(differences), tuple(done), data, tuple(remainders))
    what = what_plan if not done else f"the rest of {what_plan} ({len(done)} change(s) applied already)"
    if remainders:
        what += f", {len(remainders)} of them what a failed apply left (tainted: replaced)"
    return Verdict(True, False, f"matches {what}", fp, (), tuple(done), data, tuple(remainders))
