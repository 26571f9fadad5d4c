"""Plan review for pull requests, as pure functions: the workflow only moves files.

(a) `select_stacks`: which stacks a change needs planned, and why;
(b) `session_changes` + `session_sentences`: one stack's lock diff in words,
    checked against what the plan does to each session;
(c) `summarize_plan`: `terraform show -json` of a saved plan -> add/change/destroy;
(d) `comment`: the pull-request comment, starting with a hidden marker so a new
    push updates it instead of adding another; the full plan folded and cut to
    fit GitHub's comment limit;
(e) `drift_summary`: `mirrorcap check --json` and each stack's
    `terraform plan -detailed-exitcode` -> the scheduled job's summary;
(f) `apply_report`: what a merge's apply did to each stack -> the comment on
    the merged pull request.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Iterable, Mapping, Sequence

from .. import jsontext
from ..errors import MirrorcapError, Problem
from ..inventory.hclfile import parse_hcl
from ..contract import session_label
from ..numbering import lockfile
from ..numbering.sessions import by_capture
from .markdown import inert, md_code, md_escape, md_fence, one_line
from .reviewed import DATA_ACTIONS, MANAGED_ACTIONS, OUTPUT_ACTIONS, REPLACE

# ---------------------------------------------------------------------------
# Inputs read from text (a file of this checkout, or `git show BASE:path`)

LOCK_FIX = "pass the lock file next to the inventory (capture.lock.json), or an empty file where none existed"
PLAN_FIX = "pass `terraform show -json <saved plan file>` output (a plan, not the state)"

Lock = Mapping[str, Mapping[str, int]]  # capture -> source ID -> session number


def lock_path(inventory: str) -> str:
    """The lock beside an inventory (capture.hcl -> capture.lock.json), repository-relative."""
    return lockfile.path_for(inventory).as_posix()


def parse_lock(text: str, name: str) -> dict[str, dict[str, int]]:
    """capture -> source -> number, read as numbering reads the lock. An empty text is no lock at all
    (the base branch had none)."""
    if not text.strip():
        return {}
    return by_capture(lockfile.parse(text, name, LOCK_FIX))


# The largest plan JSON read. `terraform show -json` of the 1,000-source stack the benchmarks plan is a
# few MB (each session about 5 KB across resource_changes, planned_values, prior_state); 64 MiB is ten
# times that and more, and still parses in seconds in well under 1 GB of memory on a runner. A file
# larger than this is not a plan of a mirrorcap stack: refused before it is read.
MAX_PLAN_BYTES = 64 * 1024 * 1024
MAX_TEXT_BYTES = 64 * 1024 * 1024  # the plan text, a log, a record, check output: the same bound


def parse_plan(text: str, name: str) -> dict:
    """`terraform show -json` of a saved plan, checked to be the shape Terraform writes, as far as
    summarize_plan, reviewed.normalize, reviewed.check and cost.plan_cost read it."""
    if len(text) > MAX_PLAN_BYTES:
        raise MirrorcapError([Problem(name, "", f"{len(text):,} characters: larger than any plan of a mirrorcap stack "
                                      f"({MAX_PLAN_BYTES // 2**20} MiB)", PLAN_FIX)])
    try:
        data = jsontext.loads(text)
    except ValueError as exc:
        raise MirrorcapError([Problem(name, "", f"not JSON: {str(exc)[:200]}", PLAN_FIX)])
    if not isinstance(data, dict) or "format_version" not in data:
        raise MirrorcapError([Problem(name, "format_version", "not Terraform's JSON output", PLAN_FIX)])
    if "planned_values" not in data and "resource_changes" not in data:
        raise MirrorcapError([Problem(name, "resource_changes", "Terraform JSON without a plan (state or configuration output?)",
                                      PLAN_FIX)])
    if not isinstance(data.get("resource_changes", []), list):
        raise MirrorcapError([Problem(name, "resource_changes", "expected a list", PLAN_FIX)])
    if not isinstance(data.get("errored", False), bool):
        raise MirrorcapError([Problem(name, "errored", "expected true or false", PLAN_FIX)])
    seen: set[tuple[str, Any]] = set()
    for i, rc in enumerate(data.get("resource_changes", [])):
        wrong = _resource_change_problem(rc)
        if wrong is None and (rc["address"], rc.get("deposed")) in seen:
            wrong = ".address", "given twice (Terraform writes one change per resource instance)"
        if wrong:
            raise MirrorcapError([Problem(name, f"resource_changes[{i}]{wrong[0]}", wrong[1], PLAN_FIX)])
        seen.add((rc["address"], rc.get("deposed")))
    outputs = data.get("output_changes", {})
    if not isinstance(outputs, dict):
        raise MirrorcapError([Problem(name, "output_changes", "expected an object", PLAN_FIX)])
    for key, oc in outputs.items():
        wrong = _change_problem(oc, OUTPUT_ACTIONS, "an output")
        if wrong:
            raise MirrorcapError([Problem(name, f"output_changes.{one_line(key)[:80]}{wrong[0]}", wrong[1], PLAN_FIX)])
    wrong = _prior_state_problem(data.get("prior_state"))
    if wrong:
        raise MirrorcapError([Problem(name, f"prior_state{wrong[0]}", wrong[1], PLAN_FIX)])
    return data


def _words(actions: set[tuple[str, ...]]) -> str:
    return ", ".join(sorted("[" + ", ".join(a) + "]" for a in actions))


def _change_problem(change: Any, allowed: set[tuple[str, ...]], what: str) -> tuple[str, str] | None:
    if not isinstance(change, dict):
        return "", "expected an object"
    actions = change.get("actions")
    if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions) or tuple(actions) not in allowed:
        return ".actions", f"not an action list Terraform writes for {what} ({_words(allowed)})"
    return None


def _resource_change_problem(rc: Any) -> tuple[str, str] | None:
    """(where, what) is not as Terraform writes a resource change, or None."""
    if not isinstance(rc, dict):
        return "", "expected an object"
    if not isinstance(rc.get("address"), str):
        return ".address", "expected a string"
    for key in ("type", "mode", "deposed"):
        if key in rc and not isinstance(rc[key], str):
            return f".{key}", "expected a string"
    mode = rc.get("mode", "managed")
    if mode not in ("managed", "data"):
        return ".mode", "expected managed or data"
    if "index" in rc and not (rc["index"] is None or isinstance(rc["index"], (str, int)) and not isinstance(rc["index"], bool)):
        return ".index", "expected a string or a number (a for_each key or a count index)"
    if "action_reason" in rc and not (isinstance(rc["action_reason"], str) and re.fullmatch(r"[a-z_]{1,64}", rc["action_reason"])):
        return ".action_reason", "expected one of Terraform's reasons (a word like replace_because_tainted)"
    change = rc.get("change")
    if not isinstance(change, dict):
        return ".change", "expected an object"
    wrong = _change_problem(change, MANAGED_ACTIONS if mode == "managed" else DATA_ACTIONS,
                            "a managed resource" if mode == "managed" else "a data source")
    if wrong:
        return ".change" + wrong[0], wrong[1]
    for key in ("before", "after"):
        if change.get(key) is not None and not isinstance(change[key], dict):
            return f".change.{key}", "expected an object or null"
    if not isinstance(change.get("importing") or {}, dict):
        return ".change.importing", "expected an object"
    paths = change.get("replace_paths")
    if paths is not None:
        if tuple(change["actions"]) not in REPLACE:
            return ".change.replace_paths", "given for a change that is not a replacement"
        if not isinstance(paths, list) or not all(
                isinstance(p, list) and p and all(isinstance(x, str) or isinstance(x, int) and not isinstance(x, bool) for x in p)
                for p in paths):
            return ".change.replace_paths", "expected a list of attribute paths (each a list of names and indexes)"
    return None


def _prior_state_problem(state: Any) -> tuple[str, str] | None:
    """(where, what) is not the shape of Terraform's prior_state as reviewed.check reads it, or None."""
    if state is None:
        return None
    if not isinstance(state, dict) or not isinstance(state.get("values", {}), dict):
        return "", "expected an object with values"
    modules = [("values.root_module", (state.get("values") or {}).get("root_module") or {})]
    while modules:
        where, m = modules.pop()
        if not isinstance(m, dict) or not isinstance(m.get("resources", []), list) or not isinstance(m.get("child_modules", []), list):
            return f".{where}", "expected a module (resources and child_modules lists)"
        for i, r in enumerate(m.get("resources") or []):
            if not isinstance(r, dict) or not isinstance(r.get("address"), str) or not isinstance(r.get("values", {}), dict) \
                    or not isinstance(r.get("tainted", False), bool) or not isinstance(r.get("mode", ""), str):
                return f".{where}.resources[{i}]", "expected a resource (address, mode, values, tainted)"
        modules.extend((f"{where}.child_modules[{i}]", c) for i, c in enumerate(m.get("child_modules") or []))
    return None


