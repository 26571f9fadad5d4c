"""A saved plan, read: `terraform show -json` checked to be the shape Terraform writes
(`parse_plan`), then counted as Terraform counts it (`summarize_plan`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from .. import jsontext
from ..errors import MirrorcapError, Problem
from .markdown import one_line
from .reviewed import DATA_ACTIONS, MANAGED_ACTIONS, OUTPUT_ACTIONS, REPLACE

PLAN_FIX = "pass `terraform show -json <saved plan file>` output (a plan, not the state)"

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



# How a comment or summary marks each action, as Terraform's plan text does.
SYMBOL = {"create": "+", "update": "~", "delete": "-", "replace": "-/+", "forget": ".", "import": "←"}
