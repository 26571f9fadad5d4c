"""The packet index on the host, in its pure parts: the shipped mirrorcap_index.py run as the
capture runs it, the archive uploading an index beside its pcap, health reporting pcaps without one.

That a rotated pcap gets its index on a booted host is in tests/host/test_index_boot.py."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import time

import findtraffic

from helpers import ROOT
from mirrorcap import contract
from mirrorcap.find.hostindex import indexer
from test_host_scripts import host_script

HOST_INDEXER = ROOT / "scripts" / "host" / "mirrorcap_index.py"
archive = host_script("mirrorcap-archive.py")
health = host_script("mirrorcap-health.py")
START = 1_764_770_000 * 10 ** 9


def test_the_host_writes_what_mirrorcap_index_writes(tmp_path):
    pcap = tmp_path / "vni7_2025-12-03T13-53-20Z.pcap"
    findtraffic.write_pcap(pcap, findtraffic.packets(31, 500, START))
    r = subprocess.run(["python3", str(HOST_INDEXER), str(pcap)], capture_output=True, text=True)
    assert r.returncode == 0 and "500 packets" in r.stderr, r.stderr
    written = (tmp_path / (pcap.name + contract.INDEX_SUFFIX)).read_bytes()
    line = json.loads(gzip.decompress(written).splitlines()[0])
    assert line["vni"] == 7 and line["packets"] == 500
    other = tmp_path / "copy"
    other.mkdir()
    (other / pcap.name).write_bytes(pcap.read_bytes())
    indexer().write(str(other / pcap.name))  # what `mirrorcap index` calls
    assert (other / (pcap.name + contract.INDEX_SUFFIX)).read_bytes() == written
    assert indexer().SUFFIX == contract.INDEX_SUFFIX == archive.INDEX_SUFFIXES[0] == health.INDEX_SUFFIX


def test_a_pcap_that_cannot_be_indexed_is_marked_and_nothing_else_written(tmp_path):
    bad = tmp_path / "vni7_2025-12-03T13-53-20Z.pcap"
    bad.write_bytes(b"\x00" * 100)
    r = subprocess.run(["python3", str(HOST_INDEXER), str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and "not indexed" in r.stderr
    assert "not a pcap or pcapng" in (tmp_path / (bad.name + ".idx-failed")).read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [bad.name, bad.name + ".idx-failed"]
    findtraffic.write_pcap(bad, findtraffic.packets(1, 10, START))  # fixed: the marker goes
    assert subprocess.run(["python3", str(HOST_INDEXER), str(bad)], capture_output=True).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [bad.name, bad.name + contract.INDEX_SUFFIX]


class FakeSettings:
    def __init__(self, d):
        self.directory, self.pattern, self.vnis = str(d), contract.PCAP_PATTERN, ["1"]
        self.bucket, self.region, self.prefix, self.key_format = "b", "eu-west-1", "cap", contract.ARCHIVE_KEY
        self.index_key_format = contract.ARCHIVE_INDEX_KEY


def test_the_archive_uploads_each_closed_pcaps_index_under_the_index_prefix(tmp_path, monkeypatch):
    names = ["vni1_2026-11-25T10-00-00Z.pcap", "vni1_2026-11-25T10-10-00Z.pcap", "vni1_2026-11-25T10-20-00Z.pcap"]
    for n in names:
        (tmp_path / n).write_bytes(b"x" * 10)
    (tmp_path / (names[0] + contract.INDEX_SUFFIX)).write_bytes(b"i")
    (tmp_path / (names[2] + contract.INDEX_SUFFIX)).write_bytes(b"i")  # newest: still written, never uploaded
    state, calls = {"confirmed": {}, "failed_runs": 0, "retry_at": 0, "instance_id": "i-1"}, []
    monkeypatch.setattr(archive, "save_state", lambda st: None)
    monkeypatch.setattr(archive, "put_object", lambda s, path, key, checksum: calls.append((os.path.basename(path), key)))
    archive.upload(FakeSettings(tmp_path), state, time.time())
    key = contract.ARCHIVE_INDEX_KEY.format(capture="cap", vni=1, date="2026-11-25", instance="i-1", file=names[0])
    assert key == "index/cap/vni1/2026-11-25/i-1/" + names[0] + contract.INDEX_SUFFIX
    assert key == contract.archive_index_key(contract.ARCHIVE_KEY.format(capture="cap", vni=1, date="2026-11-25", instance="i-1",
                                                                          file=names[0]))
    assert (names[0] + contract.INDEX_SUFFIX, key) in calls and len(calls) == 3
    assert list(state["indexes"]) == [names[0]]
    calls.clear()
    (tmp_path / (names[1] + contract.INDEX_SUFFIX)).write_bytes(b"i")  # indexed after its pcap went up
    archive.upload(FakeSettings(tmp_path), state, time.time())
    assert calls == [(names[1] + contract.INDEX_SUFFIX, key.replace("10-00-00", "10-10-00"))]
    archive.remove_indexes(str(tmp_path), names[0])
    assert not (tmp_path / (names[0] + contract.INDEX_SUFFIX)).exists()


def test_health_warns_of_closed_pcaps_without_an_index(tmp_path):
    names = ["vni1_2026-11-25T10-00-00Z.pcap", "vni1_2026-11-25T10-10-00Z.pcap", "vni1_2026-11-25T10-20-00Z.pcap"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    now = time.time()

    def verdict():
        report = health.Report()
        health.check_index(report, str(tmp_path), contract.PCAP_PATTERN, "1", now)
        return report.checks[0]
    assert verdict()["status"] == "ok"  # closed minutes ago: not late yet
    now += 3600
    late = verdict()
    assert late["status"] == "warn" and late["index_late"] == 2 and late["index_failed"] == 0  # the newest is being written
    (tmp_path / (names[0] + ".idx-failed")).write_text("IndexError_: not a pcap\n")
    (tmp_path / (names[1] + contract.INDEX_SUFFIX)).write_bytes(b"i")
    failed = verdict()
    assert failed["status"] == "warn" and failed["index_failed"] == 1 and "not a pcap" in failed["detail"]
    assert health.Report().healthy
