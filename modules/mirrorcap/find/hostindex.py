"""The host's own modules, loaded as they ship: the indexer (scripts/host/mirrorcap_index.py), so
`mirrorcap index` and `mirrorcap find --dir` write exactly the bytes a host writes at rotation;
the query evaluator (scripts/host/mirrorcap_query.py), so a packet is decided by the same code on
the laptop and on the host (mirrorcap-find, through Systems Manager)."""

from __future__ import annotations

import functools
import importlib.util
from types import ModuleType

from ..project import scripts_dir


def _load(name: str) -> ModuleType:
    path = scripts_dir() / "host" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_for_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=1)
def indexer() -> ModuleType:
    return _load("mirrorcap_index")


@functools.lru_cache(maxsize=1)
def hostquery() -> ModuleType:
    return _load("mirrorcap_query")