# ---------------------------------------------------------------------------
# (a) Stack selection

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


# ---------------------------------------------------------------------------
# (b) Session-number changes, from the lock diff


@dataclass(frozen=True)
class SessionChange:
    source: str
    kind: str  # new | renumbered | removed
    before: int | None
    after: int | None


def session_changes(before: Mapping[str, int], after: Mapping[str, int]) -> list[SessionChange]:
    """One stack's lock entries, before -> after: new, then renumbered, then removed; by source ID."""
    new = [SessionChange(s, "new", None, after[s]) for s in sorted(set(after) - set(before))]
    moved = [SessionChange(s, "renumbered", before[s], after[s]) for s in sorted(set(after) & set(before)) if before[s] != after[s]]
    gone = [SessionChange(s, "removed", before[s], None) for s in sorted(set(before) - set(after))]
    return new + moved + gone


# ---------------------------------------------------------------------------
# (c) The plan


@dataclass(frozen=True)
class ResourceChange:
    address: str
    type: str
    index: Any  # the for_each key (a source ID for sessions), or None
    action: str  # create | update | delete | replace | forget | import (import alone) | "+"-joined others
    before: Mapping[str, Any]
    after: Mapping[str, Any]
    importing: bool = False


@dataclass(frozen=True)
class PlanSummary:
    changes: tuple[ResourceChange, ...]  # managed resources that change, in Terraform's order
    add: int = 0
    change: int = 0
    destroy: int = 0
    imports: int = 0
    forget: int = 0
    errored: bool = False
    outputs: int = 0  # outputs the plan creates, changes or removes

    def line(self) -> str:
        """Terraform's own summary line, so the comment and the plan text agree."""
        if not (self.add or self.change or self.destroy or self.imports or self.forget):
            return f"Changes to Outputs only ({self.outputs})." if self.outputs else "No changes."
        head = f"{self.imports} to import, " if self.imports else ""
        tail = f", {self.forget} to forget" if self.forget else ""
        return f"Plan: {head}{self.add} to add, {self.change} to change, {self.destroy} to destroy{tail}."


