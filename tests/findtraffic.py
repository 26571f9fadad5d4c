"""Generated traffic for the packet index and `mirrorcap find`: Ethernet frames of every kind
tcpdump's primitives tell apart (IPv4 and IPv6 TCP/UDP/ICMP/SCTP, fragments first and not,
an IPv6 fragment header, ARP, VLAN-tagged and unknown ethertypes), from a few addresses so
that queries hit. tcpdump is the judge of what a filter takes from them."""

from __future__ import annotations

import ipaddress
import random
import struct

V4 = ["10.0.3.7", "10.0.3.8", "10.0.9.1", "192.168.1.5"]
V6 = ["fd00::7", "fd00::8", "2001:db8::1"]
PORTS = [22, 53, 80, 443, 5432, 40000]
KINDS = ["tcp4", "udp4", "icmp4", "sctp4", "frag4_first", "frag4_rest", "gre4", "tcp6", "udp6", "icmp6", "frag6_tcp",
         "hop6_udp", "arp", "vlan", "other"]


def _a(s: str) -> bytes:
    return ipaddress.ip_address(s).packed


def _eth(etype: int, payload: bytes) -> bytes:
    return b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02" + struct.pack(">H", etype) + payload


def _ip4(src, dst, proto, payload, frag=0, mf=False):
    flags = (0x2000 if mf else 0) | (frag & 0x1FFF)
    return struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, flags, 64, proto, 0, _a(src), _a(dst)) + payload


def _ip6(src, dst, nh, payload):
    return struct.pack(">IHBB16s16s", 6 << 28, len(payload), nh, 64, _a(src), _a(dst)) + payload


def _ports(sp, dp, rest=b""):
    return struct.pack(">HH", sp, dp) + rest


