"""The host's indexer (scripts/host/mirrorcap_index.py), loaded as it ships: `mirrorcap index`
and `mirrorcap find --dir` write exactly the bytes a host writes at rotation."""

from __future__ import annotations

import functools
import importlib.util
from types import ModuleType

from ..project import scripts_dir


@functools.lru_cache(maxsize=1)
def indexer() -> ModuleType:
    path = scripts_dir() / "host" / "mirrorcap_index.py"
    spec = importlib.util.spec_from_file_location("mirrorcap_index_for_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
