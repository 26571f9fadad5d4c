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
from vxlan import ipv4, mac, udp

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
            s3.upload_file(str(path), other, key.replace("web/", "other/", 1))  # never read for "web"
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
    assert r.exit_code == 2 and "tcpdump failed" in r.stderr
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
