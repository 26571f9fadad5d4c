"""Read an HCL file into plain Python values (python-hcl2), or fail clearly.

Strings come back as the text they stand for: python-hcl2 decodes `\\"`, `\\\\`,
`\\n`, `\\uXXXX`..., but leaves HCL's template escapes `$${` and `%%{` doubled;
they are undone here, so `"$${x}"` is the text `${x}`, as HCL means it. (A bare
`${x}` is that same text too: nothing in the inventory is evaluated.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hcl2
from lark.exceptions import LarkError, UnexpectedInput, VisitError

from ..errors import MirrorcapError, Problem
from .inputfile import read_text

_OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
TOO_DEEP = ("nested too deeply to read (lists, maps, blocks or parentheses inside one another hundreds of levels deep)",
            "an inventory nests a few levels (capture > source > tags): remove the extra nesting")


def unescape(text: str) -> str:
    """HCL's template escapes, which python-hcl2 leaves in: `$${` is the text `${`, `%%{` is `%{`."""
    return text.replace("$${", "${").replace("%%{", "%{")


def strings_unescaped(value: Any) -> Any:
    """Every string in a parsed document unescaped, map keys included (iteratively: no depth limit here)."""
    root = [value]
    stack = [(root, 0)]
    while stack:
        holder, key = stack.pop()
        v = holder[key]
        if isinstance(v, str):
            holder[key] = unescape(v)
        elif isinstance(v, list):
            stack += [(v, i) for i in range(len(v))]
        elif isinstance(v, dict):
            fresh = {unescape(k) if isinstance(k, str) else k: x for k, x in v.items()}
            v.clear()
            v.update(fresh)
            stack += [(v, k) for k in v]
    return root[0]


def parse_hcl(text: str, name: str) -> dict[str, Any]:
    """The values of an HCL text (named `name` in problems), or a MirrorcapError saying where it is wrong."""
    try:
        return strings_unescaped(hcl2.loads(text, serialization_options=_OPTIONS))
    except RecursionError:
        raise MirrorcapError([Problem(name, "", *TOO_DEEP)])
    except UnexpectedInput as exc:
        line, col = getattr(exc, "line", "?"), getattr(exc, "column", "?")
        context = exc.get_context(text).rstrip() if hasattr(exc, "get_context") else ""
        raise MirrorcapError([Problem(
            f"{name}:{line}:{col}", "", "HCL syntax error near here:\n" + context,
            "fix the HCL syntax at that line (every `key = value` needs a value; blocks need balanced braces)")])
    except VisitError as exc:
        if isinstance(exc.orig_exc, RecursionError):
            raise MirrorcapError([Problem(name, "", *TOO_DEEP)])
        raise MirrorcapError([Problem(name, "", f"HCL not understood: {str(exc.orig_exc)[:300]}", "fix the HCL syntax")])
    except LarkError as exc:
        raise MirrorcapError([Problem(name, "", f"HCL syntax error: {str(exc)[:300]}", "fix the HCL syntax")])


def read_hcl(path: Path) -> dict[str, Any]:
    name = str(path)
    try:
        text = read_text(path, fix="pass --inventory the inventory itself (an HCL text file)")
    except FileNotFoundError:
        raise MirrorcapError([Problem(name, "", "file not found", "create it (copy capture.hcl from the repository) or pass --inventory PATH")])
    except (OSError, UnicodeDecodeError) as exc:
        raise MirrorcapError([Problem(name, "", f"cannot read file: {exc}", "check the path and that the file is UTF-8 text")])
    return parse_hcl(text, name)
