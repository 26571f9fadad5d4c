"""Decap + capture on a real data path: netns, veth, vxlan, tcpdump, tshark, fake IMDSv2.

The source namespace plays the mirrored production ENI (it sends VXLAN exactly
as AWS does: RFC 7348, flags 0x08, reserved bits zero); the host namespace plays
the capture instance, whose mirror ENI is one end of a veth pair.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from hostenv import HEALTH, LIBEXEC, needs_root, run, write_env

pytestmark = needs_root
ENI = "eni-0aaaaaaaaaaaaaaaa"
VNI, OTHER_VNI = 12345, 999
SRC_IP, HOST_IP = "192.0.2.1", "192.0.2.2"  # TEST-NET-1, only inside our own namespaces
IMDS_PORT = 18080


def ip_checksum(header: bytes) -> int:
    s = sum(struct.unpack("!10H", header))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def inner_frame(payload: bytes, src="10.9.0.1", dst="10.9.0.2", sport=40000, dport=8080) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack("!H", ip_checksum(hdr)) + hdr[12:]
    eth = bytes.fromhex("0a0000000002") + bytes.fromhex("0a0000000001") + b"\x08\x00"
    return eth + hdr + udp


def vxlan(vni: int, frame: bytes) -> bytes:
    # RFC 7348: flags 0x08 (VNI valid), 24 reserved bits, 24-bit VNI, 8 reserved bits.
    return struct.pack("!B3xI", 0x08, vni << 8) + frame


SENDER = """
import socket, sys, json
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for hexpkt in json.load(sys.stdin):
    s.sendto(bytes.fromhex(hexpkt), (sys.argv[1], 4789))
