"""A capture host that archives, booted: its closed pcaps reach S3, an outage loses nothing.

The boot lab as in test_host_boot.py, plus S3: a moto server under S3's real
names (TLS, a lab CA in the machine's trust store) and the instance role's
credentials from the fake IMDS. The host is a capture with `archive {}` (rotating
every 30 s), baked, then booted with its rendered user data and the bucket Terraform
would pass; the AWS CLI is Debian's (v2). Nothing in the host knows it is in a lab.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from bootlab import Machine, needs_lab, rootfs
from helpers import eni, minimal, sources, write
from mirrorcap import contract
from mirrorcap.host import render
from mirrorcap.inventory import load
from capturehost import Traffic, bake_image, check, health, tag, tagged_traffic, wait_capturing, wait_for
from bootlab.traffic import inner_ipv4, read_pcap

pytestmark = needs_lab

VOLUME, ENI = "vol-0a1b2c3d4e5f60718", "eni-0a1b2c3d4e5f60718"
BUCKET, REGION, CAPTURE, VNI = "mirrorcap-lab-archive", "eu-west-1", "arch", 4242
DIR = "/var/log/tcpdump"
UNIT = f"mirrorcap-capture@{VNI}.service"
TAGGED = re.compile(rb"MCT(\d{8})")


def archive_capture(tmp_path):
    body = sources(eni(1)) + "\n  archive {}\n  host {\n    rotate_seconds = 30\n  }\n"
    return load(write(tmp_path, minimal(body, name=CAPTURE))).captures[0]


def pcaps(m: Machine) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in m.path(DIR).glob(f"vni{VNI}_*.pcap")}


def closed(m: Machine) -> list[str]:
    names = sorted(pcaps(m))
    return names[:-1]


def key(m: Machine, name: str) -> str:
    day = dt.datetime.strptime(name, f"vni{VNI}_%Y-%m-%dT%H-%M-%SZ.pcap").strftime("%Y-%m-%d")
    return contract.ARCHIVE_KEY.format(capture=CAPTURE, vni=VNI, date=day, instance=m.instance_id, file=name)


def tags(data: bytes) -> set[int]:
    return {int(t.group(1)) for _, _, pkt in read_pcap(data) for t in [TAGGED.search(pkt)] if t}


def upload(m: Machine) -> str:
    r = m.run("systemctl", "start", "mirrorcap-archive.service", timeout=300)
    assert r.returncode == 0, r.stderr + m.journal("mirrorcap-archive.service")
    return m.unit_state("mirrorcap-archive.service")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    d = tmp_path_factory.mktemp("archive")
    capture = archive_capture(d)
    with Machine(rootfs(), d, "archive", eni_id=ENI, volume_id=VOLUME) as m:
        m.serve_s3(REGION, [BUCKET])
        bake_image(m, render.bake_script(capture, render.host_files(capture)))
        m.install_user_data(render.user_data(capture, VOLUME, ENI, BUCKET))
        m.boot()
        wait_for(lambda: m.unit_state(UNIT) == "active" and pcaps(m), 120, "capture")
        with tagged_traffic(m, VNI):
            yield m


def test_closed_pcaps_reach_s3_under_the_contracts_keys_byte_for_byte(host):
    m = host
    assert m.unit_state("mirrorcap-archive.timer") == "active"  # pulled in by storage, every boot
    wait_for(lambda: len(closed(m)) >= 2, 120, "two rotations")
    # What was closed when the upload started (a rotation during it closes one more, for the next run).
    done = closed(m)
    # A run started after they closed uploads them: `systemctl start` while the timer's run is under way
    # joins that run, which may have listed the directory before the last rotation.
    wait_for(lambda: upload(m) == "inactive" and all(key(m, n) in m.s3_objects(BUCKET) for n in done), 120,
             "a run of the uploader that started after the pcaps closed")
    local = pcaps(m)
    objects = m.s3_objects(BUCKET)
    for name in done:
        assert objects.get(key(m, name)) == local[name], name  # identical bytes, under the contract's key
    assert key(m, sorted(local)[-1]) not in objects  # the file tcpdump writes is never uploaded
    # A closed pcap's packet index goes up under the index prefix (the capture writes it seconds after the rotation).
    idx = f"{DIR}/{done[0]}{contract.INDEX_SUFFIX}"
    wait_for(lambda: m.path(idx).exists(), 60, "the first closed pcap's index")
    assert upload(m) == "inactive"
    assert m.s3_objects(BUCKET)[contract.archive_index_key(key(m, done[0]))] == m.path(idx).read_bytes()
    assert any(tags(objects[key(m, n)]) for n in done)  # real captured traffic
    assert "SHA-256" in m.journal("mirrorcap-archive.service") and "confirmed by S3" in m.journal("mirrorcap-archive.service")
    code, report = health(m)
    # What S3 confirmed is no backlog; a pcap closed since (a rotation every 30 s) is one, young: not a failure.
    assert check(report, "archive")["status"] == "ok" and check(report, "archive")["backlog"] <= len(closed(m)) - len(done), report


def test_an_outage_keeps_every_unarchived_pcap_reports_the_backlog_and_the_retry_uploads_it(host):
    m = host
    env = m.read_file(contract.ENV_FILE)
    hold = f"{DIR}/hold/filler"
    # What S3 holds now (a pcap closed since the last upload is not in it: it belongs to the backlog).
    uploaded = {n for n in pcaps(m) if key(m, n) in m.s3_objects(BUCKET)}
    m.set_s3_reachable(False)
    try:
        before = set(pcaps(m))
        wait_for(lambda: len(set(closed(m)) - uploaded) >= 2, 120, "two rotations during the outage")
        assert upload(m) == "inactive"  # a failed upload is not a failed unit: health judges the backlog
        journal = m.journal("mirrorcap-archive.service")
        assert "UPLOAD FAILED" in journal, journal
        backlog = sorted(set(closed(m)) - uploaded)
        assert not any(key(m, n) in m.s3_objects(BUCKET) for n in backlog)
        # Under the free-space floor: retention deletes what S3 confirmed, never the backlog.
        avail = int(m.run("df", "-B1", "--output=avail", DIR).stdout.split()[1])
        fill = m.run("sh", "-c", f"mkdir -p {DIR}/hold && fallocate -l {avail - (8 << 20)} {hold}")
        assert fill.returncode == 0, fill.stderr
        assert m.run("systemctl", "start", "mirrorcap-retention.service").returncode == 0
        left = set(pcaps(m))
        assert set(backlog) <= left and before - uploaded <= left
        assert not (uploaded & left), "confirmed pcaps stayed under the floor"
        # The retention unit's run, or the capture's own (it calls retention when its volume runs low): whichever came first.
        retention = m.journal()
        said = "\n".join(line for line in retention.splitlines() if "delet" in line or "floor" in line)
        assert "free space under the floor, archived" in retention and "not archived yet (never deleted)" in retention, \
            (sorted(uploaded), sorted(before), sorted(left), backlog, said)
        # Health: the backlog, once it is older than its bound (lowered here from 3 rotations + 6 minutes).
        m.write_file(contract.ENV_FILE, re.sub(r"MIRRORCAP_ARCHIVE_BACKLOG_SECONDS=\d+", "MIRRORCAP_ARCHIVE_BACKLOG_SECONDS=5", env))
        code, report = health(m)
        archive = check(report, "archive")
        assert code == 1 and archive["status"] == "fail" and "UPLOAD BACKLOG" in archive["detail"], archive
        assert archive["backlog"] >= len(backlog) and archive["oldest"] == backlog[0] and archive["oldest_age_seconds"] > 5
        assert archive["last_error"], archive
    finally:
        m.set_s3_reachable(True)
    # The uploader's timer retries after its backoff, by itself: the whole backlog, byte for byte.
    wait_for(lambda: all(key(m, n) in m.s3_objects(BUCKET) for n in backlog), 330, "the retry to upload the backlog", step=5)
    local, objects = pcaps(m), m.s3_objects(BUCKET)
    for name in backlog:
        if name in local:
            assert objects[key(m, name)] == local[name], name
    # Now confirmed, retention may delete them under the floor.
    assert m.run("systemctl", "start", "mirrorcap-retention.service").returncode == 0
    assert not set(backlog) & set(pcaps(m))
    m.run("rm", "-rf", f"{DIR}/hold", check=True)
    m.write_file(contract.ENV_FILE, env)
    wait_for(lambda: check(health(m)[1], "archive")["status"] == "ok", 30, "health's archive check ok again")
    # Every replayed tag reached S3 (some pcap holds it), none was lost to the outage.
    archived = set()
    for k, data in m.s3_objects(BUCKET).items():
        if not k.startswith(contract.INDEX_PREFIX):  # a pcap's packet index (contract.ARCHIVE_INDEX_KEY)
            archived |= tags(data)
    assert set(range(40)) <= archived


# --------------------------------------------------------------------------- a fleet of two

FLEET_VNI = 4242


def fleet_capture(tmp_path):
    body = (f'\n  archive {{}}\n  fleet {{\n    subnet_ids = ["subnet-0aaaaaaaaaaaaaaa1"]\n  }}\n  host {{\n    rotate_seconds = 30\n  }}\n'
            f'  source {{\n    eni_id = "{eni(1)}"\n  }}\n')
    text = minimal(body, name="fleet").replace('  subnet_id = "subnet-0123456789abcdef0"\n', "")
    return load(write(tmp_path, text)).captures[0]


def listener(m: Machine) -> tuple[int, str]:
    """What the NLB's health check gets from the host (from the sender's side of the wire)."""
    r = m.sender("curl", "-s", "-m", "5", "-o", "/dev/stdout", "-w", "\n%{http_code}",
                 f"http://{m.mirror_ip.split('/')[0]}:{contract.HEALTH_PORT}/")
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body


@contextmanager
def one_s3(region: str, bucket: str, objects: dict[str, bytes]):
    """moto in server mode on 127.0.0.1 (moto's ThreadedMotoServer) with one bucket holding `objects`
    (keys and bytes unchanged): the archive as one account's bucket, reached over HTTP. Yields its URL."""
    import boto3
    from moto.server import ThreadedMotoServer
    werkzeug_log = logging.getLogger("werkzeug")  # the threaded server logs every request at INFO
    level = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host_, port = server.get_host_and_port()
        url = f"http://{host_}:{port}"
        s3 = boto3.client("s3", region_name=region, endpoint_url=url,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
        for k, data in objects.items():
            s3.put_object(Bucket=bucket, Key=k, Body=data)
        held = {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page.get("Contents", [])}
        assert held == objects  # byte for byte, keys unchanged
        yield url
    finally:
        server.stop()
        werkzeug_log.setLevel(level)


def mirrorcap_window(url: str, inventory, capture: str, bucket: str, at: dt.datetime, span: str, out) -> subprocess.CompletedProcess:
    """The real CLI, in its own process: S3 is the endpoint boto3 reads from AWS_ENDPOINT_URL_S3, fake credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL_S3=url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true")
    cli = Path(sys.executable).parent / "mirrorcap"
    return subprocess.run([str(cli), "window", "--inventory", str(inventory), "--capture", capture,
                           "--at", at.isoformat().replace("+00:00", "Z"), "--window", span, "--bucket", bucket, "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)


def packets(path) -> list[tuple[float, bytes]]:
    """(time, frame) of every packet of a pcap: times as tshark reads them, frames by read_pcap."""
    r = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch"],
                       capture_output=True, text=True, check=True)
    times = [float(t) for t in r.stdout.split()]
    frames = [data for caplen, length, data in read_pcap(Path(path).read_bytes())]
    assert len(times) == len(frames), (len(times), len(frames))
    return list(zip(times, frames))


def test_two_fleet_hosts_each_archive_their_share_and_together_everything(tmp_path):
    """Two hosts of a fleet, each with its own volume found as /dev/sdf and VXLAN on its primary ENI
    (device-number 0), each receiving part of the traffic as an NLB spreads flows: together, S3 holds
    every packet sent, once. Each answers the NLB's health check from mirrorcap-health's verdict."""
    capture = fleet_capture(tmp_path)
    inventory = tmp_path / "capture.hcl"
    hosts = []
    try:
        for i, name in enumerate(["fleet-a", "fleet-b"]):
            vol, mac = f"vol-0f1ee70000000000{i}", f"0e:6c:61:62:01:0{i}"
            m = Machine(rootfs(), tmp_path / name, name, eni_id=f"eni-0f1ee70000000000{i}", volume_id=vol,
                        mirror_mac=mac, ebs_device_name="sdf")
            hosts.append(m)
            m.open()
            m.set_imds_interfaces(m.imds_interfaces, {**m.imds_paths, f"network/interfaces/macs/{mac}/device-number": "0"})
            m.serve_s3(capture.region, [BUCKET])
            bake_image(m, render.bake_script(capture, render.host_files(capture)))
            m.install_user_data(render.user_data(capture, "", "", BUCKET))  # the stack passes "" for a fleet
            m.boot()
        for m in hosts:
            wait_for(lambda: m.unit_state(f"mirrorcap-capture@{FLEET_VNI}.service") == "active", 120,
                     f"{m.name} capturing:\n{m.journal('mirrorcap-storage.service')}{m.journal('mirrorcap-decap.service')}")
            wait_capturing(m, vni=FLEET_VNI)  # tcpdump listening: the unit's being active is not enough on a busy machine
            assert f"volume {m.volume_id} ({m.volume_node}" in m.journal("mirrorcap-storage.service")
            assert f"on {m.mirror_iface} ({m.eni_id}" in m.journal("mirrorcap-decap.service")
        # The NLB spreads flows: host a gets tags 0-199, host b 200-399.
        start = time.monotonic()
        sent = [[inner_ipv4(tag(200 * i + n)) for n in range(200)] for i in range(len(hosts))]
        replay_begin = time.time()
        for i, m in enumerate(hosts):
            traffic = Traffic(m)
            traffic.replay([traffic.frame(FLEET_VNI, inner) for inner in sent[i]], "--pps=1000")
        replay_end = time.time()
        for m in hosts:
            code, report = health(m)
            assert code == 0, report
            wait_for(lambda: listener(m)[0] == 200, 30, f"{m.name}'s health listener to answer 200")
        time.sleep(max(0.0, 31 - (time.monotonic() - start)))
        for m in hosts:  # a packet after the rotation interval closes the tagged file
            traffic = Traffic(m)
            traffic.replay([traffic.frame(FLEET_VNI, inner_ipv4(tag(99999999)))])
            wait_for(lambda: len(list(m.path(DIR).glob(f"vni{FLEET_VNI}_*.pcap"))) >= 2, 30, "a rotation")
            closed_now = sorted(p.name for p in m.path(DIR).glob(f"vni{FLEET_VNI}_*.pcap"))[:-1]
            # (a run of the timer under way when the rotation came has not seen the tagged file closed: the next does)
            wait_for(lambda: upload(m) == "inactive" and all(
                any(k.endswith("/" + n) for k in m.s3_objects(BUCKET)) for n in closed_now), 120, "the closed pcaps in S3")
        seen: dict[int, int] = {}
        for m in hosts:
            for k, data in m.s3_objects(BUCKET).items():
                if k.startswith(contract.INDEX_PREFIX):  # a pcap's packet index (contract.ARCHIVE_INDEX_KEY)
                    assert k.startswith(f"{contract.INDEX_PREFIX}fleet/vni{FLEET_VNI}/") and f"/{m.instance_id}/" in k, k
                    continue
                assert k.startswith(f"fleet/vni{FLEET_VNI}/") and f"/{m.instance_id}/" in k, k
                for t in tags(data):
                    seen[t] = seen.get(t, 0) + 1
        evidence = {m.name: {"local": {p.name: sorted(tags(p.read_bytes()))[:3] for p in m.path(DIR).glob(f"vni{FLEET_VNI}_*.pcap")},
                             "s3": sorted(k.rsplit("/", 1)[1] for k in m.s3_objects(BUCKET)),
                             "journal": m.journal(f"mirrorcap-capture@{FLEET_VNI}.service")[-1500:]} for m in hosts}
        assert {t for t in seen if t < 400} == set(range(400)) and all(seen[t] == 1 for t in range(400)), evidence
        # Both hosts' archives in one bucket (moto, server mode, 127.0.0.1): `mirrorcap window` over the
        # replay (not the rotation packets 30 s later) merges them into exactly what was sent, in time order.
        held = [m.s3_objects(BUCKET) for m in hosts]  # one look each (the uploaders' timers go on uploading)
        archived = {k: v for objects in held for k, v in objects.items()}
        assert len(archived) == sum(len(objects) for objects in held)  # no key shared by the hosts
        at = dt.datetime.fromtimestamp(round((replay_begin + replay_end) / 2), dt.timezone.utc)
        span = f"{int(max(at.timestamp() - replay_begin, replay_end - at.timestamp())) + 3}s"
        out = tmp_path / "window.pcap"
        with one_s3(capture.region, BUCKET, archived) as url:
            r = mirrorcap_window(url, inventory, capture.name, BUCKET, at, span, out)
        assert r.returncode == 0, r.stdout + r.stderr
        assert all(f"/{m.instance_id}/" in r.stdout for m in hosts), r.stdout  # a pcap of each host
        merged = packets(out)
        times = [t for t, _ in merged]
        assert times == sorted(times)
        assert sorted(f for _, f in merged) == sorted(sent[0] + sent[1])  # every packet sent, each once, nothing else
        assert [int(TAGGED.search(f).group(1)) for _, f in merged] == list(range(400))  # host a's replay, then b's
        # A host that stops capturing stops answering 200: the NLB sends its flows elsewhere.
        m = hosts[0]
        m.run("systemctl", "stop", f"mirrorcap-capture@{FLEET_VNI}.service", check=True)
        wait_for(lambda: listener(m)[0] == 503, 40, "the listener to answer 503")
        assert "tcpdump" in listener(m)[1] or "services" in listener(m)[1]
        assert listener(hosts[1])[0] == 200
    finally:
        for m in hosts:
            m.close()
