"""The query language of `mirrorcap find`: errors point at the word; the SQL over an index picks
exactly the flows holding a packet the per-packet predicate takes (DuckDB over real index files)."""

from __future__ import annotations

from datetime import datetime, timezone

import findtraffic
import pytest

from mirrorcap.find.hostindex import indexer
from mirrorcap.find.query import NS, QueryError, parse, predicate
from mirrorcap.find.search import select_flows, sources

NOW = datetime(2026, 12, 3, 14, 20, tzinfo=timezone.utc)
START = 1_764_770_000 * NS


@pytest.mark.parametrize("query, word, says", [
    ("host 10.0.3.7 and prot 443", "prot", "unknown word"),
    ("host 10.0.3.7 or 10.0.3.8", "10.0.3.8", "without a keyword"),
    ("host db.internal", "db.internal", "not an IPv4 or IPv6 address"),
    ("port https", "https", "a port is a number"),
    ("port 70000", "70000", "a port is a number"),
    ("net 10.0.3.7/16", "10.0.3.7/16", "not a network"),
    ("(tcp and udp", "", "never closed"),
    ("tcp)", ")", "unexpected"),
    ("after 15m", "", "needs 'ago'"),
    ("before 2026-12-03T14:10", "2026-12-03T14:10", "no time zone"),
    ("around 14:05 2m", "2m", "±DURATION"),
    ("around 25:05 ±2m", "25:05", "not a time of day"),
    ("src tcp", "tcp", "followed by host, net or port"),
    ("vni seven", "seven", "a VNI is a number"),
    ("", "", "empty"),
    ("host", "", "ends where a value"),
])
def test_an_invalid_query_points_at_the_word(query, word, says):
    with pytest.raises(QueryError) as e:
        parse(query, NOW)
    assert says in e.value.message
    pos = query.index(word) if word else len(query)
    assert e.value.pos == pos
    assert str(e.value).splitlines()[2] == "  " + " " * pos + "^"


def test_times():
    ns = lambda s: int(datetime.fromisoformat(s).timestamp()) * NS  # noqa: E731
    assert parse("after 15m ago", NOW).args == (ns("2026-12-03T14:05:00+00:00"), None)
    assert parse("before 2026-12-03T14:10Z", NOW).args == (None, ns("2026-12-03T14:10:00+00:00"))
    assert parse("before 2026-12-03T23:10+09:00", NOW).args == (None, ns("2026-12-03T14:10:00+00:00"))
    lo, hi = parse("around 14:05 ±2m", NOW).args
    assert (lo, hi) == (ns("2026-12-03T14:03:00+00:00"), ns("2026-12-03T14:07:00+00:00") + 1)
    assert parse("around 14:05 +-2m", NOW).args == (lo, hi) == parse("around 14:05 ±2m", NOW).args


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    d = tmp_path_factory.mktemp("idx")
    findtraffic.write_pcap(d / "vni7_a.pcap", findtraffic.packets(11, 2000, START))
    findtraffic.write_pcapng(d / "b.pcapng", findtraffic.packets(12, 600, START + NS))
    srcs, skipped = sources(d)
    assert not skipped
    return d, srcs


@pytest.mark.parametrize("query", [
    "host 10.0.3.7", "src net 10.0.0.0/16 and not port 443", "tcp or icmp", "ip6 and udp and dst port 53",
    "not (host fd00::7 or arp)", "vni 7 and tcp", "not vni 7", "port 80 and not tcp",
    "host 10.0.3.7 and after 2025-12-03T13:53:21Z", "not before 2025-12-03T13:53:21.5Z",
    "around 2025-12-03T13:53:21Z ±300ms or icmp",
])
def test_sql_picks_the_flows_holding_a_matching_packet(indexed, query):
    """Every flow the SQL drops holds no matching packet; without a time term, every flow it keeps holds one."""
    d, srcs = indexed
    ix = indexer()
    node = parse(query, NOW)
    keep = predicate(node)
    holding = set()
    for s in srcs:
        data = s.pcap.read_bytes()
        meta = ix.header(data)
        for _o, ts, lt, caplen, _l, frame in ix.records(data, meta):
            key = ix.flow_key(data, lt, frame, caplen)
            if keep(key, s.meta["vni"], ts):
                fam, proto, sa, da, ports = key
                holding.add((s.pcap.name, fam, proto, sa.hex(), da.hex(), ports.hex() if ports else None))
    picked = set()
    for f in select_flows(srcs, node):
        ports = None if f["sp"] is None else (f["sp"].to_bytes(2, "big") + f["dp"].to_bytes(2, "big")).hex()
        picked.add((f["filename"].rsplit("/", 1)[1][:-len(ix.SUFFIX)], f["fam"], f["proto"], f["sa"], f["da"], ports))
    assert holding and holding <= picked
    if "after" not in query and "before" not in query and "around" not in query:
        assert picked == holding