_ACTIONS = {("create",): "create", ("update",): "update", ("delete",): "delete", ("forget",): "forget",
            ("delete", "create"): "replace", ("create", "delete"): "replace"}


def summarize_plan(plan: Mapping[str, Any]) -> PlanSummary:
    """Counted as Terraform counts them: a replacement is one add and one destroy; data reads are not changes."""
    changes, add, change, destroy, imports, forget = [], 0, 0, 0, 0, 0
    for rc in plan.get("resource_changes") or []:
        if rc.get("mode", "managed") != "managed":
            continue
        ch = rc.get("change") or {}
        actions = tuple(ch.get("actions") or ())
        importing = bool(ch.get("importing"))
        imports += importing
        if actions == ("no-op",):
            if not importing:
                continue
            action = "import"
        else:
            action = _ACTIONS.get(actions, "+".join(actions))
        add += action in ("create", "replace") or actions == ("create", "forget")
        destroy += action in ("delete", "replace")
        change += action == "update"
        forget += "forget" in actions
        changes.append(ResourceChange(rc.get("address", "?"), rc.get("type", "?"), rc.get("index"), action,
                                      ch.get("before") or {}, ch.get("after") or {}, importing))
    outputs = sum(tuple(oc.get("actions") or ()) not in (("no-op",), ()) for oc in (plan.get("output_changes") or {}).values())
    return PlanSummary(tuple(changes), add, change, destroy, imports, forget, bool(plan.get("errored")), outputs)


