"""`mirrorcap window` against a moto S3 archive holding real pcaps of two fleet hosts.

The pcaps are written packet by packet with their own timestamps (classic pcap,
Ethernet, read back by tshark): the two hosts' files interleave in time, one host's
file holds a packet out of order (an NLB delivers out of order; a host stamps what it
receives) and one holds a packet stamped before its file's name (the kernel hands
packets over late). The window starts after midnight UTC, so two of the files it
needs are under the previous day's keys. The extract must be exactly the packets
of the window (and of the filter), by tshark's reading of every uploaded file.

The archive buckets are made from the synthesized stacks' own cdk.tf.json (tests/synth_account.py:
their bucket_prefix and tags as Terraform applies them), so the lookup finds what the stack creates."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from mirrorcap.cli import app
from mirrorcap.contract import ARCHIVE_KEY, PCAP_PATTERN
from synth_account import deploy
from bootlab.traffic import ipv4, mac, udp

REGION = "eu-west-1"
VNI = 77
T0 = datetime(2026, 11, 24, 23, 57, tzinfo=timezone.utc)

INVENTORY = f'''
capture "web" {{
  region = "{REGION}"
  vpc_id = "vpc-0123456789abcdef0"
  ami    = "ami-0123456789abcdef0"
  vni    = {VNI}
  network {{
    mirror_source_cidrs = ["10.0.0.0/16"]
  }}
  fleet {{
    subnet_ids = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
  }}
  archive {{
    retention_days   = 36500  # the fixed dates below stay inside it
    reader_role_arns = ["arn:aws:iam::123456789012:role/pcap-readers"]
  }}
  source {{
    tags = {{ Service = "web" }}
  }}
  auto_mirror {{}}
}}

capture "solo" {{
  region    = "{REGION}"
  vpc_id    = "vpc-0123456789abcdef0"
  subnet_id = "subnet-0123456789abcdef0"
  ami       = "ami-0123456789abcdef0"
  vni       = 78
  network {{
    mirror_source_cidrs = ["10.0.0.0/16"]
  }}
}}

# Another capture's archive in the same account and region: never read for "web".
capture "other" {{
  region    = "{REGION}"
  vpc_id    = "vpc-0123456789abcdef0"
  subnet_id = "subnet-0123456789abcdef0"
  ami       = "ami-0123456789abcdef0"
  vni       = 77
  archive {{}}
  network {{
    mirror_source_cidrs = ["10.0.0.0/16"]
  }}
}}
'''


def frame(ident: int, port: int) -> bytes:
    return mac("0a:00:00:00:00:02") + mac("0a:00:00:00:00:01") + b"\x08\x00" + ipv4(
        "10.9.0.1", "10.9.0.2", 17, udp(40000, port, b"mirrorcap" + bytes(40)), ident)


def write_pcap(path: Path, packets: list[tuple[float, int, int]]) -> Path:
    """(epoch, IP ID, UDP port) per packet, in the order given (not sorted: the file's order)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for t, ident, port in packets:
            sec, usec = divmod(round(t * 1e6), 1_000_000)
            data = frame(ident, port)
            f.write(struct.pack("<IIII", sec, usec, len(data), len(data)) + data)
    return path


def packets(path: Path) -> list[tuple[float, int, int]]:
    """(epoch, IP ID, UDP port) of every packet in file order, read by tshark."""
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e", "ip.id", "-e", "udp.dstport"],
                         capture_output=True, text=True, check=True).stdout.split()
    return [(round(float(out[i]), 6), int(out[i + 1], 0), int(out[i + 2])) for i in range(0, len(out), 3)]


# Each host's files: (start offset from T0 in s, file length in s). Host A rotates on the
# minute, host B on the half minute: their packets interleave.
HOSTS = {"i-0aaaaaaaaaaaaaaa1": [(0, 120), (120, 120), (240, 120)],
         "i-0bbbbbbbbbbbbbbb2": [(90, 120), (210, 120), (330, 120)]}
OUT_OF_ORDER = 0x7FFF  # host A, second file: stamped before the packet written ahead of it
EARLY = 0x7FFE  # host B, second file: stamped 2 s before the file's name


