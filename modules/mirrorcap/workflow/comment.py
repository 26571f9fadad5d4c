"""The pull-request comment for one stack: a hidden marker first, so a new push updates it
instead of adding another; the plan's summary, destroys, cost and session sentences; the full
plan folded and cut to fit GitHub's comment limit."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .markdown import inert, md_code, md_escape, md_fence
from .plan import SYMBOL, PlanSummary
from .stacks import removed_advice

COMMENT_LIMIT = 65_536  # GitHub's maximum comment body, in characters
BUDGET = 60_000  # what a comment may fill: a wide margin under the limit
MAX_LINES = 100  # per list (sessions, resources): a 1,000-source stack still fits
LIST_BUDGET = 15_000  # characters per list, whatever its lines hold: the plan keeps the rest


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


def details(summary: str, body: str) -> str:
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
        rows = _capped([f"| `{SYMBOL.get(rc.action, '?')}` | {md_escape(rc.action)} | {md_code(rc.address, table=True)} |" for rc in plan.changes],
                       "| | | … and {n} more (see the full plan) |")
        parts.append(details(f"Resource changes ({len(plan.changes)})", "| | action | address |\n| --- | --- | --- |\n"
                              + "\n".join(rows)))
    if fingerprint and plan is not None and not plan.errored:
        parts.append(f"Plan fingerprint `{fingerprint}`: a merge applies this plan, or the part of it not applied yet, "
                     "and refuses anything else (workflows/README.md).")
    head = "\n\n".join(parts)
    folded = "Full plan" if plan is not None else "Terraform output"
    room = BUDGET - len(head) - len(details(folded, md_fence(""))) - 10
    parts.append(details(folded, md_fence(truncate(inert(plan_text), max(room, 0)))))
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
