"""The host's window tool and shared module, imported as top-level modules (the wheel ships
scripts/host/mirrorcap-window.py as mirrorcap_window, and mirrorcap_host as it is): the laptop
merges, cuts and filters archived pcaps with exactly the code a host runs on its own."""

from __future__ import annotations

from types import ModuleType


def host() -> ModuleType:
    """mirrorcap_host: the env file, the pcap names (pcap_start)."""
    import mirrorcap_host
    return mirrorcap_host


def window() -> ModuleType:
    """mirrorcap-window: parse_time, parse_span, covering, bpf_for, extract, Usage."""
    import mirrorcap_window
    return mirrorcap_window
