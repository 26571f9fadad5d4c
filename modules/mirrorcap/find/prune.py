"""Which files a query may take a packet from, decided on each index's file line alone (its time
range and its Bloom filter of addresses and ports): the others are not read at all. Decided by
scripts/host/mirrorcap_query.py, which the host's mirrorcap-find runs too."""

from __future__ import annotations

from .hostindex import hostquery, indexer
from .query import Node, tree


def may_take(node: Node, line: dict) -> bool:
    """False only when no flow of the file can hold a packet the query takes. Conservative: a
    term the filter cannot decide (net, protocols, time, anything under `not`) may hold."""
    return hostquery().file_may_take(tree(node), line, indexer().may_hold)
