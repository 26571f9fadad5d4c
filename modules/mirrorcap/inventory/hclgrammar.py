"""python-hcl2's parser with HCL's own template escapes, and the repeats it keeps silently.

Its grammar takes `$${` (and `%%{`) only as `$${...}`, to the next `}` wherever
that is, even lines further on; HCL's escape is the three characters alone
(`"cost: $${"` is the text `cost: ${`). The terminals are replaced here, nothing else.
Building the parser takes about a second; like python-hcl2's own, it is cached
next to the package (and rebuilt when the grammar or lark changes).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Iterator

ESCAPES = {r"ESCAPED_INTERPOLATION.2: /\$\$\{[^}]*\}/": r"ESCAPED_INTERPOLATION.2: /\$\$\{/",
           r"ESCAPED_DIRECTIVE.2: /%%\{[^}]*\}/": r"ESCAPED_DIRECTIVE.2: /%%\{/"}


@functools.lru_cache(maxsize=None)
def parser():
    import hcl2.parser
    from lark import Lark
    from hcl2.postlexer import PostLexer
    here = Path(hcl2.parser.__file__).parent
    grammar = (here / "hcl2.lark").read_text()
    for old, new in ESCAPES.items():
        if old not in grammar:  # a python-hcl2 upgrade changed them: look again rather than guess
            raise RuntimeError(f"python-hcl2's grammar no longer has {old}")
        grammar = grammar.replace(old, new)
    return Lark(grammar, parser="lalr", propagate_positions=True, postlex=PostLexer(),
                cache=str(here / ".mirrorcap_lark_cache.bin"))


def repeats(tree: Any, options: Any) -> Iterator[tuple[int, str, str]]:
    """(line, name, where) for each attribute given again in one block and each key given again in one
    map (`tags = { a = 1, a = 2 }`); an attribute named like a block beside it too. Iterative: any depth."""
    from hcl2.rules.abstract import LarkRule
    from hcl2.rules.base import AttributeRule, BlockRule, BodyRule
    from hcl2.rules.containers import ObjectRule
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, BodyRule):
            seen: set[str] = set()
            blocks = {c.labels[0].serialize(options) for c in node.children if isinstance(c, BlockRule)}
            for c in node.children:
                if isinstance(c, AttributeRule):
                    name = c.identifier.serialize(options)
                    if name in seen or name in blocks:
                        yield c._meta.line, name, "block"
                    seen.add(name)
        elif isinstance(node, ObjectRule):
            keys: set[str] = set()
            for e in node.elements:
                key = e.key.serialize(options)
                if key in keys:
                    yield e._meta.line, key, "map"
                keys.add(key)
        stack.extend(c for c in node.children if isinstance(c, LarkRule))  # (tokens hold no block or map)
