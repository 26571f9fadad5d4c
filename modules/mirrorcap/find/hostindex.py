"""The host's own modules, imported by the names the host imports them by (the wheel ships
them as top-level modules, the render ships the same files to /usr/local/lib/mirrorcap):
the indexer (mirrorcap_index), so `mirrorcap index` and `mirrorcap find --dir` write exactly
the bytes a host writes at rotation; the query evaluator (mirrorcap_query), so a packet is
decided by the same code on the laptop and on the host (mirrorcap-find, through Systems Manager)."""

from __future__ import annotations

from types import ModuleType


def indexer() -> ModuleType:
    import mirrorcap_index  # on first use: synth imports this package without indexing anything
    return mirrorcap_index


def hostquery() -> ModuleType:
    import mirrorcap_query
    return mirrorcap_query
