"""The end of a pcap as the host reads it (mirrorcap_host.pcap_end, repair), against pcaps
written by a real tcpdump, cut at every kind of place; and the watcher's loss bound.

A pcap torn by a full volume or a kill ends in part of a record; the capture cuts it
back to the last whole record and mirrorcap-window reads up to there. The truth each
case is checked against is a plain walk of the records from the file's start."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_host_scripts import host_module, host_script
from bootlab.traffic import inner_ipv4, read_pcap, write_pcap

host = host_module()
pytestmark = pytest.mark.skipif(not shutil.which("tcpdump"), reason="tcpdump not installed (make test installs it)")


def real_pcap(path, sizes, payloads=None):
    """A pcap as tcpdump writes it: the frames replayed through `tcpdump -r -w` (its own writer, its own header)."""
    src = path.with_suffix(".in")
    frames = [inner_ipv4(b"MCT%08d" % i + (payloads[i] if payloads else b""), size) for i, size in enumerate(sizes)]
    write_pcap(src, frames)
    # write_pcap stamps every frame 2023-11-14: give them times near now, as a capture's are.
    data = bytearray(src.read_bytes())
    pos, now = 24, 1796000000
    while pos + 16 <= len(data):
        struct.pack_into("<II", data, pos, now + (pos // 100000), pos % 1000000)
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
    src.write_bytes(bytes(data))
    r = subprocess.run(["tcpdump", "-r", str(src), "-w", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return path.read_bytes()


def truth(data: bytes) -> tuple[int, float | None]:
    records = read_pcap(data, times=True)
    end = 24 + sum(16 + r[0] for r in records) if len(data) >= 24 else 0
    return end, (records[-1][3] if records else None)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """Over a megabyte (the tail is found by its chain, not walked from the start): mixed sizes, jumbo included."""
    sizes = [(64, 500, 1400, 8947)[i % 4] for i in range(400)]
    data = real_pcap(tmp_path_factory.mktemp("pcap") / "big.pcap", sizes)
    snaplen = struct.unpack_from("<I", data, 16)[0]
    assert len(data) > 4 * (16 + snaplen)  # far more than the tail pcap_end reads: its chain scan is what runs
    return data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=3000))
def test_a_large_pcap_cut_anywhere_in_its_last_records_ends_at_its_last_whole_record(big, tmp_path, cut):
    data = big[:len(big) - cut]
    path = tmp_path / "cut.pcap"
    path.write_bytes(data)
    end, ts = host.pcap_end(str(path))
    want_end, want_ts = truth(data)
    assert end == want_end and ts == pytest.approx(want_ts)


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(min_value=0, max_value=20000))
def test_a_small_pcap_cut_anywhere_is_walked_whole(tmp_path_factory, cut):
    data = real_pcap(tmp_path_factory.mktemp("small") / "s.pcap", [500] * 30)
    data = data[:max(0, len(data) - cut)]
    path = tmp_path_factory.mktemp("c") / "c.pcap"
    path.write_bytes(data)
    end, ts = host.pcap_end(str(path))
    assert (end, ts) == (truth(data)[0] if len(data) >= 24 else 0, truth(data)[1])


def test_payloads_that_look_like_pcap_records_do_not_fool_the_tail(tmp_path):
    """Mirrored traffic can carry pcaps (a copy of one over the network): their record headers,
    with recent times, sit in the payloads. The last whole record is still the real one."""
    fake = b"".join(struct.pack("<IIII", 1796000000 + i, 5, 40, 40) + bytes(40) for i in range(60))
    data = real_pcap(tmp_path / "nested.pcap", [8947] * 150, payloads=[fake] * 150)
    for cut in (0, 1, 15, 16, 17, 100, 4000, 8000):
        path = tmp_path / f"cut{cut}.pcap"
        path.write_bytes(data[:len(data) - cut])
        assert host.pcap_end(str(path))[0] == truth(data[:len(data) - cut])[0], cut


def test_repair_cuts_a_torn_tail_keeps_a_whole_pcap_and_removes_one_without_a_header(tmp_path, big):
    torn = tmp_path / "torn.pcap"
    torn.write_bytes(big[:-700])
    assert host.repair(str(torn)) == len(big) - 700 - truth(big[:-700])[0]
    assert torn.read_bytes() == big[:truth(big[:-700])[0]]
    whole = tmp_path / "whole.pcap"
    whole.write_bytes(big)
    assert host.repair(str(whole)) == 0 and whole.read_bytes() == big
    headless = tmp_path / "headless.pcap"
    headless.write_bytes(big[:10])
    assert host.repair(str(headless)) == 10 and not headless.exists()


def test_the_loss_bound_counts_from_the_last_sample_before_the_last_packet_written(tmp_path):
    """Gap start and the most it lost: the interface's count at the last sample at or before the
    last packet written, and the gap starts when the count last stood there."""
    capture = host_script("mirrorcap-capture.py")
    samples = capture.Samples(str(tmp_path / "rx.json"), "lo")
    for t, rx in [(100.0, 10), (100.25, 10), (100.5, 10), (100.75, 14), (101.0, 20)]:
        samples.add(t, rx)
    assert samples.before(100.6) == (100.5, 10) and samples.before(99) is None
    assert samples.quiet_until(100.25, 10) == 100.5  # nothing new arrived before then
    again = capture.Samples(str(tmp_path / "rx.json"), "lo")  # a new watcher after a kill reads them back
    assert again.before(100.8) == (100.75, 14)
