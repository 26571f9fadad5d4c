"""What a merge's apply did to each stack (`apply_report`): the comment on the merged pull request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .comment import BUDGET, COMMENT_LIMIT, details, truncate
from .markdown import inert, md_cell, md_code, md_escape, md_fence

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
    table += [f"| {md_code(r.stack, table=True)} | {APPLY_STATUS.get(r.status, r.status)}: {md_cell(r.detail)} |" for r in rows]
    parts = [apply_marker(commit), head, "\n".join(table)]
    for r in bad:
        if r.report or r.log:
            why = truncate(r.report, 8_000) if r.report else ""
            if r.log:
                why += ("\n\n" if why else "") + "Terraform's output, its end:\n\n" + md_fence(truncate(inert(r.log), 4_000))
            parts.append(details(f"{md_escape(r.stack)}: why", why))
    if not rows:
        parts.append("No stack needed applying.")
    parts.append(f"[The workflow run]({run_url}): its summary has each stack's plan in full.")
    body = "\n\n".join(parts) + "\n"
    return body if len(body) <= COMMENT_LIMIT else truncate(body, BUDGET) + "\n"
