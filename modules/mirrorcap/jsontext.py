"""JSON read from files people edit or tools hand over (the lock, a plan, check output).

Python's json keeps the last of a key given twice in one object, silently; so would
a reviewer's eye, or not. Here a repeated key is an error naming it; so is nesting
deeper than the parser's recursion (100,000 `[`), a RecursionError otherwise.
"""

from __future__ import annotations

import json
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


def loads(text: str) -> Any:
    """json.loads, refusing a key repeated in one object (DuplicateKey) and deep nesting (a ValueError too)."""
    try:
        return json.loads(text, object_pairs_hook=_unique)
    except RecursionError:
        raise ValueError("nested too deeply to read (arrays or objects inside one another thousands of levels deep)") from None