SESSION_TYPE = "aws_ec2_traffic_mirror_session"
# Session arguments a plan may change in place, worth naming in a sentence.
SESSION_ARGS = ("session_number", "virtual_network_id", "packet_length", "description", "traffic_mirror_filter_id",
                "traffic_mirror_target_id")
LABEL_CHARS = 80  # of a session's description, in its sentence
_EXPECTED = {"new": {"create"}, "removed": {"delete"}, "renumbered": {"update", "replace"}}


def _label(stack: str, source: str, rc: ResourceChange | None) -> str:
    ident = md_code(source) if re.fullmatch(r"[A-Za-z0-9._:-]+", source) else md_escape(source)
    values = (rc.after or rc.before) if rc else {}
    description = values.get("description") if isinstance(values, Mapping) else None
    if isinstance(description, str):
        text = session_label(stack, description)
        if text and text != source:
            short = text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "…"
            return f"{ident} {md_escape(short)}"
    return ident


def session_sentences(stack: str, changes: Sequence[SessionChange], plan: PlanSummary | None) -> list[str]:
    """The lock diff in words ("`eni-…` web-2: new session 3"), each checked against
    what the plan does to that session; then sessions the plan changes that the
    lock does not explain (drift, a VNI or description change)."""
    planned = {rc.index: rc for rc in plan.changes if rc.type == SESSION_TYPE} if plan else {}
    lines: list[str] = []
    for ch in changes:
        rc = planned.get(ch.source)
        label = _label(stack, ch.source, rc)
        if ch.kind == "new":
            text = f"{label}: new session {ch.after}"
        elif ch.kind == "removed":
            text = f"{label}: session {ch.before} removed"
        else:
            text = f"{label}: session {ch.before} renumbered to {ch.after}"
        if plan is not None and not plan.errored:
            if rc is None or rc.action not in _EXPECTED[ch.kind]:
                done = "leaves it unchanged" if rc is None else f"does {md_code(rc.action)} it"
                text += f" **but the plan {done}**: the lock and the stack disagree"
            elif rc.action == "replace":
                text += " (replaced: deleted, then created)"
        lines.append(text)
    explained = {ch.source for ch in changes}
    for index, rc in planned.items():
        if index in explained:
            continue
        label = _label(stack, str(index), rc)
        number = md_escape((rc.after or {}).get("session_number", (rc.before or {}).get("session_number")))
        if rc.action == "create":
            lines.append(f"{label}: session {number} created with no lock change (missing from the account or the state)")
        elif rc.action == "delete":
            lines.append(f"{label}: session {number} destroyed with no lock change")
        else:
            diffs = [f"{k} {rc.before.get(k)} → {rc.after.get(k)}" for k in SESSION_ARGS
                     if k in rc.after and rc.before.get(k) != rc.after.get(k)]
            what = {"update": "updated", "replace": "replaced"}.get(rc.action) or md_escape(rc.action)
            lines.append(f"{label}: session {number} {what}" + (f": {md_escape(', '.join(diffs))}" if diffs else ""))
    return lines


# ---------------------------------------------------------------------------
# (d) The comment

COMMENT_LIMIT = 65_536  # GitHub's maximum comment body, in characters
BUDGET = 60_000  # what a comment may fill: a wide margin under the limit
MAX_LINES = 100  # per list (sessions, resources): a 1,000-source stack still fits
LIST_BUDGET = 15_000  # characters per list, whatever its lines hold: the plan keeps the rest
_SYMBOL = {"create": "+", "update": "~", "delete": "-", "replace": "-/+", "forget": ".", "import": "←"}


