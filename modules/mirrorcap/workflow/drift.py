"""The scheduled drift check's summary: `mirrorcap check --json` (`drift_summary`) and each
stack's `terraform plan -detailed-exitcode` (`terraform_drift_summary`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .. import jsontext
from ..errors import MirrorcapError, Problem
from .comment import MAX_LINES
from .markdown import md_cell, md_code, md_escape, md_fence
from .plan import SYMBOL, PlanSummary

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
            lines += [f"  - `{SYMBOL.get(rc.action, '?')}` {md_escape(rc.action)} {md_code(rc.address)}" for rc in changes[:MAX_LINES]]
            if len(changes) > MAX_LINES:
                lines.append(f"  - … and {len(changes) - MAX_LINES} more")
        else:
            lines.append(f"- {md_code(r.stack)}: in step with its state")
    return "\n".join(lines) + "\n"


def drift_summary(report: Mapping[str, Any]) -> str:
    """Markdown for the job summary: what drifted and each fix, or why nothing could be checked."""
    if report.get("drift") is None:
        errors = report.get("error") or []
        lines = [f"- {md_cell(e.get('file', ''))}: {md_cell(e.get('field', ''))}: {md_cell(e.get('message', ''))}  \n"
                 f"  fix: {md_cell(e.get('fix', ''))}" for e in errors if isinstance(e, Mapping)]
        return "## mirrorcap check: could not check\n\n" + ("\n".join(lines) or "- no error was reported") + "\n"
    findings = [f for f in report.get("findings") or [] if isinstance(f, Mapping)]
    if not report.get("drift") and not findings:
        return "## mirrorcap check: no drift\n\nEvery capture matches the inventory.\n"
    captures = sorted({str(f.get("capture", "")) for f in findings})
    rows = [f"| {md_cell(f.get('capture', ''))} | {md_cell(f.get('kind', ''))} | {md_cell(f.get('subject', ''))} | "
            f"{md_cell(f.get('detail', ''))} | {md_cell(f.get('fix', ''))} |" for f in findings]
    return (f"## mirrorcap check: drift in {len(captures)} capture(s)\n\n"
            "| capture | kind | subject | detail | fix |\n| --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n")