def make_archive(tmp_path: Path):
    """{key: local pcap}; every packet."""
    files, ident = {}, 1
    for h, (instance, spans) in enumerate(HOSTS.items()):
        for start, length in spans:
            name = (T0 + timedelta(seconds=start)).strftime(PCAP_PATTERN.replace("{vni}", str(VNI)))
            rows = []
            t = start + 0.25 + h * 0.1
            while t < start + length:
                rows.append((T0.timestamp() + t, ident, 5000 if ident % 2 else 6000))
                ident += 1
                t += 1.3
            if (instance, start) == ("i-0aaaaaaaaaaaaaaa1", 120):
                # inside the window below: written after a packet stamped 0.4 s later than it
                i = next(i for i, r in enumerate(rows) if r[0] >= T0.timestamp() + 222)
                rows.insert(i + 1, (rows[i][0] - 0.4, OUT_OF_ORDER, 5001))
            if (instance, start) == ("i-0bbbbbbbbbbbbbbb2", 210):
                rows.insert(0, (T0.timestamp() + start - 2, EARLY, 5000))
            day = (T0 + timedelta(seconds=start)).date().isoformat()
            key = ARCHIVE_KEY.format(capture="web", vni=VNI, date=day, instance=instance, file=name)
            files[key] = write_pcap(tmp_path / f"{instance}-{name}", rows)
    return files


@pytest.fixture
def archive(tmp_path, monkeypatch, synthesized):
    stack = synthesized(INVENTORY)
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(k, v)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    files = make_archive(tmp_path)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        built = deploy(stack, work, {}, lambda service: boto3.client(service, region_name=REGION), ["web", "other"], only={"aws_s3_bucket"})
        bucket = built["web"].resource("aws_s3_bucket", "archive")["bucket"]
        other = built["other"].resource("aws_s3_bucket", "archive")["bucket"]
        s3.create_bucket(Bucket="mirrorcap-untagged", CreateBucketConfiguration={"LocationConstraint": REGION})
        for key, path in files.items():
            s3.upload_file(str(path), bucket, key)
            s3.upload_file(str(path), other, key.replace("web/", "other/", 1).replace("vni77", "vni99"))  # read by no window here
        # Never picked up: a key the contract does not name, and a file of another VNI
        s3.put_object(Bucket=bucket, Key="web/vni77/2026-11-25/i-0aaaaaaaaaaaaaaa1/notes.txt", Body=b"x")
        s3.put_object(Bucket=bucket, Key="web/vni78/2026-11-25/i-0aaaaaaaaaaaaaaa1/vni78_2026-11-25T00-00-00Z.pcap",
                      Body=files[next(iter(files))].read_bytes())
        yield dict(s3=s3, files=files, work=work, bucket=bucket, runner=CliRunner())


def window(d, *args):
    return d["runner"].invoke(app, ["window", "--capture", "web", *args])


def everything(d) -> list[tuple[float, int, int]]:
    return sorted(p for f in d["files"].values() for p in packets(f))