def marker(stack: str) -> str:
    """The first line of every comment for `stack`: how the workflow finds the one to update."""
    return f"<!-- mirrorcap-review:{stack} -->"


def _capped(rows: Sequence[str], more: str) -> list[str]:
    """The first rows that fit MAX_LINES and LIST_BUDGET, then `more` naming how many were left out."""
    shown: list[str] = []
    used = 0
    for row in rows[:MAX_LINES]:
        if used + len(row) + 1 > LIST_BUDGET:
            break
        shown.append(row)
        used += len(row) + 1
    if len(shown) < len(rows):
        shown.append(more.format(n=len(rows) - len(shown)))
    return shown


def _bullets(lines: Sequence[str], what: str) -> str:
    return "\n".join(_capped([f"- {line}" for line in lines], f"- … and {{n}} more {what} (see the full plan)"))


def truncate(text: str, budget: int) -> str:
    """`text` within `budget` characters: its head and its tail (where Terraform's
    summary and errors are), whole lines, and a line saying what was left out."""
    if len(text) <= budget:
        return text
    lines = text.splitlines()
    room = max(budget - 200, 0)
    head: list[str] = []
    tail: list[str] = []
    used = 0
    for line in lines:  # two thirds of the room for the head
        if used + len(line) + 1 > room * 2 // 3:
            break
        head.append(line)
        used += len(line) + 1
    for line in reversed(lines[len(head):]):
        if used + len(line) + 1 > room:
            break
        tail.insert(0, line)
        used += len(line) + 1
    skipped = len(lines) - len(head) - len(tail)
    note = f"… {skipped} line(s) not shown ({len(text):,} characters in all): the whole plan is in the workflow run's log …"
    return "\n".join([*head, note, *tail])


def _details(summary: str, body: str) -> str:
    return f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>"


def destroy_warning(destroys: Sequence[Any], *, label: str, allowed: bool) -> str:
    """A GitHub CAUTION block naming every resource the plan deletes or replaces and why;
    those that lose pcap data are said so, with the label a merge needs to apply them."""
    replaced = sum(d.action == "replace" for d in destroys)
    rows = []
    for d in destroys:
        what = "**replaced** (destroyed, then created)" if d.action == "replace" else "**destroyed**"
        loss = f" **Loses {d.data}.**" if d.data else ""
        rows.append(f"{md_code(d.address)}: {what}: {d.markdown()}.{loss}")
    lines = ["> [!CAUTION]", f"> **This plan destroys {len(destroys)} resource(s)**: {replaced} replaced, "
             f"{len(destroys) - replaced} deleted.", ">"]
    lines += [f"> {row}" for row in _capped([f"- {r}" for r in rows], "- … and {n} more (see the full plan)")]
    if any(d.data for d in destroys):
        lines.append(">")
        lines.append(f"> The `{label}` label is on this pull request: a merge applies this plan." if allowed else
                     f"> **A merge does not apply this plan** until the `{label}` label is on this pull request "
                     "(the plan check fails until then).")
    return "\n".join(lines)


