"""The AWS regions mirrorcap knows: those of the pinned botocore's endpoint data (every
partition), read as a file (importing botocore costs a tenth of a second every command)."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path


@functools.lru_cache(maxsize=1)
def known() -> frozenset[str]:
    spec = importlib.util.find_spec("botocore")
    data = Path(next(iter(spec.submodule_search_locations))) / "data" / "endpoints.json"
    return frozenset(r for p in json.loads(data.read_text())["partitions"] for r in p["regions"])
