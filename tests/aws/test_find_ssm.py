"""`mirrorcap find QUERY --capture solo` (no archive): the query runs on the host through Systems Manager
and only the result comes back, in pieces under SSM's 24,000 characters of output.

The host is tests/ssmhost.py's RunningSsm: send_command runs the command line with bash, as root of a
private namespace, on the rendered host files and real pcaps (botocore's Stubber and moto cannot run
a command, so they could only replay answers written by hand); the instance is found by its stack's
tags in moto's EC2. tcpdump judges the packets."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import boto3
import findtraffic
import pytest
from moto import mock_aws
from typer.testing import CliRunner

import ssmhost
from helpers import write
from mirrorcap import contract
from mirrorcap.cli import app
from mirrorcap.find import ssm
from mirrorcap.find.hostindex import indexer
from mirrorcap.find.query import parse
from mirrorcap.find.search import flow_view, search
from test_window_archive import INVENTORY, REGION

pytestmark = [pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed"),
              pytest.mark.skipif(ssmhost.can_run() is not None, reason=str(ssmhost.can_run()))]
START = 1_764_770_000 * 10 ** 9
LINE = re.compile(re.escape(contract.FIND_COMMAND) + r" (--request [A-Za-z0-9+/=]+|--chunk [0-9a-f]{32} \d+|--forget [0-9a-f]{32})")


@pytest.fixture
def solo(tmp_path, monkeypatch):
    """The capture "solo" (no archive) with its host running in moto's EC2, that host's pcaps (one
    of them indexed at rotation, one still being written, without an index) and its SSM."""
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(k, v)
    pcaps = tmp_path / "tcpdump"
    pcaps.mkdir()
    closed = pcaps / "vni78_2025-12-03T13-53-20Z.pcap"
    findtraffic.write_pcap(closed, findtraffic.packets(21, 6000, START))
    indexer().write(str(closed))
    findtraffic.write_pcap(pcaps / "vni78_2025-12-03T14-03-20Z.pcap", findtraffic.packets(22, 3000, START + 600 * 10 ** 9))
    (pcaps / "notes.txt").write_text("not a pcap\n")
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        tags = [{"Key": contract.STACK_KEY, "Value": "solo"}, {"Key": "Name", "Value": contract.resource_name("solo", contract.HOST)}]
        instance = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1,
                                     TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])["Instances"][0]["InstanceId"]
        fake = ssmhost.RunningSsm(tmp_path / "host", pcaps, instance)
        from mirrorcap.account_checks import clients
        real = clients.client
        monkeypatch.setattr(clients, "client", lambda session, service, region: fake if service == "ssm" else real(session, service, region))
        yield dict(ssm=fake, pcaps=pcaps, inventory=write(tmp_path, INVENTORY), tmp=tmp_path, instance=instance)


def find(solo, *args):
    return CliRunner().invoke(app, ["find", *args, "--capture", "solo", "--inventory", str(solo["inventory"])])


def records(data: bytes) -> list[tuple[int, bytes]]:
    ix = indexer()
    return [(ts, data[f:f + c]) for _o, ts, _lt, c, _l, f in ix.records(data, ix.header(data))]


def tcpdump(pcaps, bpf: str) -> list[tuple[int, bytes]]:
    out = []
    for p in sorted(pcaps.glob("*.pcap")):
        out += records(subprocess.run(["tcpdump", "-r", str(p), "-w", "-", bpf], capture_output=True, check=True).stdout)
    return out


def test_the_packets_come_from_the_host_in_pieces_as_tcpdump_takes_them(solo):
    out = solo["tmp"] / "found.pcap"
    r = find(solo, "host 10.0.3.7 or port 53", "--out", str(out))
    assert r.exit_code == 0, r.output
    got = records(out.read_bytes())
    want = tcpdump(solo["pcaps"], "host 10.0.3.7 or port 53")
    assert len(want) > 1000 and sorted(got) == sorted(want) and [t for t, _ in got] == sorted(t for t, _ in got)
    pieces = [c for c in solo["ssm"].sent if "--chunk" in c[0]]
    assert len(pieces) >= 3  # more than one SSM output's worth, fetched in pieces
    assert f"fetched {len(pieces)}/{len(pieces)} pieces" in r.output and "sha256 checked" in r.output
    assert all(len(c) == 1 and LINE.fullmatch(c[0]) for c in solo["ssm"].sent), solo["ssm"].sent
    assert "--forget" in solo["ssm"].sent[-1][0] and list(solo["ssm"].spool.iterdir()) == []  # nothing left on the host
    assert sorted(p.name for p in solo["pcaps"].iterdir()) == ["notes.txt", "vni78_2025-12-03T13-53-20Z.pcap",
                                                               "vni78_2025-12-03T13-53-20Z.pcap" + contract.INDEX_SUFFIX,
                                                               "vni78_2025-12-03T14-03-20Z.pcap"]  # indexed in memory, not beside it
    again = find(solo, "host 10.0.3.7", "--out", str(out))
    assert again.exit_code == 2 and "exists" in again.output  # never overwritten


def test_flows_from_the_host_are_the_flows_duckdb_picks_here(solo):
    query = "tcp and not port 443 and before 2025-12-03T14:03:21Z"
    r = find(solo, query, "--flows", "--json")
    assert r.exit_code == 0, r.output
    got = [json.loads(line) for line in r.stdout.splitlines()]
    copy = solo["tmp"] / "copy"
    shutil.copytree(solo["pcaps"], copy)
    node = parse(query)
    found = search(copy, node)
    want = [flow_view(f) for f in found.flows]
    key = lambda v: json.dumps(v, sort_keys=True)  # noqa: E731
    assert len(want) > 20 and sorted(map(key, got)) == sorted(map(key, want))


def test_a_result_over_max_size_is_refused_naming_the_fix(solo):
    findtraffic.write_pcap(solo["pcaps"] / "vni78_2025-12-03T14-13-20Z.pcap", findtraffic.packets(23, 20000, START + 1200 * 10 ** 9))
    out = solo["tmp"] / "big.pcap"
    r = find(solo, "ip or ip6 or arp", "--out", str(out), "--max-size", "1")
    assert r.exit_code == 2, r.output
    assert "pass 1 MiB" in r.output and "narrow the query" in r.output and "--flows" in r.output and "archive" in r.output
    assert not out.exists() and [c for c in solo["ssm"].sent if "--chunk" in c[0]] == []


def test_nothing_matching_exits_1(solo):
    r = find(solo, "host 203.0.113.9", "--out", str(solo["tmp"] / "none.pcap"))
    assert r.exit_code == 1 and "no packet matches" in r.output, r.output


@pytest.mark.parametrize("hostile", ["host 10.0.3.7; touch {canary}", "host $(touch {canary})", "host `touch {canary}`",
                                     "port 53\ntouch {canary}", "host 10.0.3.7' && touch '{canary}"])
def test_a_hostile_query_never_reaches_a_shell(solo, hostile):
    canary = solo["tmp"] / "pwned"
    r = find(solo, hostile.format(canary=canary), "--flows")
    assert r.exit_code == 2 and solo["ssm"].sent == [] and not canary.exists(), r.output  # refused by the parser


def test_the_host_refuses_a_request_that_is_not_a_query(solo):
    """What reaches mirrorcap-find is checked there too: words, numbers and hex only, never run."""
    host = ssm.Host(solo["ssm"], solo["instance"])
    canary = solo["tmp"] / "pwned"
    for tree in (["host", "any", 4, f"$(touch {canary})"], ["fam", f"`touch {canary}`"], ["vni", "7; touch x"], "tcp"):
        body = json.dumps(dict(v=1, query=tree, flows=True, max_bytes=1 << 20)).encode()
        summary = ssm.answer_of(host.run(f"{contract.FIND_COMMAND} --request {base64.b64encode(body).decode()}"), "i")
        assert summary["status"] == "refused" and "query node" in summary["why"], summary
    with pytest.raises(AssertionError):  # the laptop's gate: no other command line is sent
        host.send(f"{contract.FIND_COMMAND} --request abc; touch {canary}")
    assert not canary.exists()


def test_an_unmanaged_instance_exits_3_naming_the_fix(solo):
    r = find(solo, "tcp", "--flows", "--instance", "i-0fffffffffffffff0")
    assert r.exit_code == 3 and "InvalidInstanceId" in r.output and "not managed by Systems Manager" in r.output, r.output


def test_access_denied_exits_3_naming_the_permissions(solo):
    solo["ssm"].deny = "User: arn:aws:iam::123456789012:user/dev is not authorized to perform: ssm:SendCommand"
    r = find(solo, "tcp", "--flows")
    assert r.exit_code == 3 and "ssm:SendCommand" in r.output and "ssm:GetCommandInvocation" in r.output, r.output


def test_a_host_without_mirrorcap_find_exits_3_saying_re_bake(solo, tmp_path):
    old = tmp_path / "old-image"
    shutil.copytree(ssmhost.RENDERED / "files", old)
    (old / contract.FIND_COMMAND.lstrip("/")).unlink()
    solo["ssm"].files = old
    r = find(solo, "tcp", "--flows")
    assert r.exit_code == 3 and "No such file" in r.output and "re-bake" in r.output, r.output


def test_no_running_host_exits_3(solo):
    boto3.client("ec2", region_name=REGION).terminate_instances(InstanceIds=[solo["instance"]])
    r = find(solo, "tcp", "--flows")
    assert r.exit_code == 3 and "no running host" in r.output, r.output
