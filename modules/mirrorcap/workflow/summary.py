"""A workflow step's summary under GitHub's cap: GitHub refuses a step summary over 1 MiB
whole ("$GITHUB_STEP_SUMMARY upload aborted, supports content up to a size of 1024k"), and the
verdict with it. So the verdict comes first, then each section (a stack's report and plan) while
it fits, whole; the sections left out are named in a note at the end (the run's log has them)."""

from __future__ import annotations

from typing import Sequence

from .markdown import md_code

CAP = 1024 * 1024  # bytes: GitHub's limit on one step's summary
MARGIN = 16 * 1024  # kept free under it: the note, and GitHub's own counting


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def fit(verdict: str, sections: Sequence[tuple[str, str]], cap: int = CAP) -> str:
    """`verdict` then as many of `sections` ((name, Markdown)) as fit under `cap` bytes, in order, whole;
    a note names those left out. The verdict is kept whole unless it alone is over the budget."""
    budget = cap - MARGIN
    out = verdict if verdict.endswith("\n") or not verdict else verdict + "\n"
    if _size(out) > budget:  # cut at a line, never inside a character
        cut = out.encode("utf-8")[:budget].decode("utf-8", "ignore")
        out = cut[: cut.rfind("\n") + 1] + "\n*(the verdict is cut here: the run's log has it whole)*\n"
    used = _size(out)
    left_out = []
    parts = [out]
    for name, text in sections:
        text = text if text.endswith("\n") else text + "\n"
        size = _size(text) + 1
        if used + size > budget:
            left_out.append(name)
            continue
        parts.append("\n" + text)
        used += size
    if left_out:
        names = ", ".join(md_code(n) for n in left_out[:50]) + (f" and {len(left_out) - 50} more" if len(left_out) > 50 else "")
        parts.append(f"\n> [!NOTE]\n> This summary is cut to fit GitHub's {cap // 1024} KiB limit on a step summary: "
                     f"{len(left_out)} section(s) left out ({names}). The run's log has every one.\n")
    return "".join(parts)
