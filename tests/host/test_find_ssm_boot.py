"""mirrorcap-find on a booted capture host, run as the SSM agent runs AWS-RunShellScript: the command
line `mirrorcap find --capture` sends, in a root shell, over the pcaps the real capture wrote (closed
ones with their index, the one being written without). The pieces it prints put back together are
the packets `tcpdump -r` takes from the same files with the same filter; nothing is written beside
the pcaps; the result waits in a spool only root and the pcap group read, and goes when forgotten.

The boot lab as in test_index_boot.py: a capture rotating every 30 s, baked, booted with its user
data, sent AWS-shaped VXLAN carrying tagged inner packets."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import shutil
import subprocess
from datetime import datetime, timezone

import pytest

from bootlab import needs_lab
from capturehost import DIR, rotating_host, wait_for
from mirrorcap import contract
from mirrorcap.find import ssm
from mirrorcap.find.hostindex import indexer
from mirrorcap.find.query import parse, tree

pytestmark = needs_lab

SPOOL = "/var/lib/mirrorcap/find"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with rotating_host(tmp_path_factory, "findssm", "fssm") as booted:
        yield booted


def closed(m):
    return sorted(m.path(DIR).glob("vni*_*.pcap"))[:-1]


def as_the_agent(m, line: str) -> dict:
    """What the SSM agent does with AWS-RunShellScript's commands: a script run by a root shell."""
    assert ssm.SAFE_LINE.fullmatch(line), line
    r = m.run("bash", "-c", line, timeout=120)
    return {"Status": "Success" if r.returncode == 0 else "Failed", "ResponseCode": r.returncode,
            "StandardOutputContent": r.stdout[:24000], "StandardErrorContent": r.stderr[:8000]}


def records(data: bytes):
    ix = indexer()
    return [(ts, data[f:f + c]) for _o, ts, _lt, c, _l, f in ix.records(data, ix.header(data))]


def test_the_query_runs_on_the_host_and_answers_like_tcpdump(host, tmp_path):
    m, vni = host
    wait_for(lambda: len(closed(m)) >= 2 and all((p.parent / (p.name + contract.INDEX_SUFFIX)).exists() for p in closed(m)),
             180, "two rotated pcaps and their indexes")
    ix = indexer()
    newest = closed(m)[-1]
    last = ix.read_meta(str(newest.parent / (newest.name + contract.INDEX_SUFFIX)))["last"]
    until = datetime.fromtimestamp((last // 1000 + 1) / 1e6, timezone.utc).isoformat().replace("+00:00", "Z")
    node = parse(f"vni {vni} and udp and before {until}")  # the closed pcaps' packets: none of them still in flight
    before = {p.name for p in m.path(DIR).iterdir()}

    summary = ssm.answer_of(as_the_agent(m, ssm.request_line(tree(node), False, 64 << 20)), "lab")
    assert summary["status"] == "found" and summary["indexed_here"] >= 1, summary  # the open pcap: indexed in memory
    owner = m.run("stat", "-c", "%U %G %a", SPOOL, f"{SPOOL}/{summary['id']}.gz").stdout.split()
    assert owner == ["root", contract.CAPTURE_GROUP, "750", "root", contract.CAPTURE_GROUP, "640"]
    packed = b""
    for off in range(0, summary["gz_bytes"], summary["chunk"]):
        inv = as_the_agent(m, f"{contract.FIND_COMMAND} --chunk {summary['id']} {off}")
        assert inv["Status"] == "Success" and len(inv["StandardOutputContent"]) <= 24000
        packed += base64.b64decode(inv["StandardOutputContent"].strip(), validate=True)
    got = gzip.decompress(packed)
    assert hashlib.sha256(got).hexdigest() == summary["sha256"]
    assert as_the_agent(m, f"{contract.FIND_COMMAND} --forget {summary['id']}")["Status"] == "Success"
    assert not m.path(f"{SPOOL}/{summary['id']}.gz").exists()
    # nothing of root's beside the pcaps (the open pcap's index was built in memory)
    assert m.run("find", DIR, "-user", "root", "-newer", f"{DIR}/{newest.name}").stdout == ""
    assert {p.name for p in m.path(DIR).iterdir() if not p.name.startswith(f"vni{vni}_")} == set()

    want = []
    for name in sorted(before):
        if name.endswith(".pcap"):
            shutil.copy(m.path(f"{DIR}/{name}"), tmp_path / name)
            data = subprocess.run(["tcpdump", "-r", str(tmp_path / name), "-w", "-", "udp"], capture_output=True).stdout
            want += [(ts, fr) for ts, fr in records(data) if ts // 1000 < last // 1000 + 1] if data else []
    got_records = records(got)
    assert len(want) > 10 and sorted((ts // 1000, fr) for ts, fr in got_records) == sorted((ts // 1000, fr) for ts, fr in want)
    assert [ts for ts, _ in got_records] == sorted(ts for ts, _ in got_records)


def test_flows_and_a_hostile_request_as_the_agent_runs_them(host):
    m, vni = host
    summary = ssm.answer_of(as_the_agent(m, ssm.request_line(tree(parse(f"vni {vni}")), True, 64 << 20)), "lab")
    assert summary["status"] == "found" and summary["kind"] == "flows" and summary["flows"] >= 1, summary
    body = json.dumps(dict(v=1, query=["fam", "$(touch /tmp/pwned)"], flows=True, max_bytes=1)).encode()
    refused = ssm.answer_of(as_the_agent(m, f"{contract.FIND_COMMAND} --request {base64.b64encode(body).decode()}"), "lab")
    assert refused["status"] == "refused" and not m.path("/tmp/pwned").exists()