def frame(kind: str, r: random.Random) -> bytes:
    s4, d4 = r.choice(V4), r.choice(V4)
    s6, d6 = r.choice(V6), r.choice(V6)
    sp, dp = r.choice(PORTS), r.choice(PORTS)
    body = bytes(r.randrange(256) for _ in range(r.randrange(0, 40)))
    if kind == "tcp4":
        return _eth(0x0800, _ip4(s4, d4, 6, _ports(sp, dp, b"\0" * 8 + b"\x50\x10\xff\xff\0\0\0\0") + body))
    if kind == "udp4":
        return _eth(0x0800, _ip4(s4, d4, 17, _ports(sp, dp, struct.pack(">HH", 8 + len(body), 0)) + body))
    if kind == "icmp4":
        return _eth(0x0800, _ip4(s4, d4, 1, b"\x08\x00\x00\x00\x00\x01\x00\x01" + body))
    if kind == "sctp4":
        return _eth(0x0800, _ip4(s4, d4, 132, _ports(sp, dp, b"\0" * 8) + body))
    if kind == "frag4_first":
        return _eth(0x0800, _ip4(s4, d4, r.choice([6, 17]), _ports(sp, dp, b"\0" * 12) + body, 0, True))
    if kind == "frag4_rest":  # bytes where ports would be: tcpdump must not read them as ports
        return _eth(0x0800, _ip4(s4, d4, r.choice([6, 17]), _ports(sp, dp) + body, r.randrange(1, 100), r.random() < .5))
    if kind == "gre4":
        return _eth(0x0800, _ip4(s4, d4, 47, b"\x00\x00\x08\x00" + body))
    if kind == "tcp6":
        return _eth(0x86DD, _ip6(s6, d6, 6, _ports(sp, dp, b"\0" * 8 + b"\x50\x10\xff\xff\0\0\0\0") + body))
    if kind == "udp6":
        return _eth(0x86DD, _ip6(s6, d6, 17, _ports(sp, dp, struct.pack(">HH", 8 + len(body), 0)) + body))
    if kind == "icmp6":
        return _eth(0x86DD, _ip6(s6, d6, 58, b"\x80\x00\x00\x00\x00\x01\x00\x01" + body))
    if kind == "frag6_tcp":
        frag_hdr = struct.pack(">BBHI", 6, 0, r.choice([0, 8, 0x10]) | r.choice([0, 1]), 7)
        return _eth(0x86DD, _ip6(s6, d6, 44, frag_hdr + _ports(sp, dp, b"\0" * 16) + body))
    if kind == "hop6_udp":
        return _eth(0x86DD, _ip6(s6, d6, 0, struct.pack(">BB6x", 17, 0) + _ports(sp, dp, b"\0\x08\0\0") + body))
    if kind == "arp":
        return _eth(0x0806, struct.pack(">HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, b"\2" * 6, _a(s4), b"\0" * 6, _a(d4)))
    if kind == "vlan":
        return _eth(0x8100, struct.pack(">HH", 5, 0x0800) + _ip4(s4, d4, 6, _ports(sp, dp, b"\0" * 16)))
    return _eth(0x88B5, body + b"\0" * 30)


def packets(seed: int, count: int, start_ns: int = 1_764_770_000 * 10 ** 9, step_ns: int = 1_000_000):
    """[(ts_ns, frame)] in time order (ties and small steps back included, as a capture can have them)."""
    r = random.Random(seed)
    out, t = [], start_ns
    for _ in range(count):
        t += r.choice([0, step_ns, 3 * step_ns, 17 * step_ns])
        out.append((t, frame(r.choice(KINDS), r)))
    return out


def write_pcap(path, pkts, nano: bool = False) -> None:
    unit = 1 if nano else 1000
    per = 10 ** 9 // unit
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for ts, fr in pkts:
            t = ts // unit
            f.write(struct.pack("<IIII", t // per, t % per, len(fr), len(fr)) + fr)


def write_pcapng(path, pkts) -> None:
    """pcapng with one Ethernet interface in nanoseconds (if_tsresol 9)."""
    def block(btype, body):
        body += b"\0" * (-len(body) % 4)
        n = 12 + len(body)
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)
    with open(path, "wb") as f:
        f.write(block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
        f.write(block(1, struct.pack("<HHI", 1, 0, 262144) + struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0)))
        for ts, fr in pkts:
            f.write(block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(fr), len(fr)) + fr))


def write_pcap_cut(path, pkts, snaps, linktype: int = 1, endian: str = "<", header_snap: int = 262144) -> None:
    """A microsecond pcap of (ts_ns, frame) whose records are cut to the snap length snaps(i, frame) gives (the
    original length kept), of `linktype`, in `endian` byte order, its header declaring `header_snap`."""
    with open(path, "wb") as f:
        f.write(struct.pack(endian + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, header_snap, linktype))
        for i, (ts, fr) in enumerate(pkts):
            cap = fr[:snaps(i, fr)]
            t = ts // 1000
            f.write(struct.pack(endian + "IIII", t // 10 ** 6, t % 10 ** 6, len(cap), len(fr)) + cap)


def relinked(pkts, linktype: int, endian: str = "<"):
    """The Ethernet frames of `pkts` as another link type writes them: LINUX_SLL2 (276: a 20-byte header, the
    protocol first) or NULL (0: a 4-byte address family in the writer's byte order; 2 IPv4, 24/28/30 IPv6)."""
    out = []
    for i, (ts, fr) in enumerate(pkts):
        etype, body = struct.unpack(">H", fr[12:14])[0], fr[14:]
        if linktype == 276:
            head = struct.pack(">HHIHBB8s", etype, 0, 2, 1, 0, 6, fr[6:12] + b"\0\0")
        else:
            family = {0x0800: 2, 0x86DD: (24, 28, 30)[i % 3]}.get(etype, 7 + i % 5)
            head = struct.pack(endian + "I", family)
        out.append((ts, head + body))
    return out


def write_pcapng_sections(path, pkts, sections, endian: str = "<") -> None:
    """pcapng of (ts_ns, frame) in several sections, each a list of interfaces (if_tsresol byte or None, if_tsoffset
    seconds or None): packets go round the sections in runs of 50, round their interfaces one by one, each time
    written in its interface's units (a power of ten or of two, less its offset)."""
    def block(btype, body):
        body += b"\0" * (-len(body) % 4)
        n = 12 + len(body)
        return struct.pack(endian + "II", btype, n) + body + struct.pack(endian + "I", n)

    def opt(code, val):
        return struct.pack(endian + "HH", code, len(val)) + val + b"\0" * (-len(val) % 4)
    out = b""
    runs = [pkts[i:i + 50] for i in range(0, len(pkts), 50)]
    for n, run in enumerate(runs):
        ifaces = sections[n % len(sections)]
        out += block(0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1))
        for tsresol, off in ifaces:
            opts = (opt(9, bytes([tsresol])) if tsresol is not None else b"") + (opt(14, struct.pack(endian + "q", off)) if off else b"")
            out += block(1, struct.pack(endian + "HHI", 1, 0, 262144) + opts + (struct.pack(endian + "HH", 0, 0) if opts else b""))
        for i, (ts, fr) in enumerate(run):
            tsresol, off = ifaces[i % len(ifaces)]
            ns = ts - (off or 0) * 10 ** 9
            v = 6 if tsresol is None else tsresol
            ticks = (ns << (v & 0x7F)) // 10 ** 9 if v & 0x80 else ns * 10 ** v // 10 ** 9
            out += block(6, struct.pack(endian + "IIIII", i % len(ifaces), ticks >> 32, ticks & 0xFFFFFFFF, len(fr), len(fr)) + fr)
    with open(path, "wb") as f:
        f.write(out)