def test_every_host_merged_cut_to_the_window_across_midnight(archive):
    d = archive
    at = T0 + timedelta(seconds=225)  # 00:00:45Z; the window starts after midnight
    out = d["work"] / "cut.pcap"
    result = window(d, "--at", at.astimezone(timezone(timedelta(hours=9))).isoformat(), "--window", "30s", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    begin, end = (at - timedelta(seconds=30)).timestamp(), (at + timedelta(seconds=30)).timestamp()
    want = [p for p in everything(d) if begin <= p[0] <= end]
    got = packets(out)
    assert sorted(got) == want and len(want) > 40
    assert {p[1] for p in got} >= {OUT_OF_ORDER, EARLY}  # out of order, and stamped before its file's name: both kept
    # Merged by time across hosts (never host after host): only the packet out of order inside its own file is out of place
    assert [p for p in got if p[1] != OUT_OF_ORDER] == sorted(p for p in got if p[1] != OUT_OF_ORDER)
    of_a = {p[1] for k, f in d["files"].items() if "/i-0aaa" in k for p in packets(f)}
    switches = sum((a[1] in of_a) != (b[1] in of_a) for a, b in zip(got, got[1:]))
    assert switches > 20  # the hosts' packets interleave in the extract
    # The previous day's keys were read: two of the pcaps the window needs start before midnight
    listed = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert any("/2026-11-24/" in k for k in listed) and any("/2026-11-25/" in k for k in listed)
    assert not any(k.endswith("T00-05-30Z.pcap") for k in listed)  # host B's last file starts after the window
    assert oct(out.stat().st_mode & 0o777) == "0o640"


def test_the_filters_are_the_hosts(archive):
    d = archive
    at = T0 + timedelta(seconds=225)
    out = d["work"] / "port.pcap"
    result = window(d, "--at", at.isoformat(), "--before", "20s", "--after", "0", "--port", "5000", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    begin, end = (at - timedelta(seconds=20)).timestamp(), at.timestamp()
    assert packets(out) == [p for p in everything(d) if begin <= p[0] <= end and p[2] == 5000]
    shown = d["work"] / "shown.pcap"
    result = window(d, "--at", at.isoformat(), "--window", "30s", "--filter", "udp.dstport == 6000", "--out", str(shown))
    assert result.exit_code == 0, result.stderr
    assert sorted(packets(shown)) == [p for p in everything(d) if at.timestamp() - 30 <= p[0] <= at.timestamp() + 30 and p[2] == 6000]


def test_the_last_file_of_a_host_ends_at_its_upload(archive):
    """The newest pcap of each host has no successor: it is read for any window up to its upload."""
    d = archive
    out = d["work"] / "late.pcap"
    at = T0 + timedelta(seconds=440)  # inside both hosts' last files
    result = window(d, "--at", at.isoformat(), "--window", "5s", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert sorted(packets(out)) == [p for p in everything(d) if at.timestamp() - 5 <= p[0] <= at.timestamp() + 5]


def test_nothing_covers_exits_1_and_writes_nothing(archive):
    d = archive
    out = d["work"] / "none.pcap"
    result = window(d, "--at", "2026-10-01T00:00:00Z", "--out", str(out))
    assert result.exit_code == 1 and "no archived pcap covers" in result.stderr and not out.exists()


def test_refusals_exit_2_with_field_and_fix(archive):
    d = archive
    keep = d["work"] / "mine.pcap"
    keep.write_bytes(b"precious")
    r = window(d, "--at", "2026-11-25T00:00:45Z", "--out", str(keep))
    assert r.exit_code == 2 and "--out" in r.stderr and "never overwrites" in r.stderr and keep.read_bytes() == b"precious"
    r = window(d, "--at", "2026-11-25T00:00:45", "--out", "x.pcap")
    assert r.exit_code == 2 and "no time zone" in r.stderr
    r = d["runner"].invoke(app, ["window", "--capture", "solo", "--at", "now", "--out", "x.pcap"])
    assert r.exit_code == 2 and 'capture "solo" > archive' in r.stderr and "fix: " in r.stderr and "add archive {}" in r.stderr
    r = d["runner"].invoke(app, ["window", "--capture", "nope", "--at", "now", "--out", "x.pcap"])
    assert r.exit_code == 2 and "no capture named nope" in r.stderr
    r = window(d, "--at", "2026-11-25T00:00:45Z", "--out", "x.pcap", "--bucket", "mirrorcap-nowhere")
    assert r.exit_code == 2 and "mirrorcap-nowhere does not exist" in r.stderr and "fix: " in r.stderr
    r = window(d, "--at", "2026-11-25T00:00:45Z", "--out", "x.pcap", "--port", "5000", "--bpf", "this is not bpf")
    # Refused before anything is fetched: tcpdump compiles the filter first, and says what it cannot read.
    assert r.exit_code == 2 and "--bpf: tcpdump cannot use the filter" in r.stderr and "fix: " in r.stderr
    assert sorted(p.name for p in d["work"].iterdir()) == ["capture.hcl", "capture.lock.json", "mine.pcap"]


def test_a_capture_whose_bucket_is_not_deployed(archive):
    d = archive
    d["s3"].delete_bucket_tagging(Bucket=d["bucket"])
    r = window(d, "--at", "2026-11-25T00:00:45Z", "--out", "x.pcap")
    assert r.exit_code == 2 and "no bucket in eu-west-1 named mirrorcap-... is tagged mirrorcap:stack=web" in r.stderr
    assert "make deploy STACK=web" in r.stderr and "--bucket" in r.stderr
    # given by name, the bucket is read without its tags
    r = window(d, "--at", "2026-11-25T00:00:45Z", "--window", "5s", "--out", "x.pcap", "--bucket", d["bucket"])
    assert r.exit_code == 0, r.stderr


def test_access_denied_names_the_reader_roles(archive, monkeypatch):
    """moto enforcing IAM: a principal that may find the bucket but not read the pcaps."""
    from moto.core import set_initial_no_auth_action_count
    d = archive
    iam = boto3.client("iam", region_name=REGION)
    iam.create_user(UserName="auditor")
    iam.put_user_policy(UserName="auditor", PolicyName="find-only", PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
                        '"Action":["s3:ListAllMyBuckets","s3:GetBucketTagging"],"Resource":"*"}]}')
    key = iam.create_access_key(UserName="auditor")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])

    @set_initial_no_auth_action_count(0)
    def run():
        return window(d, "--at", "2026-11-25T00:00:45Z", "--out", "x.pcap")
    r = run()
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert "access denied" in r.stderr and "arn:aws:iam::123456789012:role/pcap-readers" in r.stderr and "--role-arn" in r.stderr


def test_a_key_no_host_writes_is_never_read_nor_written_outside_the_private_directory(archive, tmp_path, monkeypatch):
    """Anyone who may write to the bucket could plant keys: a `..` instance segment once made window
    write to $TMPDIR/vni<VNI>/..., world-readable, through a link planted there."""
    d = archive
    scratch, victim = tmp_path / "scratch", tmp_path / "victim"
    scratch.mkdir()
    victim.mkdir()
    (scratch / "vni77").symlink_to(victim)  # where the `..` key used to land
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr("tempfile.tempdir", None)  # read $TMPDIR again
    planted = write_pcap(tmp_path / "planted.pcap", [(T0.timestamp() + 225, 0x7FFD, 5000)])
    hostile = ["web/vni77/2026-11-25/../vni77_2026-11-25T00-00-40Z.pcap",
               "web/vni77/2026-11-25/i-0aaaaaaaaaaaaaaa1/../../../vni77_2026-11-25T00-00-40Z.pcap",
               "web/vni77/2026-11-25/i-0AAAAAAAAAAAAAAA1/vni77_2026-11-25T00-00-40Z.pcap",  # not an instance ID as IMDS gives it
               "web/vni77/2026-11-25/i-0aaaaaaaaaaaaaaa1/vni77_2026-11-25T0-0-40Z.pcap"]  # strptime would read this name
    for key in hostile:
        d["s3"].upload_file(str(planted), d["bucket"], key)
    out = d["work"] / "cut.pcap"
    at = T0 + timedelta(seconds=225)
    r = window(d, "--at", at.isoformat(), "--window", "30s", "--out", str(out))
    assert r.exit_code == 0, r.stderr
    assert "key(s) in s3://" in r.stderr and "not what a host writes and were not read" in r.stderr
    assert 0x7FFD not in {p[1] for p in packets(out)}  # the planted pcap's packet
    assert list(victim.iterdir()) == [] and list(scratch.iterdir()) == [scratch / "vni77"]  # nothing outside, nothing left


def test_downloads_are_new_files_with_the_pcaps_mode(archive, tmp_path):
    from mirrorcap.archive import s3 as archive_s3
    from mirrorcap.archive.index import parse_key
    d = archive
    key, obj = next((k, d["s3"].head_object(Bucket=d["bucket"], Key=k)) for k in d["files"])
    pcap = parse_key("web", key, obj["ContentLength"], obj["LastModified"])
    root = tmp_path / "private"
    root.mkdir(mode=0o700)
    old = os.umask(0)
    try:
        path = archive_s3.download(d["s3"], d["bucket"], pcap, root)
        assert path.read_bytes() == d["files"][key].read_bytes() and oct(path.stat().st_mode & 0o777) == "0o640"
        assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
        with pytest.raises(FileExistsError):  # never over a file already there
            archive_s3.download(d["s3"], d["bucket"], pcap, root)
    finally:
        os.umask(old)


def test_a_span_longer_than_the_archive_keeps_is_cut_to_its_retention_and_said(archive):
    """--before 20000d once made 19,718 S3 listings, one per day asked for."""
    d = archive
    r = d["runner"].invoke(app, ["window", "--capture", "other", "--at", "now", "--before", "20000d", "--after", "0", "--out", "x.pcap"])
    assert r.exit_code == 1, r.stderr
    assert "note: the window starts at" in r.stderr and "the archive keeps 15 days (archive > retention_days)" in r.stderr
    listed = r.stderr.split("(listed ")[1].rstrip(")\n").split(", ")
    assert 15 <= len(listed) <= 18  # the retention's days and the slack, not 20,000
    r = d["runner"].invoke(app, ["window", "--capture", "other", "--at", "now", "--after", "20000d", "--out", "x.pcap"])
    assert r.exit_code == 1 and "note: the window ends now" in r.stderr and len(r.stderr.split("(listed ")[1].split(", ")) <= 3


@pytest.mark.parametrize("args,words", [
    (["--at", "0001-01-01T00:00:00Z"], "outside what the archive can hold"),
    (["--at", "9999-12-31T23:59:59Z"], "outside what the archive can hold"),
    (["--at", "2026-11-25T00:00:45Z", "--window", "99999999999d"], "--window '99999999999d' is longer than any archive keeps"),
    (["--at", "2026-11-25T00:00:45Z", "--before", "1e400s"], "is not a duration"),
])
def test_dates_and_spans_no_archive_holds_are_refused_in_one_line(archive, args, words):
    r = window(archive, *args, "--out", "x.pcap")
    assert r.exit_code == 2 and words in r.stderr and "fix: " in r.stderr, r.stderr
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception  # no traceback


def test_missing_wireshark_tools_are_named_before_anything_is_downloaded(archive, tmp_path, monkeypatch):
    d = archive
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("tshark", "tcpdump"):  # mergecap is missing
        (bin_dir / tool).symlink_to(shutil.which(tool))
    monkeypatch.setenv("PATH", str(bin_dir))
    got = []
    monkeypatch.setattr("mirrorcap.archive.s3.download", lambda *a: got.append(a))
    r = window(d, "--at", "2026-11-25T00:00:45Z", "--out", "x.pcap")
    assert r.exit_code == 2 and "PATH: mergecap: not found" in r.stderr and "apt install tshark wireshark-common" in r.stderr
    assert got == [] and not (d["work"] / "x.pcap").exists()
