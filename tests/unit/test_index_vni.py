"""The VNI an index records is the one the capture captures, passed to the indexer (--vni), not
read back from the pcap's name; without it (`mirrorcap index`, `find --dir`), the name's, if any."""

from __future__ import annotations

import shutil

import pytest

from helpers import ROOT
from mirrorcap.find.hostindex import indexer
from test_host_pcap import real_pcap
from test_host_scripts import host_script

pytestmark = pytest.mark.skipif(not shutil.which("tcpdump"), reason="tcpdump not installed (make test installs it)")
ix = indexer()


def vnis(pcap):
    line, flows = ix.read(str(pcap) + ix.SUFFIX)
    return line["vni"], {f["vni"] for f in flows}


def test_the_vni_given_is_the_one_recorded_whatever_the_name(tmp_path):
    plain, named = tmp_path / "plain.pcap", tmp_path / "vni9_2026-11-25T10-15-00Z.pcap"
    for p in (plain, named):
        real_pcap(p, [120] * 5)
    assert ix.main(["mirrorcap_index.py", "--vni", "7", str(plain), str(named)]) == 0
    assert vnis(plain) == vnis(named) == (7, {7})
    assert ix.main(["mirrorcap_index.py", str(plain), str(named)]) == 0  # no --vni: the name's
    assert vnis(plain) == (None, {None}) and vnis(named) == (9, {9})


@pytest.mark.parametrize("bad", [["--vni"], ["--vni", "0"], ["--vni", "16777216"], ["--vni", "x1"]])
def test_a_vni_out_of_range_is_refused_and_nothing_written(tmp_path, capsys, bad):
    pcap = tmp_path / "plain.pcap"
    real_pcap(pcap, [120] * 3)
    assert ix.main(["mirrorcap_index.py", *bad, str(pcap)]) == 2
    assert "--vni" in capsys.readouterr().err and sorted(p.name for p in tmp_path.iterdir()) == ["plain.in", "plain.pcap"]


def test_the_capture_passes_its_vni_to_the_indexer(tmp_path, monkeypatch):
    capture = host_script("mirrorcap-capture.py")
    monkeypatch.setattr(capture, "HOST_LIB", str(ROOT / "scripts" / "host"))  # where bake.sh installs it, here
    pcap = tmp_path / "plain.pcap"
    real_pcap(pcap, [120] * 5)
    indexer_ = capture.Indexer("4242")
    indexer_.add(str(pcap))
    indexer_.tick()
    assert indexer_.proc.wait(timeout=120) == 0
    assert vnis(pcap) == (4242, {4242})
