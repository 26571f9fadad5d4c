"""Text as an HCL quoted string that Terraform reads back as exactly that text: the one quoting
stack/literal.py (strings in the synthesized stack) and stack_data.py (the review copy's
values) share. Pure."""

from __future__ import annotations

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def template_escape(text: str) -> str:
    """`text` inside a Terraform template: `${` and `%{` stay characters."""
    return text.replace("${", "$${").replace("%{", "%%{")


def quoted_body(text: str) -> str:
    """`text` escaped for the inside of an HCL quoted string: backslash, quote, and every control
    character (a named escape, else `\\uXXXX`); `${` and `%{` are left to template_escape."""
    return "".join(_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7f else c) for c in text)


def hcl_string(text: str) -> str:
    """`text` as an HCL quoted string that Terraform reads back as exactly `text` (no template)."""
    return '"' + template_escape(quoted_body(text)) + '"'
