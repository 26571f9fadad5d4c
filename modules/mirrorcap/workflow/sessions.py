"""Session-number changes in words: one stack's lock diff (`session_changes`), each checked
against what the plan does to that session (`session_sentences`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from ..contract import session_label
from ..numbering import lockfile
from ..numbering.sessions import by_capture
from .markdown import md_code, md_escape
from .plan import PlanSummary, ResourceChange

# The lock read from text (a file of this checkout, or `git show BASE:path`).
LOCK_FIX = "pass the lock file next to the inventory (capture.lock.json), or an empty file where none existed"

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
