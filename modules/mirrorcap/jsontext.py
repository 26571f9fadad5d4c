"""JSON read from files people edit or tools hand over (the lock, a plan, check output).

Python's json keeps the last of a key given twice in one object, silently; so would
a reviewer's eye, or not. Here a repeated key is an error naming it. So are what no
tool mirrorcap reads writes and what would end in a traceback further on: NaN and
Infinity (Python's json accepts them, JSON does not), a number too large for a float
(1e400 reads as infinity), and nesting deeper than MAX_DEPTH (Python's own limit ends
in a RecursionError, and every function that walks the value would meet it again).
"""

from __future__ import annotations

import json
import math
from typing import Any


class DuplicateKey(ValueError):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(f"key {key!r} is given twice in one object (which one counts is not for mirrorcap to guess)")
        out[key] = value
    return out


# Terraform's plan JSON nests a resource's values about 12 deep (resource_changes, change, after,
# then blocks within blocks); a lock or `mirrorcap check --json` far less.
MAX_DEPTH = 64


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


def depth(value: Any) -> int:
    """How deep `value` nests (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            deepest = max(deepest, d + 1)
            if d + 1 > MAX_DEPTH:
                return d + 1
            stack.extend((x, d + 1) for x in v)
    return deepest


def loads(text: str) -> Any:
    """json.loads, refusing a key repeated in one object (DuplicateKey), NaN, Infinity, numbers
    beyond a float and nesting deeper than MAX_DEPTH: each a ValueError saying which."""
    try:
        data = json.loads(text, object_pairs_hook=_unique, parse_constant=_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError(f"nested too deeply to read (more than {MAX_DEPTH} levels)") from None
    if depth(data) > MAX_DEPTH:
        raise ValueError(f"nested too deeply to read (more than {MAX_DEPTH} levels)")
    return data
