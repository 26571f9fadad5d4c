"""Read an HCL file into plain Python values (python-hcl2), or fail clearly.

Strings come back as the text they stand for: python-hcl2 decodes `\\"`, `\\\\`,
`\\n`, `\\uXXXX`..., but leaves HCL's template escapes `$${` and `%%{` doubled;
they are undone here, so `"$${x}"` is the text `${x}`, as HCL means it. (A bare
`${x}` is that same text too: nothing in the inventory is evaluated.)
A lone `$${` is that escape too (hclgrammar.py). An attribute given twice in one
block, or a key twice in one map, is refused: python-hcl2 keeps the last, silently.
The plain subset most inventories are written in is read by hclfast.py, about fifty
times faster, into the same values; everything else, problems included, by python-hcl2.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any


from ..errors import MirrorcapError, Problem
from . import hclfast
from .hclgrammar import parser, repeats
from .inputfile import read_text

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
    if text.startswith("\ufeff"):
        raise MirrorcapError([Problem(f"{name}:1:1", "", "the file starts with a UTF-8 byte-order mark (BOM), which HCL does not read",
                                      "save it as UTF-8 without a BOM (most editors: \"UTF-8\", not \"UTF-8 with BOM\")")])
    plain = hclfast.parse(text)
    if plain is not None:
        return plain  # (no template escape in the subset: nothing to unescape)
    return parse_general(text, name)


def parse_general(text: str, name: str) -> dict[str, Any]:
    """parse_hcl through python-hcl2, whatever the text: the one parser that reports problems.
    (Imported here: a plain inventory never needs python-hcl2 or lark, a tenth of a second to import.)"""
    import hcl2
    from lark.exceptions import LarkError, UnexpectedInput, VisitError
    options = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
    try:
        tree = hcl2.transform(parser().parse(text + "\n"))  # the newline: python-hcl2's own loads adds it too
        again = [Problem(f"{name}:{line}", key, f"given twice in one {what} (which one counts is not for mirrorcap to guess)", f"remove one `{key} = ...`: keep the value you mean")
                 for line, key, what in sorted(repeats(tree, options))]
        if again:
            raise MirrorcapError(again)
        return strings_unescaped(hcl2.serialize(tree, serialization_options=options))
    except RecursionError:
        raise MirrorcapError([Problem(name, "", *TOO_DEEP)])
    except UnexpectedInput as exc:
        raise MirrorcapError([_syntax_problem(exc, text, name)])
    except VisitError as exc:
        if isinstance(exc.orig_exc, RecursionError):
            raise MirrorcapError([Problem(name, "", *TOO_DEEP)])
        raise MirrorcapError([Problem(name, "", f"HCL not understood: {str(exc.orig_exc)[:300]}", "fix the HCL syntax")])
    except LarkError as exc:
        raise MirrorcapError([Problem(name, "", f"HCL syntax error: {str(exc)[:300]}", "fix the HCL syntax")])


# Numbers HCL does not write: the parser reads `0x10` as 0 then a name, and fails a line later.
_NOT_A_NUMBER = re.compile(r"(?<![\w.-])(-?(?:0[xXoObB][0-9A-Za-z_]*|\d+(?:_\d*)+))(?![\w.])")
_QUOTED_OR_COMMENT = re.compile(r'"(?:[^"\\]|\\.)*"|#.*|//.*')


def _syntax_problem(exc: UnexpectedInput, text: str, name: str) -> Problem:
    line, col = getattr(exc, "line", "?"), getattr(exc, "column", "?")
    if isinstance(line, int):
        for n, source in enumerate(text.split("\n")[:line], 1):
            found = _NOT_A_NUMBER.search(_QUOTED_OR_COMMENT.sub(lambda m: " " * len(m.group(0)), source))
            if found:
                return Problem(f"{name}:{n}:{found.start() + 1}", "", f"{found.group(1)} is not a number HCL reads "
                               "(no hexadecimal, octal, binary or `_` between digits)", "write the number in plain decimal digits")
    context = exc.get_context(text).rstrip() if hasattr(exc, "get_context") else ""
    return Problem(f"{name}:{line}:{col}", "", "HCL syntax error near here:\n" + context,
                   "fix the HCL syntax at that line (every `key = value` needs a value; blocks need balanced braces)")


def read_hcl_text(path: Path) -> str:
    """The inventory's text, or a MirrorcapError naming what is wrong with the file."""
    name = str(path)
    try:
        return read_text(path, fix="pass --inventory the inventory itself (an HCL text file)")
    except FileNotFoundError:
        raise MirrorcapError([Problem(name, "", "file not found", "create it (copy capture.hcl from the repository) or pass --inventory PATH")])
    except (OSError, UnicodeDecodeError) as exc:
        raise MirrorcapError([Problem(name, "", f"cannot read file: {exc}", "check the path and that the file is UTF-8 text")])
