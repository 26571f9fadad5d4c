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
from pathlib import Path

import pytest

from hostenv import LIBEXEC, needs_root, run, write_env

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
                             rotate_seconds=2, buffer_kib=4096, snaplen=0)
        env = {**os.environ, "MIRRORCAP_ENV_FILE": str(env_file), "MIRRORCAP_IMDS_ENDPOINT": f"http://127.0.0.1:{IMDS_PORT}",
               "MIRRORCAP_ENI_WAIT_SECONDS": "10", "MIRRORCAP_USER": "nobody", "MIRRORCAP_SKIP_MOUNT_CHECK": "1"}
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


def test_capture_holds_exactly_the_decapsulated_packets_of_its_vni_and_rotates(lab):
    src, host, pcaps, env = lab
    assert in_host(host, env, str(LIBEXEC / "decap")).returncode == 0
    tcpdump = subprocess.Popen(["ip", "netns", "exec", host, "bash", "-c", f"umask 0027; exec {LIBEXEC / 'capture'} {VNI}"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        big = b"B" * 1400
        send(src, [vxlan(VNI, inner_frame(f"good-{i}".encode())) for i in range(20)]
             + [vxlan(OTHER_VNI, inner_frame(f"wrong-{i}".encode())) for i in range(10)]
             + [vxlan(VNI, inner_frame(big))])
        time.sleep(3)  # past the 2 s rotation; the next packet opens a new file
        send(src, [vxlan(VNI, inner_frame(f"late-{i}".encode())) for i in range(5)])
        time.sleep(1)
    finally:
        tcpdump.send_signal(signal.SIGTERM)
        out, err = tcpdump.communicate(timeout=10)
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
