"""Which files a query may take a packet from, decided on each index's file line alone (its time
range and its Bloom filter of addresses and ports): the others are not read at all."""

from __future__ import annotations

from .hostindex import indexer
from .query import Node


def may_take(node: Node, line: dict) -> bool:
    """False only when no flow of the file can hold a packet the query takes. Conservative: a
    term the filter cannot decide (net, protocols, time, anything under `not`) may hold."""
    op, a = node.op, node.args
    if op == "and":
        return may_take(a[0], line) and may_take(a[1], line)
    if op == "or":
        return may_take(a[0], line) or may_take(a[1], line)
    if op == "host":
        return indexer().may_hold(line, "a" + a[2])
    if op == "port":
        return indexer().may_hold(line, "p%d" % a[1])
    if op == "vni":
        return line.get("vni") is None or line["vni"] == a[0]
    return True  # not, net, proto, fam, time (in_time decides time)
