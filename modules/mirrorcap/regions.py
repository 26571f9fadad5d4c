"""The AWS regions mirrorcap knows: those of the pinned botocore's endpoint data (every
partition), read as a file (importing botocore costs a tenth of a second every command)."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path


@functools.lru_cache(maxsize=1)
def _partitions() -> dict[str, str]:
    """region -> its partition (aws, aws-cn, aws-us-gov...)."""
    spec = importlib.util.find_spec("botocore")
    data = Path(next(iter(spec.submodule_search_locations))) / "data" / "endpoints.json"
    return {r: p["partition"] for p in json.loads(data.read_text())["partitions"] for r in p["regions"]}


@functools.lru_cache(maxsize=1)
def known() -> frozenset[str]:
    return frozenset(_partitions())


def partition(region: str) -> str | None:
    """The partition an ARN of `region` starts with (arn:<partition>:...), None for a region mirrorcap does not know."""
    return _partitions().get(region)
