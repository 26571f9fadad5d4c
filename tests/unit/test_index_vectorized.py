"""The indexer's numpy walk (what the host runs at rotation) writes exactly the index its plain
walk writes: the same bytes for generated traffic of every kind (IPv4 with and without options,
fragments, IPv6 with extension headers, ARP, VLAN, unknown types), cut short by a snap length,
in little- and big-endian pcaps, in micro- and nanoseconds, in one block of records or many."""

from __future__ import annotations

import gzip
import json
import random
import struct

import findtraffic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirrorcap.find.hostindex import indexer

np = pytest.importorskip("numpy")


def options_frame(r: random.Random) -> bytes:
    """IPv4 with a 4-byte option (IHL 6): not the fixed layout the numpy walk groups by."""
    payload = struct.pack(">HH", r.choice(findtraffic.PORTS), r.choice(findtraffic.PORTS)) + b"\0" * 16
    ip = struct.pack(">BBHHHBBH4s4s4s", 0x46, 0, 24 + len(payload), 1, 0, 64, 6, 0,
                     bytes([10, 0, 3, r.randrange(1, 9)]), bytes([10, 0, 3, 7]), b"\x01\x01\x01\x00") + payload
    return b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x08\x00" + ip


def pcap_bytes(pkts, *, nano: bool, big: bool, snap: int | None) -> bytes:
    e = ">" if big else "<"
    unit = 1 if nano else 1000
    per = 10 ** 9 // unit
    out = [struct.pack(e + "IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, snap or 262144, 1)]
    for ts, fr in pkts:
        t = ts // unit
        cap = fr[:snap] if snap else fr
        out.append(struct.pack(e + "IIII", t // per, t % per, len(cap), len(fr)) + cap)
    return b"".join(out)


def plain(ix, data, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(ix, "_numpy", lambda: None)
        return ix.encode(*ix.build(data, "vni7_x.pcap", 7))


def walked(ix, data):
    meta = ix.header(data)
    flows = ix._walk(data, meta)
    ix._flatten(flows)
    return flows, meta["stop"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10 ** 6), count=st.integers(1, 900), nano=st.booleans(), big=st.booleans(),
       snap=st.sampled_from([None, None, 20, 37, 38, 57, 58, 64]), block=st.sampled_from([16 << 20, 1, 100, 3000]),
       torn=st.integers(0, 30), chunk=st.sampled_from([64 << 10, 1000, 300]))
def test_the_numpy_walk_writes_the_plain_walks_bytes(monkeypatch, seed, count, nano, big, snap, block, torn, chunk):
    """(Small blocks and chunks so that a few hundred packets cross many of both.)"""
    ix = indexer()
    r = random.Random(seed)
    pkts = findtraffic.packets(seed, count)
    pkts = [(t, options_frame(r) if r.random() < .05 else fr) for t, fr in pkts]
    data = pcap_bytes(pkts, nano=nano, big=big, snap=snap)
    data = data[:len(data) - torn] if torn < len(data) - 24 else data  # a torn last record is left out alike
    monkeypatch.setattr(ix, "BLOCK", block)
    monkeypatch.setattr(ix, "CHUNK", chunk)
    meta = ix.header(data)
    fast = ix._walk_pcap_vectorized(data, meta, np)
    assert fast is not None
    assert (fast, meta["stop"]) == walked(ix, data)
    assert list(fast) == list(walked(ix, data)[0])  # flows in the order they are met, too
    line, rows = ix.build(data, "vni7_x.pcap", 7)
    assert ix.encode(line, rows) == plain(ix, data, monkeypatch)
    # runs decode to ranges that follow each other, each a whole number of records
    for r in rows:
        spans = ix.ranges(r["runs"])
        assert spans and all(a < b for a, b in spans) and all(b1 <= a2 for (_a1, b1), (a2, _b2) in zip(spans, spans[1:]))
    # each line is what json.dumps writes
    text = gzip.decompress(ix.encode(line, rows)).decode()
    assert text == "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in [line] + rows)


def test_the_host_path_takes_the_numpy_walk(monkeypatch, tmp_path):
    """build() on an Ethernet pcap runs the numpy walk when numpy is there (the control: with the
    walk broken, indexing fails), and the plain one for pcapng."""
    ix = indexer()
    findtraffic.write_pcap(tmp_path / "a.pcap", findtraffic.packets(1, 300))
    findtraffic.write_pcapng(tmp_path / "b.pcapng", findtraffic.packets(2, 300))

    def broken(*_a):
        raise RuntimeError("the numpy walk ran")

    monkeypatch.setattr(ix, "_walk_pcap_vectorized", broken)
    with pytest.raises(RuntimeError, match="numpy walk ran"):
        ix.build((tmp_path / "a.pcap").read_bytes(), "a.pcap")
    line, rows = ix.build((tmp_path / "b.pcapng").read_bytes(), "b.pcapng")
    assert line["packets"] == 300 and rows


def test_keys_that_mix_alike_fall_back_to_the_plain_walk(monkeypatch):
    """Two different flows whose 64-bit mixes collide are not merged: the walk says so (None) and
    build() walks the plain way. Grouping every mix as one value forces the collision."""
    ix = indexer()
    data = pcap_bytes(findtraffic.packets(3, 400), nano=False, big=False, snap=None)
    real_groups = ix._groups
    with monkeypatch.context() as m:
        m.setattr(ix, "_groups", lambda np_, values: real_groups(np_, np_.zeros_like(values)))
        assert ix._walk_pcap_vectorized(data, ix.header(data), np) is None
        fallback = ix.encode(*ix.build(data, "vni7_x.pcap", 7))
    assert fallback == plain(ix, data, monkeypatch)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10 ** 6), count=st.integers(1, 600), chunk=st.sampled_from([64 << 10, 700, 200]),
       pcapng=st.booleans())
def test_a_flows_ranges_hold_every_packet_of_it_and_begin_and_end_on_one(tmp_path_factory, seed, count, chunk, pcapng):
    """Read back through its ranges, a flow has every one of its packets, and each range starts with
    one of them and ends with one (a range is cut to the flow's own records)."""
    ix = indexer()
    d = tmp_path_factory.mktemp("r")
    pkts = findtraffic.packets(seed, count)
    path = d / ("x.pcapng" if pcapng else "x.pcap")
    (findtraffic.write_pcapng if pcapng else findtraffic.write_pcap)(path, pkts)
    data = path.read_bytes()
    old = ix.CHUNK
    ix.CHUNK = chunk
    try:
        line, rows = ix.build(data, str(path))
    finally:
        ix.CHUNK = old
    for r in rows:
        want = (r["fam"], r["proto"], bytes.fromhex(r["sa"]), bytes.fromhex(r["da"]),
                None if r["sp"] is None else struct.pack(">HH", r["sp"], r["dp"]))
        seen = 0
        for a, b in ix.ranges(r["runs"]):
            meta = ix.reader_meta(line)
            keys = [ix.flow_key(data[a:b], lt, fr, cap) for _o, _t, lt, cap, _l, fr in ix.records(data[a:b], meta, 0, b - a)]
            keys = [(k[0], k[1], bytes(k[2]), bytes(k[3]), None if k[4] is None else bytes(k[4])) for k in keys]
            assert keys and keys[0] == want and keys[-1] == want
            assert meta["stop"] == b - a  # whole records, to the end of the range
            seen += keys.count(want)
        assert seen == r["packets"]


@given(values=st.lists(st.one_of(st.integers(0, 300), st.integers(0, 1 << 40), st.sampled_from(
    [0, 127, 128, (1 << 14) - 1, 1 << 14, (1 << 21) - 1, 1 << 35, (1 << 63) - 1])), max_size=50))
def test_the_vectorized_varints_are_the_plain_ones_and_decode_back(values):
    ix = indexer()
    encoded, ends = ix._leb128(np, np.array(values, dtype=np.int64))
    assert encoded == ix.leb128(values)
    assert list(ends) == [len(ix.leb128(values[:i + 1])) for i in range(len(values))]
    pairs = values[:len(values) // 2 * 2]
    runs = __import__("base64").b64encode(ix.leb128(pairs)).decode()
    at, want = 0, []
    for i in range(0, len(pairs), 2):
        want.append((at + pairs[i], at + pairs[i] + pairs[i + 1]))
        at = want[-1][1]
    assert ix.ranges(runs) == want
