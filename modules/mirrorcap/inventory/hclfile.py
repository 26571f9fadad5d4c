"""Read an HCL file into plain Python values (python-hcl2), or fail clearly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hcl2
from lark.exceptions import LarkError, UnexpectedInput

from ..errors import MirrorcapError, Problem
from .inputfile import read_text

_OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)


def read_hcl(path: Path) -> dict[str, Any]:
    name = str(path)
    try:
        text = read_text(path, fix="pass --inventory the inventory itself (an HCL text file)")
    except FileNotFoundError:
        raise MirrorcapError([Problem(name, "", "file not found", "create it (copy capture.hcl from the repository) or pass --inventory PATH")])
    except (OSError, UnicodeDecodeError) as exc:
        raise MirrorcapError([Problem(name, "", f"cannot read file: {exc}", "check the path and that the file is UTF-8 text")])
    try:
        return hcl2.loads(text, serialization_options=_OPTIONS)
    except UnexpectedInput as exc:
        line, col = getattr(exc, "line", "?"), getattr(exc, "column", "?")
        context = exc.get_context(text).rstrip() if hasattr(exc, "get_context") else ""
        raise MirrorcapError([Problem(
            f"{name}:{line}:{col}", "", "HCL syntax error near here:\n" + context,
            "fix the HCL syntax at that line (every `key = value` needs a value; blocks need balanced braces)")])
    except LarkError as exc:
        raise MirrorcapError([Problem(name, "", f"HCL syntax error: {exc}", "fix the HCL syntax")])
