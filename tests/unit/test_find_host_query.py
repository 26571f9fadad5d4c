"""The host's mirrorcap-find picks, in plain Python, the flows the laptop's DuckDB picks from the same
index files, and the same packets, for generated queries of every term, negation and time."""

from __future__ import annotations

import importlib.util
import random
import sys
from datetime import datetime, timezone

import findtraffic
import pytest

from helpers import ROOT
from mirrorcap.find.query import NS, parse, tree
from mirrorcap.find.search import collect, search, select_flows, sources

HOST = ROOT / "scripts" / "host"
START = 1_764_770_000 * NS
NOW = datetime(2026, 12, 3, 14, 20, tzinfo=timezone.utc)


def host_find():
    sys.path.insert(0, str(HOST))
    try:
        spec = importlib.util.spec_from_file_location("mirrorcap_find_host", HOST / "mirrorcap-find.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(HOST))
    return module


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, timezone.utc).isoformat().replace("+00:00", "Z")


def term(r: random.Random) -> str:
    d = r.choice(["", "src ", "dst "])
    return r.choice([
        f"{d}host {r.choice(findtraffic.V4 + findtraffic.V6)}",
        f"{d}net {r.choice(['10.0.0.0/16', '10.0.3.0/24', '192.168.0.0/16', 'fd00::/64', '2001:db8::/32'])}",
        f"{d}port {r.choice(findtraffic.PORTS)}",
        r.choice(["tcp", "udp", "icmp", "ip", "ip6", "arp"]),
        f"vni {r.choice([7, 8])}",
        f"after {iso(START + r.randrange(0, 4000) * 1_000_000)}",
        f"before {iso(START + r.randrange(0, 4000) * 1_000_000)}",
        f"around {iso(START + r.randrange(0, 4000) * 1_000_000)} ±{r.randrange(1, 900)}ms",
    ])


def query(r: random.Random, depth: int = 0) -> str:
    k = r.random()
    if depth >= 3 or k < 0.35:
        return term(r)
    if k < 0.5:
        return f"not ({query(r, depth + 1)})"
    return f"({query(r, depth + 1)}) {r.choice(['and', 'or'])} ({query(r, depth + 1)})"


QUERIES = [query(random.Random(seed)) for seed in range(300)]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostfind")
    findtraffic.write_pcap(d / "vni7_2025-12-03T13-53-20Z.pcap", findtraffic.packets(41, 1500, START))
    findtraffic.write_pcapng(d / "vni8_2025-12-03T13-53-21Z.pcap", findtraffic.packets(42, 800, START + NS))
    findtraffic.write_pcap(d / "vni7_2025-12-03T13-53-22Z.pcap", findtraffic.packets(43, 900, START + 2 * NS), nano=True)
    srcs, skipped = sources(d)
    assert not skipped
    return d, srcs


def row_key(r: dict, name: str) -> tuple:
    return (name, r["first"], r["last"], r["fam"], r["proto"], r["sa"], r["da"], r["sp"], r["dp"], r["vni"], r["packets"])


def test_the_generated_queries_cover_every_word():
    text = " ".join(QUERIES)
    for word in ("src", "dst", "host", "net", "port", "tcp", "udp", "icmp", "ip6", "arp", "vni", "after", "before", "around",
                 "not", "and", "or"):
        assert f"{word} " in text or f" {word}" in text, word


@pytest.mark.parametrize("chunk", range(0, len(QUERIES), 50))
def test_the_host_picks_the_flows_duckdb_picks(indexed, chunk):
    d, srcs = indexed
    mf = host_find()
    host_srcs, built, skipped = mf.sources(str(d))
    assert built == 0 and skipped == [] and len(host_srcs) == 3  # the indexes beside the pcaps, as written
    total = 0
    for text in QUERIES[chunk:chunk + 50]:
        node = parse(text, NOW)
        want = sorted(row_key(f, f["filename"].rsplit("/", 1)[1][:-len(".idx.json.gz")])
                      for f in select_flows([s for s in srcs if _in_time(s, node)], node))
        got = sorted(row_key(r, r["source"]) for r in mf.select(host_srcs, mf.mq.check(tree(node))))
        assert got == want, text
        total += len(want)
    assert total > 100