def removal_note(stack: str, entry: Mapping[str, Any], *, inventory: str, label: str) -> str:
    """What a stack's entry in `review stacks` says the change does to its capture, for the comment:
    removed (its whole stack destroyed, or refused while its volume is protected), or added while
    another was removed (a renamed block is both). "" for any other stack."""
    removal = entry.get("removal")
    if isinstance(removal, Mapping):
        head = f"> **Capture {md_code(stack)} was removed from {md_code(inventory)}**: "
        if removal.get("protected"):
            lines = ["> [!WARNING]", head + "its pcap volume keeps `prevent_destroy = true` (the default), so the plan of "
                     "its destroy refuses: nothing is destroyed, and this check fails. To remove the capture, first set "
                     "`storage { prevent_destroy = false }` in its block in a pull request of its own (merged and applied), "
                     "then remove the block."]
        else:
            lines = ["> [!WARNING]", head + "this plan destroys everything its stack deployed, listed below: the capture "
                     "host, its mirror sessions, its pcap volume, archive bucket and key (those it has) and every pcap on them.",
                     ">", f"> The pcap volume, archive bucket and key go only with the `{label}` label on this pull "
                     "request: without it the plan check fails and a merge applies nothing of this plan."]
        added = [a for a in removal.get("added") or [] if isinstance(a, str)]
        if added:
            lines += [">", f"> This pull request also adds {', '.join(md_code(a) for a in added[:MAX_LINES])}. A capture "
                      "renamed in the inventory is this: a removal and an addition, so a new host and a new, empty pcap "
                      "volume are created and the old ones destroyed with their pcaps. To keep them, keep the block's name."]
        return "\n".join(lines)
    gone = [g for g in entry.get("added_with_removal") or [] if isinstance(g, str)]
    if gone:
        return (f"> [!NOTE]\n> Capture {md_code(stack)} is new, and this pull request removes "
                f"{', '.join(md_code(g) for g in gone[:MAX_LINES])}: if it is a rename, the old capture's host and pcap "
                "volume are destroyed (its own comment) and this one starts empty.")
    return ""


def comment(stack: str, *, plan: PlanSummary | None, plan_text: str, sessions: Sequence[str], lock_name: str,
            commit: str | None = None, local_state: bool = False, destroys: Sequence[Any] = (), cost: Sequence[str] = (),
            fingerprint: str | None = None, destroy_label: str = "", destroy_allowed: bool = False, note: str = "",
            removed: bool = False) -> str:
    """The pull-request comment for one stack. `plan` None: the plan failed and
    `plan_text` is Terraform's output. `destroys` (reviewed.destroys), `cost`
    (cost.cost_lines) and `fingerprint` (reviewed.fingerprint) come from the same plan.
    `note` (removal_note, Markdown) follows the heading; `removed`: the capture left the inventory."""
    title = f"capture `{stack}` removed from the inventory" if removed else f"`{stack}`"
    parts = [marker(stack), f"### mirrorcap plan: {title}" + (f" at {commit[:12]}" if commit else "")]
    if note:
        parts.append(note)
    if plan is None or plan.errored:
        parts.append("**The plan failed**: Terraform's output is below. Fix the cause and push again.")
    else:
        parts.append(f"**{plan.line()}**")
        if destroys:
            parts.append(destroy_warning(destroys, label=destroy_label, allowed=destroy_allowed))
        if cost:
            parts.append("\n".join(cost))
    if local_state:
        parts.append(f'> **Warning**: stack `{stack}` keeps its Terraform state locally, so this plan cannot see what is '
                     'deployed. Declare `backend "s3" { ... }` in its capture block before applying from CI.')
    if sessions:
        parts.append(f"**Mirror sessions** (from `{lock_name}`):\n\n{_bullets(sessions, 'sessions')}")
    else:
        parts.append(f"Mirror sessions: no session number changes in `{lock_name}`.")
    if plan is not None and plan.changes:
        rows = _capped([f"| `{_SYMBOL.get(rc.action, '?')}` | {md_escape(rc.action)} | {md_code(rc.address, table=True)} |" for rc in plan.changes],
                       "| | | … and {n} more (see the full plan) |")
        parts.append(_details(f"Resource changes ({len(plan.changes)})", "| | action | address |\n| --- | --- | --- |\n"
                              + "\n".join(rows)))
    if fingerprint and plan is not None and not plan.errored:
        parts.append(f"Plan fingerprint `{fingerprint}`: a merge applies this plan, or the part of it not applied yet, "
                     "and refuses anything else (workflows/README.md).")
    head = "\n\n".join(parts)
    folded = "Full plan" if plan is not None else "Terraform output"
    room = BUDGET - len(head) - len(_details(folded, md_fence(""))) - 10
    parts.append(_details(folded, md_fence(truncate(inert(plan_text), max(room, 0)))))
    body = "\n\n".join(parts) + "\n"
    if len(body) > COMMENT_LIMIT:  # only the lists and the folded text grow; both are capped above
        raise AssertionError(f"comment for {stack} is {len(body)} characters, over GitHub's {COMMENT_LIMIT}")
    return body


