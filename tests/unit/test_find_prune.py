"""Pruning files on their index's file line (Bloom filter of addresses and ports, VNI) never drops a
file holding a flow the query takes, and drops most files that lack the host or port asked for."""

from __future__ import annotations

import random

import findtraffic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirrorcap.find.hostindex import indexer
from mirrorcap.find.prune import may_take
from mirrorcap.find.query import parse
from mirrorcap.find.search import Source, select_flows

ADDRS = findtraffic.V4 + findtraffic.V6


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Twelve pcaps, each with the traffic of a few of the addresses only, in two VNIs."""
    d = tmp_path_factory.mktemp("prune")
    ix = indexer()
    out = []
    for n in range(12):
        r = random.Random(n)
        keep = set(r.sample(ADDRS, 3))
        pkts = [(t, fr) for t, fr in findtraffic.packets(n, 400) if any(findtraffic._a(a) in fr for a in keep)]
        p = d / f"vni{7 + n % 2}_{n:02d}.pcap"
        findtraffic.write_pcap(p, pkts)
        line, _rows = ix.write(str(p))
        out.append(Source(p, p.parent / (p.name + ix.SUFFIX), line))
    return out


terms = st.one_of(
    st.builds(lambda d, a: f"{d}host {a}", st.sampled_from(["", "src ", "dst "]), st.sampled_from(ADDRS)),
    st.builds(lambda d, p: f"{d}port {p}", st.sampled_from(["", "src ", "dst "]), st.sampled_from(findtraffic.PORTS + [9])),
    st.sampled_from(["vni 7", "vni 8", "tcp", "udp", "net 10.0.0.0/8", "ip6"]))
queries = st.recursive(terms, lambda inner: st.one_of(
    st.builds(lambda a, b: f"({a} and {b})", inner, inner),
    st.builds(lambda a, b: f"({a} or {b})", inner, inner),
    st.builds(lambda a: f"not {a}", inner)), max_leaves=4)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=queries)
def test_a_file_holding_a_flow_the_query_takes_is_never_pruned(files, q):
    node = parse(q)
    holding = {f["filename"] for f in select_flows(files, node)}
    for src in files:
        if str(src.index) in holding:
            assert may_take(node, src.meta), (q, src.pcap.name)


def test_most_files_without_the_host_are_not_read(files):
    ix = indexer()
    pruned = absent = 0
    for a in ADDRS:
        node = parse(f"host {a}")
        holding = {f["filename"] for f in select_flows(files, node)}
        for src in files:
            if str(src.index) not in holding:
                absent += 1
                pruned += not may_take(node, src.meta)
            else:
                assert ix.may_hold(src.meta, "a" + node.args[2])
    assert absent >= 5 and pruned / absent > 0.8, (pruned, absent)
