"""`mirrorcap find` returns exactly the packets `tcpdump -r FILE -w - FILTER` returns, over the same
files and time range: generated traffic (IPv4, IPv6, fragments, ARP, VLAN, unknown ethertypes) in
pcap and pcapng, random queries; tcpdump is the judge."""

from __future__ import annotations

import shutil
import subprocess

import findtraffic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirrorcap.find.hostindex import indexer
from mirrorcap.find.query import NS, Node, parse, to_bpf
from mirrorcap.find.search import collect, search

pytestmark = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")

START = 1_764_770_000 * NS


@pytest.fixture(scope="module")
def capture_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pcaps")
    findtraffic.write_pcap(d / "vni7_a.pcap", findtraffic.packets(1, 1500, START))
    findtraffic.write_pcap(d / "b-nano.pcap", findtraffic.packets(2, 700, START + 2 * NS), nano=True)
    findtraffic.write_pcapng(d / "c.pcapng", findtraffic.packets(3, 700, START + 5 * NS))
    (d / "notes.txt").write_text("not a capture\n")
    return d


def tcpdump(directory, bpf: str, lo: int | None, hi: int | None) -> list[tuple[int, bytes]]:
    """What tcpdump -r takes from each capture file with `bpf`, cut to [lo, hi), in time order."""
    ix = indexer()
    out = []
    for n, p in enumerate(sorted(directory.iterdir())):
        if p.suffix not in (".pcap", ".pcapng"):
            continue
        res = subprocess.run(["tcpdump", "-r", str(p), "-w", "-", bpf], capture_output=True)
        if res.returncode and b"expression rejects all packets" in res.stderr:
            continue  # libpcap proved it matches nothing
        assert res.returncode == 0, res.stderr
        data = res.stdout
        meta = ix.header(data)
        for o, ts, _lt, caplen, _len, frame in ix.records(data, meta):
            if (lo is None or ts >= lo) and (hi is None or ts < hi):
                out.append((ts // 1000, n, o, data[frame:frame + caplen]))
    out.sort(key=lambda x: x[:3])
    return [(x[0], x[3]) for x in out]


def ours(directory, node: Node) -> list[tuple[int, bytes]]:
    found = search(directory, node)
    return [(p[0] // 1000, bytes(p[3])) for p in collect(found, node)]


v4 = st.sampled_from(findtraffic.V4 + ["10.0.3.9"])
v6 = st.sampled_from(findtraffic.V6)
nets = st.sampled_from(["10.0.3.0/24", "10.0.0.0/16", "192.168.0.0/16", "fd00::/64", "2001:db8::/32", "10.0.3.8/31"])
direction = st.sampled_from(["", "src ", "dst "])
atoms = st.one_of(
    st.builds(lambda d, a: f"{d}host {a}", direction, st.one_of(v4, v6)),
    st.builds(lambda d, n: f"{d}net {n}", direction, nets),
    st.builds(lambda d, p: f"{d}port {p}", direction, st.sampled_from(findtraffic.PORTS)),
    st.sampled_from(["tcp", "udp", "icmp", "ip", "ip6", "arp"]),
)
queries = st.recursive(atoms, lambda inner: st.one_of(
    st.builds(lambda a, b: f"({a} and {b})", inner, inner),
    st.builds(lambda a, b: f"({a} or {b})", inner, inner),
    st.builds(lambda a: f"not {a}", inner)), max_leaves=5)
spans = st.one_of(st.none(), st.tuples(st.integers(0, 40), st.integers(1, 40)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=queries, span=spans)
def test_find_takes_what_tcpdump_takes(capture_dir, q, span):
    lo = hi = None
    text = q
    if span is not None:
        lo = START + span[0] * NS // 4
        hi = lo + span[1] * NS // 4
        text = f"({q}) and after {_iso(lo)} and before {_iso(hi)}"
    node = parse(text)
    expected = tcpdump(capture_dir, to_bpf(parse(q)), lo, hi)
    assert ours(capture_dir, node) == expected, text


def _iso(ns: int) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(ns // 1000 / 1e6, timezone.utc).isoformat().replace("+00:00", "Z")


def test_every_kind_is_in_the_traffic(capture_dir):
    """The judge saw each kind the index must tell apart (the generator did not lose one)."""
    for bpf, least in (("ip6 and ip6[6] == 44", 10), ("ip and ip[6:2] & 0x1fff != 0", 10), ("arp", 10), ("vlan", 10),
                       ("ip6 and ip6[6] == 0", 10), ("ip and ip[9] == 132", 10)):
        assert len(tcpdump(capture_dir, bpf, None, None)) >= least, bpf


def test_vni_comes_from_the_name_the_host_gives(capture_dir):
    node = parse("vni 7")
    got = ours(capture_dir, node)
    assert got == tcpdump(capture_dir, "", None, None)[:0] + [x for x in _one(capture_dir, "vni7_a.pcap")]
    assert ours(capture_dir, parse("vni 8")) == []


def _one(directory, name):
    ix = indexer()
    data = (directory / name).read_bytes()
    meta = ix.header(data)
    return [(ts // 1000, data[f:f + c]) for _o, ts, _lt, c, _l, f in ix.records(data, meta)]


flat_atoms = st.one_of(
    st.builds(lambda d, a: f"{d}host {a}", direction, st.one_of(v4, v6)),
    st.builds(lambda d, p: f"{d}port {p}", direction, st.sampled_from(findtraffic.PORTS)),
    st.sampled_from(["tcp", "udp", "icmp", "ip", "ip6", "arp"]),
)
negated = st.builds(lambda nots, a: "not " * nots + a, st.integers(0, 2), flat_atoms)
flat_queries = st.builds(lambda first, rest: " ".join([first] + [f"{op} {a}" for op, a in rest]), negated,
                         st.lists(st.tuples(st.sampled_from(["and", "or", "&&", "||"]), negated), min_size=1, max_size=5))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=flat_queries)
def test_and_or_without_parentheses_mean_what_they_mean_to_tcpdump(capture_dir, q):
    """tcpdump gives `and` and `or` one precedence, left to right (`not` binds tighter): the text a user
    pastes from tcpdump, handed to tcpdump as it is, takes the same packets."""
    assert ours(capture_dir, parse(q)) == tcpdump(capture_dir, q, None, None), q


def test_or_then_and_is_left_to_right(capture_dir):
    q = "tcp or udp and port 53"
    assert ours(capture_dir, parse(q)) == tcpdump(capture_dir, q, None, None) == tcpdump(capture_dir, "(tcp or udp) and port 53", None, None)
    assert tcpdump(capture_dir, q, None, None) != tcpdump(capture_dir, "tcp or (udp and port 53)", None, None)


def _snap(seed):
    import random
    r = random.Random(seed)
    cuts = [r.choice([0, 5, 12, 13, 14, 15, 20, 22, 24, 30, 33, 34, 36, 37, 38, 40, 42, 44, 46, 50, 54, 55, 56, 57, 58,
                      64, 68, 80, 96, 262144]) for _ in range(5000)]
    return lambda i, fr: cuts[i % len(cuts)]


@pytest.fixture(scope="module")
def cut_dir(tmp_path_factory):
    """Frames cut at the snap lengths captures use (40-96 bytes) and shorter, in Ethernet, LINUX_SLL2 and NULL (both
    byte orders) pcaps."""
    d = tmp_path_factory.mktemp("cut")
    findtraffic.write_pcap_cut(d / "eth.pcap", findtraffic.packets(5, 1500, START), _snap(1))
    findtraffic.write_pcap_cut(d / "sll2.pcap", findtraffic.relinked(findtraffic.packets(6, 600, START + NS), 276),
                               _snap(2), linktype=276)
    findtraffic.write_pcap_cut(d / "null-le.pcap", findtraffic.relinked(findtraffic.packets(7, 500, START + 2 * NS), 0, "<"),
                               _snap(3), linktype=0, endian="<")
    findtraffic.write_pcap_cut(d / "null-be.pcap", findtraffic.relinked(findtraffic.packets(8, 500, START + 3 * NS), 0, ">"),
                               _snap(4), linktype=0, endian=">")
    # records longer than the snap length the header declares: libpcap reads (and the filter sees) that much of each
    findtraffic.write_pcap_cut(d / "long.pcap", findtraffic.packets(9, 600, START + 4 * NS), lambda i, fr: len(fr),
                               header_snap=54)
    return d


def _per_file(directory, q: str, node: Node):
    """(ours, tcpdump's) per file: files of several link types cannot be merged into one answer."""
    from pathlib import Path
    for p in sorted(directory.glob("*.pcap")):
        one = Path(str(directory) + "-" + p.stem)
        if not one.exists():
            one.mkdir()
            (one / p.name).symlink_to(p) if False else (one / p.name).write_bytes(p.read_bytes())
        found = search(one, node)
        got = [(x[0] // 1000, bytes(x[3])) for x in collect(found, node)]
        yield p.name, got, tcpdump(one, q, None, None)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=st.one_of(queries, flat_queries))
def test_frames_cut_short_are_taken_as_tcpdump_takes_them(cut_dir, q):
    """tcpdump's filter rejects a frame whenever it must read past the captured bytes, and takes what it can
    decide before them; in Ethernet, LINUX_SLL2 (`tcpdump -i any`) and NULL of either byte order."""
    node = parse(q)
    for name, got, want in _per_file(cut_dir, q, node):
        assert got == want, (name, q)


def test_cut_frames_decide_both_ways(cut_dir):
    """The judge's answers on the cut frames are not trivial: `not port 80` leaves out frames `port 80` does not take."""
    for name, got, want in _per_file(cut_dir, "not port 80", parse("not port 80")):
        every = tcpdump(cut_dir.parent / (cut_dir.name + "-" + name[:-5]), "", None, None)
        port = tcpdump(cut_dir.parent / (cut_dir.name + "-" + name[:-5]), "port 80", None, None)
        assert got == want and len(want) + len(port) < len(every), name


NG_SECTIONS = [[(None, None), (9, None)], [(0x94, None), (3, 100)], [(0x8A, -50), (9, 7200), (6, None)]]


@pytest.fixture(scope="module")
def ng_dir(tmp_path_factory):
    """pcapng files of several sections (interfaces numbered again in each), if_tsresol powers of ten and of two,
    if_tsoffset, in either byte order: tcpdump reads each packet's time from its own section's interface."""
    d = tmp_path_factory.mktemp("ng")
    findtraffic.write_pcapng_sections(d / "le.pcapng", findtraffic.packets(51, 700, START), NG_SECTIONS, "<")
    findtraffic.write_pcapng_sections(d / "be.pcapng", findtraffic.packets(52, 700, START + NS), NG_SECTIONS[::-1], ">")
    return d


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=st.one_of(queries, flat_queries), span=spans)
def test_pcapng_sections_resolutions_and_offsets_as_tcpdump_reads_them(ng_dir, q, span):
    lo = hi = None
    text = q
    if span is not None:
        lo = START + span[0] * NS // 4
        hi = lo + span[1] * NS // 4
        text = f"({q}) and after {_iso(lo)} and before {_iso(hi)}"
    expected = tcpdump(ng_dir, q, lo, hi)
    assert ours(ng_dir, parse(text)) == expected, text


def test_the_pcapng_times_are_the_judges(ng_dir):
    """Every packet of the files, at tcpdump's times (the sections' units and offsets differ, the times do not)."""
    assert ours(ng_dir, parse("not host 10.99.0.1")) == tcpdump(ng_dir, "not host 10.99.0.1", None, None)
    assert len(tcpdump(ng_dir, "", None, None)) == 1400
