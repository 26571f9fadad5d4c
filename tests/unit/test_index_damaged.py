"""A pcap whose middle is not records (a bad block, a stray write): the packet index reads around
the damage, says which bytes it could not read, and no flow's byte ranges reach over them, so a
reader of the ranges (mirrorcap-find) gets every packet the damage did not touch. Pcaps written by
a real tcpdump (test_host_pcap.real_pcap), damaged with random bytes at every kind of place."""

from __future__ import annotations

import random
import re
import shutil
import struct

import pytest

from mirrorcap.find.hostindex import indexer
from test_host_pcap import real_pcap

pytestmark = pytest.mark.skipif(not shutil.which("tcpdump"), reason="tcpdump not installed (make test installs it)")
ix = indexer()
TAG = re.compile(rb"MCT(\d{8})")


def record_spans(data: bytes) -> list[tuple[int, int, int]]:
    """(start, end, tag) of each record of an undamaged pcap."""
    out, o = [], 24
    while o + 16 <= len(data):
        end = o + 16 + struct.unpack_from("<I", data, o + 8)[0]
        out.append((o, end, int(TAG.search(data[o + 16:end]).group(1))))
        o = end
    return out


def tags_read(data: bytes, rows: list[dict], line: dict) -> set[int]:
    """The tags a reader of the index's byte ranges gets, as mirrorcap-find reads them."""
    got, meta = set(), ix.reader_meta(line)
    for a, b in ix.flow_ranges(rows):
        for _o, _ts, _lt, caplen, _len, frame in ix.records(data[a:b], dict(meta), 0, b - a, origin=a):
            found = TAG.search(data[a:b][frame:frame + caplen])
            if found:
                got.add(int(found.group(1)))
    return got


@pytest.mark.parametrize("seed", range(6))
def test_a_damaged_middle_is_read_around_and_said(tmp_path, seed):
    rng = random.Random(seed)
    data = real_pcap(tmp_path / "x.pcap", [rng.choice((60, 500, 1400)) for _ in range(800)])
    spans = record_spans(data)
    at, size = rng.randrange(len(data) // 4, len(data) // 2), rng.choice((4096, 20000))  # more than a record: a header is hit
    bad = data[:at] + rng.randbytes(size) + data[at + size:]
    line, rows = ix.build(bad, "vni1_2026-12-07T00-00-00Z.pcap", 1)
    untouched = {t for s, e, t in spans if e <= at or s >= at + size}
    assert line.get("unread"), line
    unread = sum(b - a for a, b in line["unread"])
    # From the end of the last whole record (one whose header the damage spared is read, payload and all)
    # to the first header after it.
    assert size - (16 + 1414) <= unread <= size + 16 + 1414, (line["unread"], at, size)
    got = tags_read(bad, rows, line)
    # Every packet the damage did not touch, and at most the one whose payload it overwrote (its header whole).
    assert untouched <= got and len(got - untouched) <= 1, (sorted(untouched - got)[:5], sorted(got - untouched))
    assert len(got) <= line["packets"] <= len(got) + 1  # (the overwritten one may have lost its tag)
    assert ix.partial(line).startswith(ix.PARTIAL + ": %d of its %d bytes" % (unread, len(bad)))


def test_a_whole_pcap_and_one_torn_at_its_end_are_not_damaged(tmp_path):
    data = real_pcap(tmp_path / "x.pcap", [500] * 300)
    for cut in (data, data[:-100], data[:-520]):
        line, _ = ix.build(cut, "vni1_2026-12-07T00-00-00Z.pcap", 1)
        assert "unread" not in line, line