def unaffected_comment(stack: str, commit: str | None = None) -> str:
    """What an earlier comment becomes when a later push no longer changes its stack."""
    at = f" as of {commit[:12]}" if commit else ""
    return (f"{marker(stack)}\n\n### mirrorcap plan: `{stack}`\n\n"
            f"This pull request no longer changes stack `{stack}`{at}: nothing to plan.\n")


def removed_comment(stack: str, inventory: str) -> str:
    return f"{marker(stack)}\n\n### mirrorcap: capture `{stack}` removed\n\n> **Warning**: {removed_advice(stack, inventory)}\n"


# ---------------------------------------------------------------------------
# (e) The drift check's summary

CHECK_FIX = "pass the output of `mirrorcap check --json` (one JSON object, printed on drift and on errors alike)"


def parse_check(text: str, name: str) -> dict:
    try:
        data = jsontext.loads(text)
    except ValueError as exc:
        raise MirrorcapError([Problem(name, "", f"not JSON ({exc}): did `mirrorcap check` run at all?", CHECK_FIX)])
    if not isinstance(data, dict) or "drift" not in data or not isinstance(data.get("findings", []), list):
        raise MirrorcapError([Problem(name, "drift", "not `mirrorcap check --json` output", CHECK_FIX)])
    if not isinstance(data.get("error") or [], list) or not all(isinstance(e, dict) for e in data.get("error") or []):
        raise MirrorcapError([Problem(name, "error", "expected a list of problems (objects)", CHECK_FIX)])
    return data


def _cell(text: Any) -> str:
    return md_escape(text).replace("\\|", "&#124;")


@dataclass(frozen=True)
class TerraformDrift:
    """One stack's `terraform plan -detailed-exitcode`: 0 in step, 2 differs, anything else could not plan."""
    stack: str
    exit_code: int
    plan: PlanSummary | None = None
    log_tail: str = ""

    @property
    def drift(self) -> bool:
        return self.exit_code == 2

    @property
    def failed(self) -> bool:
        return self.exit_code not in (0, 2)


def terraform_drift_summary(results: Sequence[TerraformDrift]) -> str:
    """Each stack planned against its state: in step, differs (what would change), or could not plan (why)."""
    if not results:
        return ""
    lines = ["## terraform plan: " + ("no drift" if not any(r.drift or r.failed for r in results) else
                                      f"{sum(r.drift for r in results)} stack(s) differ, {sum(r.failed for r in results)} "
                                      "could not be planned"), ""]
    for r in results:
        if r.failed:
            lines.append(f"- {md_code(r.stack)}: **could not plan** (exit {r.exit_code}):\n\n{md_fence(r.log_tail or '(no output)')}\n")
        elif r.drift:
            changes = r.plan.changes if r.plan else ()
            lines.append(f"- {md_code(r.stack)}: **differs from the configuration**: {r.plan.line() if r.plan else 'changes planned'} "
                         "Changed in the console, or merged and not applied; `make diff STACK=...` shows it, a reviewed "
                         "pull request (or the apply workflow) brings it back.")
            lines += [f"  - `{_SYMBOL.get(rc.action, '?')}` {md_escape(rc.action)} {md_code(rc.address)}" for rc in changes[:MAX_LINES]]
            if len(changes) > MAX_LINES:
                lines.append(f"  - … and {len(changes) - MAX_LINES} more")
        else:
            lines.append(f"- {md_code(r.stack)}: in step with its state")
    return "\n".join(lines) + "\n"


