"""Ownership tags: every resource says which mirrorcap stack owns it.

`mirrorcap:stack` is what later tooling (drift check, re-mirroring Lambda)
uses to tell its own sessions from anyone else's.
"""

from __future__ import annotations

from ..contract import MANAGED_BY, STACK_KEY, resource_name
from ..inventory.model import Capture
from .literal import literal_map



def default_tags(capture: Capture) -> dict[str, str]:
    """Provider default_tags: the inventory's tags (literal text) and the ownership tags."""
    tags = dict(capture.tags)
    tags[MANAGED_BY[0]] = MANAGED_BY[1]
    tags[STACK_KEY] = capture.name
    return literal_map(dict(sorted(tags.items())))


def named(capture: Capture, what: str) -> dict[str, str]:
    """Resource-level tags: a readable Name (provider default_tags add the rest)."""
    return {"Name": resource_name(capture.name, what)}
