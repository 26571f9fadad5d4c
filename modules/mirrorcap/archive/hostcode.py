"""The host's window tool, imported read-only from scripts/host/: the laptop merges,
cuts and filters archived pcaps with exactly the code a host runs on its own.

scripts/host/mirrorcap-window.py imports `mirrorcap_host` from the host's
/usr/local/lib/mirrorcap; here the module beside it in scripts/host/ is loaded
under that name first, so the script's import finds it without touching sys.path.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from types import ModuleType

from ..project import scripts_dir

HOST_MODULE = "mirrorcap_host"


def _load(name: str, path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=1)
def host() -> ModuleType:
    """scripts/host/mirrorcap_host.py: the env file, the pcap names (pcap_start)."""
    return _load("mirrorcap_host_for_cli", scripts_dir() / "host" / "mirrorcap_host.py")


@functools.lru_cache(maxsize=1)
def window() -> ModuleType:
    """scripts/host/mirrorcap-window.py: parse_time, parse_span, covering, bpf_for, extract, Usage."""
    shared = host()
    saved_module, saved_path = sys.modules.get(HOST_MODULE), list(sys.path)
    sys.modules[HOST_MODULE] = shared
    try:
        return _load("mirrorcap_window_for_cli", scripts_dir() / "host" / "mirrorcap-window.py")
    finally:
        sys.path[:] = saved_path  # the script puts the host's lib directory first: not ours
        if saved_module is None:
            sys.modules.pop(HOST_MODULE, None)
        else:
            sys.modules[HOST_MODULE] = saved_module
