"""Mirrored traffic as AWS sends it, for tcpreplay: outer Ethernet/IPv4/UDP 4789,
VXLAN (RFC 7348: flags 0x08, reserved bits zero), then the source's own frame.

Each inner packet carries a unique tag in its payload so a test can tell exactly
which packets reached a pcap, whole or not.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

VXLAN_PORT = 4789


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 0) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0, 64, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:] + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


INNER_SRC_MAC, INNER_DST_MAC = "0a:00:00:00:00:01", "0a:00:00:00:00:02"


def inner_ipv4(tag: bytes, ip_bytes: int = 500) -> bytes:
    """An Ethernet frame holding an IPv4/UDP packet of exactly `ip_bytes` whose payload starts with `tag`."""
    payload = tag + bytes(ip_bytes - 28 - len(tag))
    return mac(INNER_DST_MAC) + mac(INNER_SRC_MAC) + b"\x08\x00" + ipv4("10.9.0.1", "10.9.0.2", 17, udp(40000, 8080, payload))


def inner_ipv6(tag: bytes, ip_bytes: int = 500) -> bytes:
    payload = tag + bytes(ip_bytes - 48 - len(tag))
    datagram = udp(40000, 8080, payload)
    hdr = struct.pack("!IHBB16s16s", 6 << 28, len(datagram), 17, 64,
                      socket.inet_pton(socket.AF_INET6, "2001:db8::1"), socket.inet_pton(socket.AF_INET6, "2001:db8::2"))
    return mac(INNER_DST_MAC) + mac(INNER_SRC_MAC) + b"\x86\xdd" + hdr + datagram


def vxlan_frame(vni: int, inner: bytes, *, dst_mac: str, src_mac: str, dst_ip: str, src_ip: str, ident: int = 0) -> bytes:
    vx = struct.pack("!B3xI", 0x08, vni << 8) + inner  # flags 0x08 (I bit), reserved zero, 24-bit VNI
    return mac(dst_mac) + mac(src_mac) + b"\x08\x00" + ipv4(src_ip, dst_ip, 17, udp(49152 + ident % 16384, VXLAN_PORT, vx), ident)


def write_pcap(path: Path, frames: list[bytes]) -> Path:
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # microsecond pcap, Ethernet
        for i, frame in enumerate(frames):
            f.write(struct.pack("<IIII", 1_700_000_000, i, len(frame), len(frame)) + frame)
    return path


def read_pcap(data: bytes, times: bool = False) -> list[tuple]:
    """(caplen, len, bytes) per whole record of a classic pcap (either byte order, µs or ns);
    with times=True, (caplen, len, bytes, packet time in seconds)."""
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    per_second = 1e9 if data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e6
    records, pos = [], 24
    while pos + 16 <= len(data):
        sec, frac, caplen, length = struct.unpack(endian + "IIII", data[pos:pos + 16])
        if pos + 16 + caplen > len(data):
            break  # a torn last record
        body = data[pos + 16:pos + 16 + caplen]
        records.append((caplen, length, body, sec + frac / per_second) if times else (caplen, length, body))
        pos += 16 + caplen
    return records


def tag(n: int) -> bytes:
    return b"MCT%08d" % n


class Traffic:
    """AWS-shaped VXLAN to one machine's mirror ENI (its sender namespace), replayed with tcpreplay."""

    def __init__(self, m, vni: int):
        self.m, self.vni = m, vni
        self.n = 0

    def frame(self, vni: int, inner: bytes) -> bytes:
        self.n += 1
        return vxlan_frame(vni, inner, dst_mac=self.m.mirror_mac, src_mac=self.m.sender_mac,
                           dst_ip=self.m.mirror_ip.split("/")[0], src_ip=self.m.sender_ip.split("/")[0], ident=self.n)

    def frames(self, first: int, count: int, vni: int | None = None, size: int = 500) -> list[bytes]:
        """`count` tagged frames (tags first, first+1, ...) of `size`-byte inner IPv4 packets."""
        return [self.frame(vni or self.vni, inner_ipv4(tag(first + i), size)) for i in range(count)]

    def pcap(self, frames: list[bytes]) -> Path:
        return write_pcap(self.m.workdir / f"replay-{time.monotonic_ns()}.pcap", frames)

    def replay(self, frames: list[bytes], *speed: str) -> str:
        r = self.m.sender("tcpreplay", "-q", "-i", self.m.sender_iface, *(speed or ("--topspeed",)), str(self.pcap(frames)))
        assert r.returncode == 0, r.stderr
        return r.stdout

    def send_once(self, frames: list[bytes]) -> None:
        """Each frame sent once, whether or not the mirror ENI takes it (as AWS's side does: tcpreplay
        retries a frame the receiving veth refuses, for ever)."""
        code = ("import socket, sys\nfrom traffic import read_pcap\n"
                "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\ns.bind((sys.argv[2], 0))\n"
                "for _, _, frame in read_pcap(open(sys.argv[1], 'rb').read()):\n"
                "    try:\n        s.send(frame)\n    except OSError:\n        pass\n")
        r = subprocess.run(["ip", "netns", "exec", self.m.sender_netns, sys.executable, "-c", code, str(self.pcap(frames)),
                            self.m.sender_iface], capture_output=True, text=True, env={"PYTHONPATH": str(Path(__file__).parent)})
        assert r.returncode == 0, r.stderr

    def background(self, frames: list[bytes], pps: int, loop: int = 0) -> subprocess.Popen:
        """Replays `frames` at `pps`, `loop` times (0: until stopped); stdout carries tcpreplay's counts."""
        return subprocess.Popen(["ip", "netns", "exec", self.m.sender_netns, "tcpreplay", "-q", "-i", self.m.sender_iface,
                                 f"--loop={loop}", f"--pps={pps}", str(self.pcap(frames))],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