"""


def send(ns: str, packets: list[bytes]) -> None:
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", SENDER, HOST_IP],
                   input=json.dumps([p.hex() for p in packets]), text=True, check=True)


@pytest.fixture
def lab():
    tag = uuid.uuid4().hex[:6]
    src, host = f"mcsrc{tag}", f"mchost{tag}"
    run("ip", "netns", "add", src)
    run("ip", "netns", "add", host)
    imds = None
    work = None
    try:
        run("ip", "link", "add", f"vs{tag}", "netns", src, "type", "veth", "peer", "name", "mirror0", "netns", host)
        run("ip", "-n", src, "addr", "add", f"{SRC_IP}/24", "dev", f"vs{tag}")
        run("ip", "-n", src, "link", "set", f"vs{tag}", "up")
        run("ip", "-n", host, "addr", "add", f"{HOST_IP}/24", "dev", "mirror0")
        run("ip", "-n", host, "link", "set", "lo", "up")
        # A second NIC stands in for the primary ENI: decap must pick by ENI ID, not order or name.
        run("ip", "-n", host, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer")
        mirror_mac = run("ip", "netns", "exec", host, "cat", "/sys/class/net/mirror0/address").stdout.strip()
        primary_mac = run("ip", "netns", "exec", host, "cat", "/sys/class/net/eth0/address").stdout.strip()
        imds = subprocess.Popen(["ip", "netns", "exec", host, sys.executable, str(Path(__file__).with_name("fake_imds.py")),
                                 str(IMDS_PORT), json.dumps({primary_mac: "eni-0bbbbbbbbbbbbbbbb", mirror_mac: ENI})])
        # pcaps directory reachable by the unprivileged capture user (tmp_path is 0700)
        work = Path(tempfile.mkdtemp(prefix="mirrorcap-lab-"))
        os.chmod(work, 0o755)
        pcaps = work / "pcaps"
        pcaps.mkdir()
        os.chown(pcaps, int(run("id", "-u", "nobody").stdout), int(run("id", "-g", "nobody").stdout))
        os.chmod(pcaps, 0o2750)
        env_file = write_env(work / "mirrorcap.env", mirror_eni_id=ENI, vnis=f'"{VNI}"', capture_dir=pcaps,
                             rotate_seconds=2, buffer_kib=4096, snaplen=0, stale_after_seconds=120)
        env = {**os.environ, "MIRRORCAP_ENV_FILE": str(env_file), "MIRRORCAP_IMDS_ENDPOINT": f"http://127.0.0.1:{IMDS_PORT}",
               "MIRRORCAP_ENI_WAIT_SECONDS": "10", "MIRRORCAP_USER": "nobody", "MIRRORCAP_SKIP_MOUNT_CHECK": "1",
               "MIRRORCAP_RUN_DIR": str(work / "run")}
        time.sleep(0.5)
        yield src, host, pcaps, env
    finally:
        if imds:
            imds.kill()
        if work:
            shutil.rmtree(work, ignore_errors=True)
        run("ip", "netns", "del", src, check=False)
        run("ip", "netns", "del", host, check=False)


def in_host(host, env, *cmd):
    return subprocess.run(["ip", "netns", "exec", host, *cmd], env=env, capture_output=True, text=True)


def test_decap_finds_the_mirror_eni_by_id_and_is_idempotent(lab):
    src, host, pcaps, env = lab
    first = in_host(host, env, str(LIBEXEC / "decap"))
    assert first.returncode == 0, first.stderr
    details = in_host(host, env, "ip", "-d", "link", "show", f"vxlan{VNI}").stdout
    assert f"vxlan id {VNI} " in details and "dev mirror0 " in details and "dstport 4789 " in details and ",UP" in details
    mtu = int(in_host(host, env, "cat", f"/sys/class/net/vxlan{VNI}/mtu").stdout)
    nic_mtu = int(in_host(host, env, "cat", "/sys/class/net/mirror0/mtu").stdout)
    assert mtu == nic_mtu - 50
    second = in_host(host, env, str(LIBEXEC / "decap"))
    assert second.returncode == 0 and "recreating" not in second.stdout


def test_decap_fails_clearly_when_the_eni_is_not_attached(lab):
    src, host, pcaps, env = lab
    other = write_env(pcaps.parent / "other.env", mirror_eni_id="eni-0cccccccccccccccc", vnis=VNI)
    r = in_host(host, {**env, "MIRRORCAP_ENV_FILE": str(other), "MIRRORCAP_ENI_WAIT_SECONDS": "2"}, str(LIBEXEC / "decap"))
    assert r.returncode == 1 and "eni-0cccccccccccccccc is not attached" in r.stderr


def test_capture_fails_loudly_without_its_interface(lab):
    src, host, pcaps, env = lab
    r = in_host(host, env, str(LIBEXEC / "capture"), str(VNI))
    assert r.returncode == 1 and f"vxlan{VNI} does not exist" in r.stderr


@contextmanager
def capturing(host, env):
    """The rendered capture script running (as the unit runs it), stopped like systemd stops it."""
    proc = subprocess.Popen(["ip", "netns", "exec", host, "bash", "-c", f"umask 0027; exec {LIBEXEC / 'capture'} {VNI}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    result = {}
    try:
        time.sleep(1.5)
        yield proc, result
    finally:
        proc.send_signal(signal.SIGTERM)
        result["stdout"], result["stderr"] = proc.communicate(timeout=10)


def test_capture_holds_exactly_the_decapsulated_packets_of_its_vni_and_rotates(lab):
    src, host, pcaps, env = lab
    assert in_host(host, env, str(LIBEXEC / "decap")).returncode == 0
    with capturing(host, env) as (_, result):
        big = b"B" * 1400
        send(src, [vxlan(VNI, inner_frame(f"good-{i}".encode())) for i in range(20)]
             + [vxlan(OTHER_VNI, inner_frame(f"wrong-{i}".encode())) for i in range(10)]
             + [vxlan(VNI, inner_frame(big))])
        time.sleep(3)  # past the 2 s rotation; the next packet opens a new file
        send(src, [vxlan(VNI, inner_frame(f"late-{i}".encode())) for i in range(5)])
        time.sleep(1)
    err = result["stderr"]
    files = sorted(pcaps.glob(f"vni{VNI}_*.pcap"))
    assert len(files) >= 2, f"no rotation: {files} {err}"
    payloads, layers = [], set()
    for f in files:
        st = os.stat(f)
        assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == os.stat(pcaps).st_gid, f
        fields = run("tshark", "-r", str(f), "-T", "fields", "-e", "frame.protocols", "-e", "ip.dst", "-e", "data.data").stdout
        for line in fields.splitlines():
            protocols, dst, data = line.split("\t")
            layers.add(protocols)
            assert dst == "10.9.0.2"  # the inner packet, not the VXLAN carrier
            payloads.append(bytes.fromhex(data))
    assert sorted(payloads) == sorted([f"good-{i}".encode() for i in range(20)] + [big] + [f"late-{i}".encode() for i in range(5)])
    assert all("vxlan" not in p for p in layers)
    assert "dropped by kernel" in err and "0 packets dropped by kernel" in err


def health(host, env, *args) -> tuple[int, dict]:
    r = in_host(host, env, sys.executable, str(HEALTH), "--json", *args)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


def checks(report: dict, name: str) -> list[dict]:
    return [c for c in report["checks"] if c["name"] == name]


def test_health_reports_a_working_capture_then_each_fault(lab):
    src, host, pcaps, env = lab
    assert in_host(host, env, str(LIBEXEC / "decap")).returncode == 0
    with capturing(host, env) as (proc, _):
        send(src, [vxlan(VNI, inner_frame(f"ok-{i}".encode())) for i in range(10)])
        time.sleep(0.5)
        code, report = health(host, env, "--sample-seconds", "1")
        assert code == 0, report
        assert checks(report, "services")[0]["status"] == "skip"  # no systemd as PID 1 here
        assert checks(report, "tcpdump")[0]["pids"] and checks(report, "drops")[0]["dropped"] == 0
        newest = checks(report, "newest-pcap")[0]
        assert newest["status"] == "ok" and newest["size_bytes"] > 24, newest
        assert newest["size_bytes"] > 24 and newest["age_seconds"] <= 2
        assert checks(report, "unmatched")[0]["status"] == "ok" and checks(report, "disk")[0]["status"] == "ok"

        # A session stamping another VNI: its packets reach the ENI and vanish in the kernel.
        sender = subprocess.Popen(["ip", "netns", "exec", src, sys.executable, "-c",
                                   "import time,socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                                   f"for _ in range(40):\n s.sendto(bytes.fromhex({vxlan(OTHER_VNI, inner_frame(b'x')).hex()!r}),"
                                   f"({HOST_IP!r},4789)); time.sleep(0.05)"])
        code, report = health(host, env, "--sample-seconds", "1.5")
        sender.wait()
        unmatched = checks(report, "unmatched")[0]
        assert code == 1 and unmatched["status"] == "fail" and unmatched["iface"] == "mirror0"
        assert list(unmatched["vnis"]) == [str(OTHER_VNI)] and f"VNI {OTHER_VNI}" in unmatched["detail"]

        # No mirrored traffic for longer than stale_after_seconds (120 in the env file).
        newest_file = max(pcaps.glob(f"vni{VNI}_*.pcap"))  # names sort by time
        os.utime(newest_file, (time.time() - 600, time.time() - 600))
        code, report = health(host, env, "--sample-seconds", "0")
        stale = checks(report, "newest-pcap")[0]
        assert code == 1 and stale["status"] == "fail" and stale["age_seconds"] >= 600 and "stale" in stale["detail"]
    # tcpdump gone (the unit crashed or was stopped).
    code, report = health(host, env, "--sample-seconds", "0")
    assert code == 1 and checks(report, "tcpdump")[0]["status"] == "fail" and "no tcpdump on vxlan" in checks(report, "tcpdump")[0]["detail"]
    human = in_host(host, env, sys.executable, str(HEALTH), "--sample-seconds", "0")
    assert human.returncode == 1 and "UNHEALTHY" in human.stdout and "FAIL  tcpdump" in human.stdout


def test_health_reports_kernel_drops_from_tcpdump(lab):
    src, host, pcaps, env = lab
    small = write_env(pcaps.parent / "small.env", mirror_eni_id=ENI, vnis=f'"{VNI}"', capture_dir=pcaps,
                      rotate_seconds=60, buffer_kib=32, snaplen=0, stale_after_seconds=120)
    env = {**env, "MIRRORCAP_ENV_FILE": str(small)}
    assert in_host(host, env, str(LIBEXEC / "decap")).returncode == 0
    flood = vxlan(VNI, inner_frame(b"F" * 1400)).hex()
    with capturing(host, env):
        code, report = health(host, env, "--sample-seconds", "0")
        assert checks(report, "drops")[0]["dropped_since_last_check"] == 0
        for _ in range(5):  # a 32 KiB kernel buffer cannot keep up with a flood
            subprocess.run(["ip", "netns", "exec", src, sys.executable, "-c",
                            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                            f"p=bytes.fromhex({flood!r})\nfor _ in range(100000): s.sendto(p,({HOST_IP!r},4789))"], check=True)
            code, report = health(host, env, "--sample-seconds", "0")
            drops = checks(report, "drops")[0]
            if drops["dropped_since_last_check"]:
                break
        assert code == 1 and drops["status"] == "fail" and drops["dropped"] > 0 and "buffer_kib" in drops["detail"]
        # Reported once: the next check counts only new drops.
        code, report = health(host, env, "--sample-seconds", "0")
        assert checks(report, "drops")[0]["dropped_since_last_check"] == 0
