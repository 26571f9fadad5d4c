"""Inventory text as Terraform reads it: always the literal text, never an expression.

Strings in cdk.tf.json are Terraform templates: `${...}` is evaluated at plan
time (`${file("...")}` reads a file) and `%{...}` runs a directive, in values
and in map keys alike. So text from the inventory goes in escaped (`$${`,
`%%{`). The review copy (cdk.tf) is written by cdktn's HCL renderer, which
never escapes `\\` and escapes `"` only in a string without `${`, prints a
multi-line string as an `<<EOF` heredoc (a line `EOF` in it ends the heredoc),
and prints an untyped value starting with `[`, `{` or `"` bare. Text that would
meet one of these goes in as one interpolated HCL string literal instead,
`${"..."}`: Terraform reads the same text from both files, and nothing in it
can close a string, a heredoc or a block.
"""

from __future__ import annotations

import re

from ..hclquote import quoted_body, template_escape

# Characters cdktn's renderer passes into an HCL string unescaped; a newline
# (or CR) would make it a heredoc.
_UNQUOTABLE = re.compile(r'[\\\x00-\x1f\x7f]')
# cdktn reads `${TfToken[...]}` (and #{, &{) in any string as one of its own
# tokens and substitutes its value.
_TOKEN_MARKER = "{TfToken["
escape = template_escape  # `text` inside a Terraform template: `${` and `%{` stay characters


def _hcl_string(text: str) -> str:
    """`text` as an HCL quoted string literal (valid inside a template's `${ }` too)."""
    body = quoted_body(text)
    # `\u007b` is a `{` to Terraform but breaks the token marker for cdktn.
    return '"' + escape(body.replace(_TOKEN_MARKER, "\\u007bTfToken[")) + '"'


def _plain(text: str, *, typed: bool) -> bool:
    """Whether cdktn's renderer writes `escape(text)` into cdk.tf as the same string."""
    if _UNQUOTABLE.search(text) or _TOKEN_MARKER in text:
        return False
    if typed:
        return '"' not in text or "${" not in text  # it escapes `"` only in a string without `${`
    return '"' not in text and not text.startswith(("[", "{"))


def literal(text: str, *, typed: bool = False) -> str:
    """`text` as a Terraform string that evaluates to exactly `text`, in cdk.tf.json and cdk.tf.

    typed: the value of a typed string attribute or string map, which cdktn's
    renderer always quotes (escaping `"` when there is no `${`); anything
    else (map keys, for_each values) is printed with fewer guards.
    """
    if _plain(text, typed=typed):
        return escape(text)
    return "${" + _hcl_string(text) + "}"


def literal_map(mapping: dict[str, str]) -> dict[str, str]:
    """A string map from the inventory (tags): keys are templates too."""
    return {literal(k): literal(v, typed=True) for k, v in mapping.items()}
