"""A booted capture host indexes every pcap it closes: the index beside the pcap, written as the
capture user, read by `mirrorcap find` without building it again; retention sweeps an index whose
pcap is gone; health says every closed pcap has its index.

The boot lab as in test_host_boot.py: a capture rotating every 30 s, baked, booted with its user
data, sent AWS-shaped VXLAN carrying tagged inner packets."""

from __future__ import annotations

import re

import shutil
import subprocess

import pytest

from bootlab import needs_lab
from capturehost import DIR, check, health, rotating_host, wait_for
from mirrorcap import contract
from mirrorcap.find.hostindex import indexer
from mirrorcap.find.query import parse
from mirrorcap.find.search import collect, search

pytestmark = needs_lab


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with rotating_host(tmp_path_factory, "index", "idx") as booted:
        yield booted


def closed(m):
    return sorted(m.path(DIR).glob("vni*_*.pcap"))[:-1]


def test_a_rotated_pcap_gets_its_index_beside_it(host, tmp_path):
    m, vni = host
    wait_for(lambda: closed(m) and all((p.parent / (p.name + contract.INDEX_SUFFIX)).exists() for p in closed(m)),
             150, "a rotated pcap and its index")
    pcap = closed(m)[0]
    idx = pcap.parent / (pcap.name + contract.INDEX_SUFFIX)
    owner = m.run("stat", "-c", "%U %a", f"{DIR}/{idx.name}").stdout.split()
    assert owner == ["mirrorcap", "640"]  # the capture's user and umask: readable by the pcap group
    journal = m.journal(f"mirrorcap-capture@{vni}.service")
    assert "mirrorcap-index: %s:" % pcap.name in journal
    # the fast walk, inside the capture's sandbox: the distribution's numpy imports there
    assert re.search(r"mirrorcap-index: %s: \d+ packets, \d+ flows \(numpy [\d.]+ walk\)" % re.escape(pcap.name), journal), journal
    # mirrorcap find reads it as the host wrote it (same size: not built again) and answers like tcpdump.
    for p in closed(m):
        shutil.copy(p, tmp_path / p.name)
        shutil.copy(p.parent / (p.name + contract.INDEX_SUFFIX), tmp_path / (p.name + contract.INDEX_SUFFIX))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    node = parse(f"vni {vni} and udp")
    got = collect(search(tmp_path, node), node)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    ix = indexer()
    want = []
    for p in closed(m):
        data = subprocess.run(["tcpdump", "-r", str(tmp_path / p.name), "-w", "-", "udp"], capture_output=True, check=True).stdout
        want += [(ts // 1000, data[f:f + c]) for _o, ts, _lt, c, _l, f in ix.records(data, ix.header(data))]
    assert len(want) > 10 and sorted((p[0] // 1000, bytes(p[3])) for p in got) == sorted(want)
    code, report = health(m)
    assert check(report, "index", vni)["status"] == "ok", report


def test_retention_sweeps_an_index_whose_pcap_is_gone(host):
    m, _vni = host
    orphan = f"{DIR}/vni{_vni}_2020-01-01T00-00-00Z.pcap{contract.INDEX_SUFFIX}"
    m.run("runuser", "-u", "mirrorcap", "--", "touch", orphan, check=True)
    r = m.run("systemctl", "start", "mirrorcap-retention.service", timeout=120)
    assert r.returncode == 0, r.stderr + m.journal("mirrorcap-retention.service")
    assert not m.path(orphan).exists()
    assert all((p.parent / (p.name + contract.INDEX_SUFFIX)).exists() for p in closed(m))