def drift_summary(report: Mapping[str, Any]) -> str:
    """Markdown for the job summary: what drifted and each fix, or why nothing could be checked."""
    if report.get("drift") is None:
        errors = report.get("error") or []
        lines = [f"- {_cell(e.get('file', ''))}: {_cell(e.get('field', ''))}: {_cell(e.get('message', ''))}  \n"
                 f"  fix: {_cell(e.get('fix', ''))}" for e in errors if isinstance(e, Mapping)]
        return "## mirrorcap check: could not check\n\n" + ("\n".join(lines) or "- no error was reported") + "\n"
    findings = [f for f in report.get("findings") or [] if isinstance(f, Mapping)]
    if not report.get("drift") and not findings:
        return "## mirrorcap check: no drift\n\nEvery capture matches the inventory.\n"
    captures = sorted({str(f.get("capture", "")) for f in findings})
    rows = [f"| {_cell(f.get('capture', ''))} | {_cell(f.get('kind', ''))} | {_cell(f.get('subject', ''))} | "
            f"{_cell(f.get('detail', ''))} | {_cell(f.get('fix', ''))} |" for f in findings]
    return (f"## mirrorcap check: drift in {len(captures)} capture(s)\n\n"
            "| capture | kind | subject | detail | fix |\n| --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n")


# ---------------------------------------------------------------------------
# (f) What an apply did, for the merged pull request

APPLY_STATUS = {"applied": "✅ applied", "no-changes": "✅ nothing to apply", "refused": "⛔ not applied (refused)",
                "failed": "❌ apply failed", "not-started": "⏸ not started"}


@dataclass(frozen=True)
class StackResult:
    stack: str
    status: str  # a key of APPLY_STATUS
    detail: str  # one line
    report: str = ""  # Markdown (review verify --report): the refusal's differences
    log: str = ""  # raw text: the end of a failed plan's or apply's output, fenced when shown


def apply_marker(commit: str) -> str:
    return f"<!-- mirrorcap-apply:{commit} -->"


def apply_report(results: Sequence[StackResult], expected: Sequence[str] | None, *, commit: str, run_url: str) -> str:
    """The comment on the merged pull request: per stack applied / nothing / refused /
    failed, with why, and the run. A stack the run was to apply and never reached
    (the run stopped) is said so, and so is a run that stopped before it knew which
    stacks to apply (`expected` None): every merged change ends applied or visibly not."""
    if expected is None:
        return (f"{apply_marker(commit)}\n\n### mirrorcap apply at {commit[:12]}: **nothing applied**\n\n"
                "The run stopped before it chose the stacks to apply (setup, validation or synth failed). "
                f"[The workflow run]({run_url}) says why; re-run it once fixed, or run the apply workflow by hand.\n")
    by = {r.stack: r for r in results}
    rows = [by.get(n) or StackResult(n, "not-started", "the run stopped before this stack: see the run")
            for n in [*expected, *[r.stack for r in results if r.stack not in expected]]]
    bad = [r for r in rows if r.status not in ("applied", "no-changes")]
    head = (f"### mirrorcap apply at {commit[:12]}: " +
            (f"all {len(rows)} stack(s) applied" if not bad else f"**{len(bad)} of {len(rows)} stack(s) not applied**"))
    table = ["| stack | result |", "| --- | --- |"]
    table += [f"| {md_code(r.stack, table=True)} | {APPLY_STATUS.get(r.status, r.status)}: {_cell(r.detail)} |" for r in rows]
    parts = [apply_marker(commit), head, "\n".join(table)]
    for r in bad:
        if r.report or r.log:
            why = truncate(r.report, 8_000) if r.report else ""
            if r.log:
                why += ("\n\n" if why else "") + "Terraform's output, its end:\n\n" + md_fence(truncate(inert(r.log), 4_000))
            parts.append(_details(f"{md_escape(r.stack)}: why", why))
    if not rows:
        parts.append("No stack needed applying.")
    parts.append(f"[The workflow run]({run_url}): its summary has each stack's plan in full.")
    body = "\n\n".join(parts) + "\n"
    return body if len(body) <= COMMENT_LIMIT else truncate(body, BUDGET) + "\n"