def _in_time(src, node) -> bool:
    from mirrorcap.find.search import in_time
    return bool(in_time([src], node))


def assert_host_writes_what_the_laptop_finds(d, text: str) -> None:
    """The host's mirrorcap-find over directory d writes, in order, the packets the laptop's search finds."""
    mf = host_find()
    node = parse(text, NOW)
    host_srcs, _built, _skipped = mf.sources(str(d))
    q = mf.mq.check(tree(node))
    pkts, _read = mf.packets(host_srcs, mf.select(host_srcs, q), q, 1 << 30)
    laptop = collect(search(d, node), node)
    assert [(p[4], bytes(p[2])) for p in pkts] == [(p[0], bytes(p[3])) for p in laptop], text


@pytest.mark.parametrize("text", QUERIES[:40])
def test_the_host_writes_the_packets_the_laptop_finds(indexed, text):
    d, _srcs = indexed
    assert_host_writes_what_the_laptop_finds(d, text)


def test_a_pcap_without_its_index_is_indexed_in_memory_only(tmp_path):
    findtraffic.write_pcap(tmp_path / "vni7_2025-12-03T13-53-20Z.pcap", findtraffic.packets(44, 300, START))
    (tmp_path / "link.pcap").symlink_to("/etc/hostname")
    mf = host_find()
    host_srcs, built, skipped = mf.sources(str(tmp_path))
    assert built == 1 and [s[0] for s in host_srcs] == ["vni7_2025-12-03T13-53-20Z.pcap"] and skipped == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.pcap", "vni7_2025-12-03T13-53-20Z.pcap"]  # nothing written


def test_the_fam_of_frames_cut_short_is_one_word_for_indexer_and_evaluator():
    from mirrorcap.find.hostindex import hostquery, indexer
    assert hostquery().CUT == indexer().CUT == indexer().CUT_KEY[0]


def test_every_flow_line_is_the_schema_the_engines_are_written_from(tmp_path):
    """The index's flow lines have exactly FLOW_SCHEMA's columns, in order, with its kinds: the schema DuckDB's
    read_json, the Glue table and the index checker are generated from."""
    import findtraffic
    from mirrorcap.find.hostindex import indexer
    from mirrorcap.find.search import FLOW_COLUMNS
    from mirrorcap.stack.athena import FLOW_COLUMNS as GLUE
    ix = indexer()
    findtraffic.write_pcap(tmp_path / "a.pcap", findtraffic.packets(3, 400, 1_764_770_000 * 10 ** 9))
    _line, rows = ix.write(str(tmp_path / "a.pcap"))
    kinds = {"text": str, "int": int, "bigint": int}
    for r in rows:
        assert list(r) == [n for n, _k in ix.FLOW_SCHEMA]
        assert all(r[n] is None or type(r[n]) is kinds[k] for n, k in ix.FLOW_SCHEMA)
    assert [c.split(":")[0].strip("{ ") for c in FLOW_COLUMNS.split(",")] == [n for n, _k in ix.FLOW_SCHEMA]
    assert [n for n, _t in GLUE] == [n for n, _k in ix.FLOW_SCHEMA if n != "vni"]


@pytest.fixture(scope="module")
def cut_and_sections(tmp_path_factory):
    """Frames cut at short snap lengths (the host decides them through libpcap too) and a pcapng of several sections."""
    import random as _random
    d = tmp_path_factory.mktemp("hostcut")
    r = _random.Random(5)
    snaps = [r.choice([10, 14, 30, 34, 38, 40, 54, 56, 58, 96]) for _ in range(1000)]
    findtraffic.write_pcap_cut(d / "vni7_2025-12-03T13-53-20Z.pcap", findtraffic.packets(45, 1000, START),
                               lambda i, fr: snaps[i])
    findtraffic.write_pcapng_sections(d / "vni8_2025-12-03T13-53-21Z.pcap", findtraffic.packets(46, 400, START + NS),
                                      [[(None, None), (0x94, 30)], [(9, -20)]])
    return d


@pytest.mark.parametrize("text", QUERIES[:40])
def test_the_host_decides_cut_frames_and_sections_as_the_laptop(cut_and_sections, text):
    d = cut_and_sections
    assert_host_writes_what_the_laptop_finds(d, text)
