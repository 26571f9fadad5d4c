"""Text from outside (a plan, a record, Terraform's output, the inventory) shown in Markdown
on GitHub, inert: what is shown is what it holds, and nothing in it acts.

One place, used by every comment and summary the workflows post (comment.py, drift.py,
applied.py, reviewed.py, cost.py, the review commands):

- `inert(text)`: unseen characters written as <U+XXXX> (terminal escapes, bidirectional
  overrides such as U+202E, zero-width and format characters);
- `md_escape(text)`: prose on one line: no markup, no HTML, no @mention, no link;
- `md_cell(text)`: md_escape in a table cell;
- `md_code(text)`: an inline code span on one line (addresses, paths, values): nothing
  renders inside one, and no backtick in the text closes it;
- `md_fence(text)`: a fenced block (a plan, a log) that nothing in the text closes.
"""

from __future__ import annotations

import re

from ..plaintext import inert

# GitHub links bare URLs, www. names and e-mail addresses by itself (GFM autolinks): a description must
# not become a link in a comment the bot posts. A zero-width joiner breaks the pattern, not the text.
_AUTOLINK = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*):(?=//)|\b(www)\.")


def one_line(text: object) -> str:
    """inert, on one line (tabs and newlines as spaces): for a verdict a shell reads, a TSV field."""
    return " ".join(inert(text).split())


def md_escape(text: object) -> str:
    """Text from outside as inert Markdown prose on one line: no markup, no HTML,
    no @mentions, no links, no unseen characters."""
    text = one_line(text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = re.sub(r"([\\`*_\[\]|~#!])", r"\\\1", text)
    text = _AUTOLINK.sub(lambda m: f"{m.group(1)}:\u2060" if m.group(1) else "www\u2060.", text)
    return text.replace("@", "@\u200b")


def md_cell(text: object) -> str:
    """md_escape for a table cell: a pipe as an entity, which no renderer reads as a column."""
    return md_escape(text).replace("\\|", "&#124;")


def md_code(text: object, *, table: bool = False) -> str:
    """`text` as an inline code span on one line, seen as it is and closed by nothing in it.
    `table`: the span is in a table cell, where a pipe must be escaped even in code."""
    text = one_line(text)
    if table:
        text = text.replace("|", "\\|")
    ticks = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    return f"{ticks} {text} {ticks}" if text.startswith("`") or text.endswith("`") or not text else f"{ticks}{text}{ticks}"


def md_fence(text: str) -> str:
    """`text` (inert) in a code fence longer than any backtick run in it, so it cannot close the fence."""
    text = inert(text)
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    body = text.strip("\n").rstrip()  # Terraform's output starts with a blank line
    return f"{ticks}\n{body}\n{ticks}"
