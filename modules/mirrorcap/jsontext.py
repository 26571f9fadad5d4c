"""JSON read from files people edit or tools hand over (the lock, a plan, check output).

Python's json keeps the last of a key given twice in one object, silently; so would
a reviewer's eye, or not. Here a repeated key is an error naming it.
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
    """json.loads, refusing a key repeated in one object (DuplicateKey, a ValueError)."""
    return json.loads(text, object_pairs_hook=_unique)
