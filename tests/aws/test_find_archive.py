"""`mirrorcap find --capture` over a moto S3 archive: indexes read from beside their pcaps, only
byte ranges fetched, a pcap whose index failed still found by its time; the packets are exactly
what tcpdump takes from every archived file, cut to the query's time range."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone

import boto3
import findtraffic
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from helpers import write
from mirrorcap.cli import app
from mirrorcap.contract import ARCHIVE_INDEX_KEY, ARCHIVE_KEY, PCAP_PATTERN, archive_index_key
from mirrorcap.find.hostindex import indexer
from test_window_archive import INVENTORY, REGION, VNI

pytestmark = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")
T0 = datetime(2026, 11, 24, 23, 59, 50, tzinfo=timezone.utc)
BUCKET = "mirrorcap-find-lab"
HOSTS = ("i-0aaaaaaaaaaaaaaa1", "i-0bbbbbbbbbbbbbbb2")


@pytest.fixture
def archive(tmp_path, monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(k, v)
    inventory = write(tmp_path, INVENTORY)
    files = {}
    for h, instance in enumerate(HOSTS):
        for n in range(2):  # two files per host, 20 s each, across midnight UTC
            start = T0 + timedelta(seconds=20 * n)
            name = start.strftime(PCAP_PATTERN.replace("{vni}", str(VNI)))
            local = tmp_path / f"{instance}-{name}"
            first_ns = int(start.timestamp()) * 10 ** 9 + h * 1_000_000
            findtraffic.write_pcap(local, findtraffic.packets(100 + 10 * h + n, 12000, first_ns, step_ns=200_000))
            key = ARCHIVE_KEY.format(capture="web", vni=VNI, date=start.date().isoformat(), instance=instance, file=name)
            files[key] = local
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        ix = indexer()
        for n, (key, local) in enumerate(sorted(files.items())):
            s3.upload_file(str(local), BUCKET, key)
            if n != 1:  # the second file's index failed on its host: none in the archive
                ix.write(str(local), str(local) + ".idx")
                s3.upload_file(str(local) + ".idx", BUCKET, archive_index_key(key))
        yield dict(files=files, inventory=inventory, tmp=tmp_path, s3=s3)


def expected(files, bpf, lo_ns, hi_ns):
    ix = indexer()
    out = []
    for local in files.values():
        data = subprocess.run(["tcpdump", "-r", str(local), "-w", "-", bpf], capture_output=True, check=True).stdout
        out += [(ts, data[f:f + c]) for _o, ts, _lt, c, _l, f in ix.records(data, ix.header(data)) if lo_ns <= ts < hi_ns]
    return sorted(out)


def test_find_over_the_archive_fetches_ranges_and_answers_like_tcpdump(archive):
    lo, hi = T0 + timedelta(seconds=12), T0 + timedelta(seconds=15)
    iso = lambda t: t.isoformat().replace("+00:00", "Z")  # noqa: E731
    query = f"host 10.0.3.7 and (port 443 or icmp) and after {iso(lo)} and before {iso(hi)}"
    out = archive["tmp"] / "found.pcap"
    r = CliRunner().invoke(app, ["find", query, "--capture", "web", "--bucket", BUCKET, "--inventory",
                                 str(archive["inventory"]), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "1 archived pcap(s) have no index" in r.output
    ix = indexer()
    data = out.read_bytes()
    got = [(ts, data[f:f + c]) for _o, ts, _lt, c, _l, f in ix.records(data, ix.header(data))]
    want = expected(archive["files"], "host 10.0.3.7 and (port 443 or icmp)", int(lo.timestamp()) * 10 ** 9,
                    int(hi.timestamp()) * 10 ** 9)
    assert len(want) > 10 and sorted(got) == want and [t for t, _ in got] == sorted(t for t, _ in got)
    fetched = int(re.search(r"\((\d+) B of them fetched from S3 by range\)", r.output).group(1))
    indexed = sum(p.stat().st_size for k, p in archive["files"].items() if not k.endswith(sorted(archive["files"])[1]))
    assert 0 < fetched < indexed / 2  # ranges, not files
    assert ARCHIVE_INDEX_KEY.startswith("index/") and ARCHIVE_INDEX_KEY.endswith(".idx.json.gz")


def test_flows_over_the_archive_name_the_archived_pcap(archive):
    since = (T0 - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    r = CliRunner().invoke(app, ["find", f"arp and after {since}", "--capture", "web", "--bucket", BUCKET, "--inventory",
                                 str(archive["inventory"]), "--flows", "--json"])
    assert r.exit_code == 0, r.output
    assert "web/vni77/2026-11-24/i-0aaaaaaaaaaaaaaa1/" in r.stdout and '"fam": "arp"' in r.stdout
    # no archive: its host answers through Systems Manager (tests/aws/test_find_ssm.py); here it has none running
    r = CliRunner().invoke(app, ["find", "arp", "--capture", "solo", "--inventory", str(archive["inventory"]), "--flows"])
    assert r.exit_code == 3 and "no running host" in r.output
