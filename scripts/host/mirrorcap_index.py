"""The packet index of one pcap: its time range, and one row per flow with where its packets lie.

Written beside every closed pcap by the host (mirrorcap-index, at rotation) and by
`mirrorcap index` / `mirrorcap find --dir` on any machine: one implementation, so
both write the same bytes. Python 3.9 and, where installed, numpy (the host: the
distribution's python3-numpy, installed at bake; the host has no pip): without it, a
plain loop writes the same index, slower.

Format: gzip'd newline-delimited JSON (DuckDB and Athena read it as it is).
The first line describes the file (kind "file"), each other line one flow
(kind "flow"): the packets of one direction that every query primitive sees
alike, so a query decided on the flow holds for each of its packets:

  fam    "ip", "ip6", "arp", "rarp", or "other" (no address tcpdump reads)
  proto  the protocol `tcp`/`udp`/`icmp` test (IPv6: the header after a fragment header)
  sa/da  addresses as fixed-width lowercase hex (8 digits IPv4, 32 IPv6): a
         network is a range of strings, which plain SQL compares
  sp/dp  ports where tcpdump's `port` reads them (TCP, UDP, SCTP; IPv4 only in a
         packet with fragment offset 0; IPv6 only right after the fixed header), else null
  first/last  times of its first and last packet, nanoseconds since the epoch (UTC)
  packets/bytes  count and original lengths
  runs   where its packets lie: byte ranges of the file, each from one of its records to
         the end of one of its records, as base64 of unsigned LEB128 varints, two a range:
         (start - the previous range's end, length). A range is a run of the flow's
         records in consecutive chunks (a chunk: the whole records from the first one at or
         past each CHUNK bytes of the file), so a busy flow is a few long ranges and a flow
         with a packet here and there a range a packet.

The file line's `bloom` is a Bloom filter of the file's addresses ("a" + sa/da) and ports
("p" + sp/dp): a reader asking for one host or port skips a file whose filter lacks it
without reading its flows (3 bits an item, double hashing of two CRC-32s; 8+ bits an item:
about 3 % of files that lack the item are read anyway).

Times in the pcap come from its packets, never its name.
"""
import base64
import gzip
import json
import mmap
import os
import re
import stat
import struct
import sys
import zlib

import mirrorcap_host

VERSION = 2  # 2: runs (byte ranges), bloom
SUFFIX, FAILED_SUFFIX = mirrorcap_host.INDEX_SUFFIX, mirrorcap_host.INDEX_FAILED_SUFFIX  # beside the pcap
CHUNK = 64 << 10

PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1": ("<", 6), b"\xa1\xb2\xc3\xd4": (">", 6),
              b"\x4d\x3c\xb2\xa1": ("<", 9), b"\xa1\xb2\x3c\x4d": (">", 9)}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_SLL = 1, 101, 228, 229, 113
PORT_PROTOS = (6, 17, 132)  # tcp, udp, sctp
MAX_SNAP = 262144  # libpcap's largest snap length for the link types read here
VNI_NAME = re.compile(r"vni(\d+)_")


class IndexError_(Exception):
    """A file that is not a pcap or pcapng this reads."""


# --- reading records --------------------------------------------------------------
def header(data):
    """What a reader of `data` (the file's bytes) needs, as the index's file line keeps it."""
    magic = data[:4]
    if magic in PCAP_MAGIC:
        if len(data) < 24:
            raise IndexError_("a pcap file header is 24 bytes, this file has %d" % len(data))
        endian, tsres = PCAP_MAGIC[magic]
        linktype = check_linktype(struct.unpack_from(endian + "I", data, 20)[0] & 0xFFFF)
        snap = struct.unpack_from(endian + "i", data, 16)[0]
        # libpcap's: a snap length of 0, negative or past the largest is the largest
        return dict(format="pcap", endian=endian, ifaces=[[linktype, tsres]], snap=snap if 0 < snap < MAX_SNAP else MAX_SNAP)
    if magic == PCAPNG_SHB:
        if len(data) < 12:
            raise IndexError_("the pcapng section header is cut short")
        bom = data[8:12]
        endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else None
        if endian is None:
            raise IndexError_("pcapng byte-order magic is wrong")
        return dict(format="pcapng", endian=endian, ifaces=[])
    raise IndexError_("not a pcap or pcapng file (it starts %s)" % data[:4].hex())


def records(data, meta, start=None, end=None, origin=0):
    """(offset, ts_ns, linktype, caplen, origlen, frame offset) of each whole record of data[start:end];
    meta["stop"] is then where the whole records end.

    pcapng interface blocks met on the way are added to meta["ifaces"] (their link type, time resolution and
    offset), numbered on from one section to the next, and each section block's place, first interface and
    byte order to meta["sections"]; a reader of a range (`data` the file's bytes from offset `origin`) has
    them all from the index, and finds its section by its place in the file."""
    endian, ifaces = meta["endian"], meta["ifaces"]
    end = len(data) if end is None else min(end, len(data))
    if meta["format"] == "pcap":
        o = 24 if start is None else start
        rec = struct.Struct(endian + "IIII")
        linktype, tsres = ifaces[0]
        scale = 1000 if tsres == 6 else 1
        snap = meta.get("snap", MAX_SNAP)  # a record longer than the file's snap length is cut to it, as libpcap does
        unpack = rec.unpack_from
        while o + 16 <= end:
            sec, frac, caplen, length = unpack(data, o)
            if o + 16 + caplen > end:
                break  # torn
            meta["end"] = o + 16 + caplen
            yield o, sec * 1000000000 + frac * scale, linktype, min(caplen, snap), length, o + 16
            o += 16 + caplen
        meta["stop"] = o
        return
    o = 0 if start is None else start
    sections = meta.get("sections")
    known = start is not None and sections is not None  # a range: every section and interface is in the index
    base = 0
    if start is None:
        sections = meta["sections"] = []
    elif known:
        for at, first, e in sections:
            if at <= origin + start:
                base, endian = first, e
        meta["endian"] = endian
    u32 = struct.Struct(endian + "I")
    while o + 12 <= end:
        btype, blen = struct.unpack_from(endian + "II", data, o)
        if blen < 12 or o + blen > end:
            break
        if btype == 0x0A0D0D0A:
            bom = data[o + 8:o + 12]
            endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            if known:
                base = next((first for at, first, _e in sections if at == origin + o), len(ifaces))
            elif sections is not None:
                base = len(ifaces)  # a new section numbers its interfaces again: after the last one's
                sections.append([o, base, endian])
            else:
                del ifaces[:]  # an index without sections (before them): the last section's interfaces
            meta["endian"] = endian
            u32 = struct.Struct(endian + "I")
        elif btype == 1:  # interface description
            if not known:
                linktype = check_linktype(struct.unpack_from(endian + "H", data, o + 8)[0])
                ifaces.append([linktype] + _iface_time(data, o, blen, endian))
        elif btype in (6, 3):  # enhanced / simple packet
            if btype == 6:
                if blen < 32:
                    break  # no room for its own header: not a packet block
                iface, hi, lo, caplen, length = struct.unpack_from(endian + "IIIII", data, o + 8)
                frame = o + 28
            else:
                iface, hi, lo, length = 0, 0, 0, u32.unpack_from(data, o + 8)[0]
                caplen, frame = min(length, blen - 16), o + 12
            if base + iface < len(ifaces) and frame + caplen <= o + blen:
                desc = ifaces[base + iface]
                linktype, tsres = desc[0], desc[1]
                ticks = (hi << 32) | lo
                if tsres < 0:  # if_tsresol a power of two: 2**tsres seconds a tick (rounded down, as libpcap)
                    ts = (ticks * 1000000000) >> -tsres
                else:
                    ts = ticks * 10 ** (9 - tsres) if tsres <= 9 else ticks // 10 ** (tsres - 9)
                if len(desc) > 2:
                    ts += desc[2] * 1000000000  # if_tsoffset, seconds
                meta["end"] = o + blen
                yield o, ts, linktype, caplen, length, frame
        o += blen
    meta["stop"] = o


def _iface_time(data, o, blen, endian):
    """[if_tsresol, and if_tsoffset when it is there] of an interface block: tsresol as an exponent, of ten (6,
    microseconds, when absent), or negative, of two (2**-n seconds a tick); tsoffset in seconds."""
    tsres, offset = 6, None
    p, stop = o + 16, o + blen - 4
    while p + 4 <= stop:
        code, length = struct.unpack_from(endian + "HH", data, p)
        if code == 0:
            break
        if code == 9 and length >= 1:
            v = data[p + 4]
            tsres = -(v & 0x7F) if v & 0x80 else v
        elif code == 14 and length >= 8:
            offset = struct.unpack_from(endian + "q", data, p + 4)[0]
        p += 4 + (length + 3) // 4 * 4
    return [tsres] if offset is None else [tsres, offset]


# --- what tcpdump's primitives see of one frame ---------------------------------------
# The link types read, as libpcap reads them: where the network header starts and how its type is told.
LINKTYPE_NULL, LINKTYPE_LOOP, LINKTYPE_SLL2 = 0, 108, 276
LINK_HEADER = {LINKTYPE_ETHERNET: 14, LINKTYPE_SLL: 16, LINKTYPE_SLL2: 20, LINKTYPE_NULL: 4, LINKTYPE_LOOP: 4,
               LINKTYPE_RAW: 0, 12: 0, 14: 0, LINKTYPE_IPV4: 0, LINKTYPE_IPV6: 0}
LINKTYPE_NAMES = {0: "NULL", 1: "EN10MB", 9: "PPP", 12: "RAW", 14: "RAW", 50: "PPP_HDLC", 101: "RAW", 104: "C_HDLC",
                  105: "IEEE802_11", 108: "LOOP", 113: "LINUX_SLL", 119: "PRISM_HEADER", 127: "IEEE802_11_RADIO",
                  192: "PPI", 195: "IEEE802_15_4", 220: "USB_LINUX_MMAPPED", 228: "IPV4", 229: "IPV6", 239: "NFLOG",
                  249: "USBPCAP", 276: "LINUX_SLL2"}
NULL_FAMILY = {2: 0x0800, 24: 0x86DD, 28: 0x86DD, 30: 0x86DD}  # BSD's AF_INET, and the AF_INET6s libpcap's `ip6` takes
CUT = "cut"  # fam of a frame cut before a byte tcpdump's filter may read: decided packet by packet, by libpcap


class LinkTypeError(IndexError_):
    """A link type whose frames this does not read as tcpdump does: refused by name, never indexed as "other"."""


def check_linktype(linktype):
    if linktype not in LINK_HEADER:
        raise LinkTypeError("link type %d (%s) is not one mirrorcap reads (it reads %s)" % (
            linktype, LINKTYPE_NAMES.get(linktype, "unknown"),
            ", ".join(sorted({LINKTYPE_NAMES[x] for x in LINK_HEADER}))))
    return linktype


def _etype(data, linktype, frame, caplen, endian):
    """(the network header's type as an ethertype, where it starts; None when the frame is cut before its type)."""
    if linktype == LINKTYPE_ETHERNET:
        return (data[frame + 12] << 8 | data[frame + 13], frame + 14) if caplen >= 14 else None
    if linktype == LINKTYPE_SLL:
        return (data[frame + 14] << 8 | data[frame + 15], frame + 16) if caplen >= 16 else None
    if linktype == LINKTYPE_SLL2:
        return (data[frame] << 8 | data[frame + 1], frame + 20) if caplen >= 2 else None
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if caplen < 4:
            return None
        family = struct.unpack_from((">" if linktype == LINKTYPE_LOOP else endian) + "I", data, frame)[0]
        return NULL_FAMILY.get(family, 0), frame + 4
    if linktype == LINKTYPE_IPV4:
        return 0x0800, frame
    if linktype == LINKTYPE_IPV6:
        return 0x86DD, frame
    if caplen < 1:  # raw IP: the version nibble tells
        return None
    version = data[frame] >> 4
    return (0x0800 if version == 4 else 0x86DD if version == 6 else 0), frame


def flow_key(data, linktype, frame, caplen, endian="<"):
    """(fam, proto, src bytes, dst bytes, ports) as `host`, `net`, `port`, `tcp`, `udp` and `icmp` read them from
    one frame: libpcap's own tests, re-done. A frame cut before a byte any of them may read is CUT_KEY: tcpdump's
    filter takes it or not by what its compiled, optimized code reads before the cut (mirrorcap_query decides it
    with libpcap itself)."""
    t = _etype(data, linktype, frame, caplen, endian)
    if t is None:
        return CUT_KEY
    etype, net = t
    stop = frame + caplen
    if etype == 0x0800:
        if net + 20 > stop:
            return CUT_KEY
        proto = data[net + 9]
        ports = None
        if proto in PORT_PROTOS and not (data[net + 6] & 0x1F or data[net + 7]):
            t = net + (data[net] & 0x0F) * 4
            if t + 4 > stop:
                return CUT_KEY
            ports = data[t:t + 4]
        return ("ip", proto, data[net + 12:net + 16], data[net + 16:net + 20], ports)
    if etype == 0x86DD:
        if net + 40 > stop:
            return CUT_KEY
        nh = data[net + 6]
        ports = None
        if nh == 44:
            if net + 41 > stop:
                return CUT_KEY
            proto = data[net + 40]
        else:
            proto = nh
            if nh in PORT_PROTOS:
                if net + 44 > stop:
                    return CUT_KEY
                ports = data[net + 40:net + 44]
        return ("ip6", proto, data[net + 8:net + 24], data[net + 24:net + 40], ports)
    if etype in (0x0806, 0x8035):
        # libpcap reads arp[14:4] and arp[24:4] whatever the hardware address length
        if net + 28 > stop:
            return CUT_KEY
        return ("arp" if etype == 0x0806 else "rarp", None, data[net + 14:net + 18], data[net + 24:net + 28], None)
    return OTHER


# The columns of a flow line, in order, with their kinds (text; int: 32 bits; bigint: 64): the one schema DuckDB's
# read_json, the Glue table, Athena's result and the index's checker are written from.
FLOW_SCHEMA = (("kind", "text"), ("fam", "text"), ("proto", "int"), ("sa", "text"), ("da", "text"), ("sp", "int"),
               ("dp", "int"), ("vni", "bigint"), ("first", "bigint"), ("last", "bigint"), ("packets", "bigint"),
               ("bytes", "bigint"), ("runs", "text"))

OTHER = ("other", None, b"", b"", None)
CUT_KEY = (CUT, None, b"", b"", None)


def vni_in_name(name):
    """The VNI in a pcap's name as the host writes it (vni<N>_...), None otherwise."""
    m = VNI_NAME.match(os.path.basename(name))
    return int(m.group(1)) if m else None


# --- building an index ----------------------------------------------------------------
def _walk(data, meta, segments=((None, None),)):
    """Every record, any format: {flow key: [first, last, packets, bytes, last chunk, runs]}. A run
    goes on while the flow's records are in one chunk or the next; runs are [first record's
    offset, last record's end, ...]. `segments`: (start, end) byte ranges to read (a damaged pcap's
    readable stretches), the whole file by default."""
    flows = {}
    chunk, boundary = -1, 0
    for start, end in segments:
        chunk += 2  # no run reaches over the bytes between two stretches: a reader stops there
        for o, ts, linktype, caplen, length, frame in records(data, meta, start, end):
            if o >= boundary:
                chunk += 1
                boundary = o - o % CHUNK + CHUNK
            key = flow_key(data, linktype, frame, caplen, meta["endian"])
            f = flows.get(key)
            if f is None:
                flows[key] = [ts, ts, 1, length, chunk, [o, meta["end"]]]
            else:
                _count(f, ts, length, chunk, o, meta["end"])
    return flows


# --- a damaged pcap: the stretches of whole records around bytes that are none -----------------
RESYNC_CHAIN = 4  # plausible records in a row (or up to the file's end) that mark where records resume
MAX_LEN = 1 << 24  # no frame's original length is larger


def _plausible(data, meta, first, latest):
    """A function o -> the end of the record whose header is at o when that header is possible
    (time near the file's, fraction, lengths), else None."""
    unpack = struct.Struct(meta["endian"] + "IIII").unpack_from
    per_sec, snap = 10 ** meta["ifaces"][0][1], meta.get("snap", MAX_SNAP)

    def end_of(o):
        sec, frac, caplen, length = unpack(data, o)
        if first - 3600 <= sec <= latest and frac < per_sec and 0 < caplen <= snap and caplen <= length < MAX_LEN:
            return o + 16 + caplen
        return None
    return end_of


def _readable(data, meta):
    """([(start, end)] stretches of plausible whole records, [[start, end]] byte ranges between and
    after them that hold none) of a pcap; a torn last record (shorter than a record can be) is no
    damage: a pcap being written, or cut by a full volume, ends so."""
    n = len(data)
    if n < 40:
        return [(24, n)], []
    first = struct.unpack_from(meta["endian"] + "I", data, 24)[0]
    end_of = _plausible(data, meta, first, max(first, int(__import__("time").time())) + 3600)

    def chain(o):
        """End of the plausible whole records from o."""
        while o + 16 <= n:
            e = end_of(o)
            if e is None or e > n:
                break
            o = e
        return o

    def resumes(o):
        """Whether plausible records run from o: RESYNC_CHAIN of them, or up to the end (the last may be torn)."""
        for _ in range(RESYNC_CHAIN):
            if o + 16 > n:
                return True
            e = end_of(o)
            if e is None:
                return False
            if e >= n:
                return True
            o = e
        return True

    segments, unread, o = [], [], 24
    while True:
        e = chain(o)
        segments.append((o, e))
        if n - e <= 16 + meta.get("snap", MAX_SNAP) and (e + 16 > n or end_of(e) is not None):
            return segments, unread  # whole, or a torn last record
        q = next((q for q in range(e + 1, n - 15) if end_of(q) is not None and resumes(q)), None)
        if q is None:
            unread.append([e, n])
            return segments, unread
        unread.append([e, q])
        o = q


def _count(f, ts, length, chunk, o, end):
    if ts > f[1]:
        f[1] = ts
    elif ts < f[0]:
        f[0] = ts
    f[2] += 1
    f[3] += length
    if f[4] >= chunk - 1:
        f[5][-1] = end
    else:
        f[5] += (o, end)
    f[4] = chunk


def _walk_pcap(data, meta):
    """_walk for a pcap, the hot loop of indexing at rotation: the bytes that decide an Ethernet
    IPv4/IPv6 frame's flow key are taken as one string and looked up; only a string not seen
    before is decoded (flow_key), so each flow is decoded once, not each packet."""
    linktype, tsres = meta["ifaces"][0]
    snap = meta.get("snap", MAX_SNAP)
    unpack = struct.Struct(meta["endian"] + "IIII").unpack_from
    per_sec = 10 ** tsres
    flows, seen = {}, {}
    chunk, boundary = -1, 0
    ether = linktype == LINKTYPE_ETHERNET
    o, n = 24, len(data)
    while o + 16 <= n:
        sec, frac, caplen, length = unpack(data, o)
        f = o + 16
        nxt = f + caplen
        if nxt > n:
            break  # torn
        if o >= boundary:
            chunk += 1
            boundary = o - o % CHUNK + CHUNK
        ts = sec * per_sec + frac
        raw = None
        if caplen > snap:
            caplen = snap  # (what libpcap reads of it; the record still ends at nxt)
        if ether:
            et = data[f + 12:f + 14]
            if et == b"\x08\x00":
                if caplen >= 38 and data[f + 14] == 0x45:  # flags/fragment offset, TTL, protocol, addresses, ports
                    raw = data[f + 20:f + 24] + data[f + 26:f + 38]
            elif et == b"\x86\xdd" and caplen >= 58:  # next header, addresses, 4 bytes after the fixed header
                raw = data[f + 20:f + 21] + data[f + 22:f + 58]
        st = seen.get(raw) if raw is not None else None
        if st is None:
            key = flow_key(data, linktype, f, caplen, meta["endian"])
            st = flows.get(key)
            if st is None:
                st = flows[key] = [ts, ts, 0, 0, chunk, [o, nxt]]
            if raw is not None:
                seen[raw] = st
        if ts > st[1]:
            st[1] = ts
        elif ts < st[0]:
            st[0] = ts
        st[2] += 1
        st[3] += length
        if st[4] >= chunk - 1:
            st[5][-1] = nxt
        else:
            st[5] += (o, nxt)
        st[4] = chunk
        o = nxt
    meta["stop"] = o
    scale = 10 ** (9 - tsres)
    for st in flows.values():
        st[0] *= scale
        st[1] *= scale
    return flows


def _numpy():
    """numpy when installed (the host: python3-numpy, from the distribution, at bake), else None:
    the pure-Python walk writes the same index, slower."""
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def _walk_pcap_vectorized(data, meta, np):
    """_walk for an Ethernet pcap, the hot loop of indexing at rotation: the record chain in
    Python (each record's length says where the next one begins: sequential by nature, and the
    only per-record Python left), the rest with numpy over BLOCK bytes at a time (memory stays
    bounded whatever the file's size). Frames whose flow key fixed bytes decide (IPv4 without
    options, IPv6) are grouped by those bytes and each group is decoded once by flow_key; every
    other frame is decoded alone by flow_key. Flows, counts and chunk runs come out as _walk's,
    exactly (tests compare), with each flow's runs already encoded. None: walk it the plain way."""
    tsres = meta["ifaces"][0][1]
    n = len(data)
    u32 = struct.Struct(meta["endian"] + "I").unpack_from
    acc = _FlowTotals(np)
    fid_of, seen, runs = {}, {}, []
    o, last_block, chunks = 24, -1, 0
    while True:
        chain = []
        add = chain.append
        lim = min(n - 16, o + BLOCK)  # a record starting at or before lim has its whole header
        while o <= lim:
            add(o)
            o += 16 + u32(data, o + 8)[0]
        if o > n:  # the last record is torn: where the whole records end
            o = chain.pop()
            n = o  # (nothing after it is a record)
        if not chain:
            break
        offs = np.array(chain, dtype=np.int64)
        del chain
        ts, length, caplen, fid = _block_flows(data, meta, np, offs, fid_of, seen)
        if fid is None:
            return None
        # chunks: a new one starts at the first record in each CHUNK-sized block of the file
        block = offs // CHUNK
        starts = np.empty(len(offs), dtype=bool)
        starts[0] = block[0] != last_block
        np.not_equal(block[1:], block[:-1], out=starts[1:])
        chunk = chunks + np.cumsum(starts) - 1
        chunks += int(starts.sum())
        last_block = int(block[-1])
        # per flow, its records in file order
        order = _by_flow(np, fid)
        sfid, schunk, soffs, sts = fid[order], chunk[order], offs[order], ts[order]
        begin = np.empty(len(offs), dtype=bool)
        begin[0] = True
        np.not_equal(sfid[1:], sfid[:-1], out=begin[1:])
        at = np.flatnonzero(begin)
        acc.add(len(fid_of), sfid[at], np.minimum.reduceat(sts, at), np.maximum.reduceat(sts, at),
                np.diff(np.append(at, len(offs))), np.add.reduceat(length[order], at))
        # runs of consecutive chunks: a new one where the flow changes or a chunk is skipped
        run = begin.copy()
        run[1:] |= schunk[1:] > schunk[:-1] + 1
        ends = np.empty(len(offs), dtype=bool)
        ends[:-1] = run[1:]
        ends[-1] = True
        runs.append((sfid[run], schunk[run], schunk[ends], soffs[run], soffs[ends] + 16 + caplen[order][ends]))
    meta["stop"] = o
    if not fid_of:
        return {}
    encoded = _encoded_runs(np, runs, len(fid_of))
    scale = 10 ** (9 - tsres)
    flows = {}
    for k, f_, l_, c, b, r in zip(fid_of, acc.first[:len(fid_of)].tolist(), acc.last[:len(fid_of)].tolist(),
                                   acc.packets[:len(fid_of)].tolist(), acc.bytes[:len(fid_of)].tolist(), encoded):
        flows[k] = [f_ * scale, l_ * scale, c, b, r]
    return flows


BLOCK = 32 << 20  # bytes of the file the vectorized walk takes at once: ~50k records of mirrored traffic


def _block_flows(data, meta, np, offs, fid_of, seen):
    """(times, original lengths, captured lengths, flow ids) of the records at `offs`; a flow met for the first time
    gets the next id in `fid_of` (flow key -> id), in the order _walk meets them; `seen`: key bytes
    -> id, of the groups met so far. Flow ids None:
    two keys mixed alike (the caller walks the plain way)."""
    n = len(data)
    tsres = meta["ifaces"][0][1]
    rec = _record_dtype(np, meta["endian"])
    # One gather per record of its header and the frame bytes a flow key needs (a view of the file
    # as overlapping records at every byte offset: no copy until the gather). Records too close to
    # the end for the whole span are read alone, padded with zeros that are never used.
    at_end = offs > n - rec.itemsize
    view = np.ndarray(shape=(n - rec.itemsize + 1,), dtype=rec, buffer=data, strides=(1,)) if n >= rec.itemsize else None
    try:
        r = view[offs[~at_end]] if view is not None else np.zeros(0, dtype=rec)
    finally:
        view = None  # no view of the file may outlive the walk: it is unmapped next
    if at_end.any():
        tail = np.frombuffer(b"".join(data[o:o + rec.itemsize].ljust(rec.itemsize, b"\0") for o in offs[at_end].tolist()), dtype=rec)
        r = np.concatenate([r, tail])
    ts = r["sec"].astype(np.int64) * 10 ** tsres + r["frac"]
    caplen, length = r["caplen"].astype(np.int64), r["len"].astype(np.int64)
    keycap = np.minimum(caplen, meta.get("snap", MAX_SNAP))  # what libpcap reads of a record longer than the snap length
    frame = offs + 16
    w0, w1, w3 = r["w0"], r["w1"], r["w3"]
    v4 = (w0 & 0xFFFFFF == 0x450008) & (keycap >= 38)  # type 0x0800, version 4 with IHL 5
    v6 = (w0 & 0xFFFF == 0xDD86) & (keycap >= 58)  # type 0x86DD
    is_fast = v4 | v6
    fast = np.flatnonzero(is_fast)
    is4 = v4[fast]
    key = np.zeros((len(fast), 6), dtype=np.uint64)
    key[:, 5] = is4
    # IPv4: flags and fragment offset, protocol, addresses, ports (not TTL or checksum);
    # IPv6: next header, addresses, and the 4 bytes after the fixed header (not the hop limit)
    key[:, 0] = w1[fast] & np.where(is4, np.uint64(0xFFFF0000FF00FFFF), np.uint64(0xFFFFFFFFFFFF00FF))
    key[:, 1] = r["w2"][fast]
    key[:, 2] = w3[fast] & np.where(is4, np.uint64(0xFFFF), np.uint64(0xFFFFFFFFFFFFFFFF))
    six = fast[~is4]
    key[~is4, 3] = r["w4"][six]
    key[~is4, 4] = r["w5"][six] & np.uint64(0xFFFFFFFFFFFF)
    # Group equal keys through a 64-bit mix of their words; a collision is caught below.
    mix = key[:, 0].copy()
    for col in range(1, 6):
        mix = (mix * np.uint64(0x9E3779B97F4A7C15)) ^ key[:, col]
    group_first, group_of = _groups(np, mix)
    if not (key == key[group_first][group_of]).all():
        return ts, length, caplen, None
    rep = fast[group_first]
    slow = np.flatnonzero(~is_fast)
    # A group whose key bytes an earlier block met has its flow already; the others, and every
    # frame without fixed key bytes, are decoded by flow_key in file order (new flows get the
    # next ids in the order _walk meets them).
    fid_at = np.empty(len(rep) + len(slow), dtype=np.int64)
    todo = []
    raw = key[group_first].tobytes()
    width = key.shape[1] * 8
    for g, p in enumerate(rep.tolist()):
        known = seen.get(raw[g * width:(g + 1) * width])
        if known is None:
            todo.append((p, g))
        else:
            fid_at[g] = known
    todo += [(p, len(rep) + i) for i, p in enumerate(slow.tolist())]
    todo.sort()
    for p, i in todo:
        fid_at[i] = fid = fid_of.setdefault(flow_key(data, LINKTYPE_ETHERNET, int(frame[p]), int(keycap[p])), len(fid_of))
        if i < len(rep):
            seen[raw[i * width:(i + 1) * width]] = fid
    fid = np.empty(len(offs), dtype=np.int64)
    fid[fast] = fid_at[:len(rep)][group_of]
    fid[slow] = fid_at[len(rep):]
    return ts, length, caplen, fid


def _record_dtype(np, endian):
    """What the numpy walk reads of a record: its header (in the file's byte order), then its frame's
    bytes 12 to 60 as little-endian words (the Ethernet type, then IPv4's or IPv6's header)."""
    return np.dtype(dict(names=["sec", "frac", "caplen", "len", "w0", "w1", "w2", "w3", "w4", "w5"],
                         formats=[endian + "u4"] * 4 + ["<u8"] * 6,
                         offsets=[0, 4, 8, 12, 28, 36, 44, 52, 60, 68], itemsize=76))


def _groups(np, values):
    """(index of each distinct value's first record, each record's group): np.unique's return_index
    and return_inverse, without its stable sort (the first of a group is its smallest index)."""
    order = np.argsort(values)
    sorted_values = values[order]
    new = np.empty(len(values), dtype=bool)
    new[:1] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=new[1:])
    at = np.flatnonzero(new)
    group_of = np.empty(len(values), dtype=np.int64)
    group_of[order] = np.cumsum(new) - 1
    return np.minimum.reduceat(order, at) if len(at) else at, group_of


def _by_flow(np, fid):
    """The records' order sorted by flow id, stable (file order within a flow). Ids are renumbered
    densely for the block first, so that up to 65,536 flows in a block sort as 16-bit keys (numpy's
    radix sort) rather than 64-bit ones."""
    present = np.flatnonzero(np.bincount(fid))
    if len(present) > 1 << 16:
        return np.argsort(fid, kind="stable")
    dense = np.zeros(int(fid.max()) + 1, dtype=np.uint16)
    dense[present] = np.arange(len(present), dtype=np.uint16)
    return np.argsort(dense[fid], kind="stable")


class _FlowTotals:
    """Each flow's first and last time, packets and bytes, over the blocks of a walk."""

    def __init__(self, np):
        self.np = np
        self.first = self.last = self.packets = self.bytes = np.empty(0, dtype=np.int64)

    def add(self, flows, ids, first, last, packets, nbytes):
        np = self.np
        if flows > len(self.first):
            grow = max(flows, 2 * len(self.first)) - len(self.first)
            big = np.iinfo(np.int64)
            self.first = np.append(self.first, np.full(grow, big.max, dtype=np.int64))
            self.last = np.append(self.last, np.full(grow, big.min, dtype=np.int64))
            self.packets = np.append(self.packets, np.zeros(grow, dtype=np.int64))
            self.bytes = np.append(self.bytes, np.zeros(grow, dtype=np.int64))
        self.first[ids] = np.minimum(self.first[ids], first)
        self.last[ids] = np.maximum(self.last[ids], last)
        self.packets[ids] += packets
        self.bytes[ids] += nbytes


def _encoded_runs(np, runs, count):
    """Each flow's `runs` (see the module's docstring). `runs`: per block, (flow, first chunk, last
    chunk, first record's offset, last record's end) of each run; a chunk that goes on into the
    next block joins the runs on either side."""
    flow, a, b, start, end = (np.concatenate([r[i] for r in runs]) for i in range(5))
    order = np.argsort(flow, kind="stable")
    flow, a, b, start, end = flow[order], a[order], b[order], start[order], end[order]
    new = np.ones(len(flow), dtype=bool)
    new[1:] = (flow[1:] != flow[:-1]) | (a[1:] > b[:-1] + 1)
    at = np.flatnonzero(new)
    flow, start, end = flow[at], start[at], np.maximum.reduceat(end, at)
    gap = np.empty(len(start), dtype=np.int64)
    gap[0] = start[0]
    gap[1:] = start[1:] - end[:-1]
    first = np.flatnonzero(np.append(True, flow[1:] != flow[:-1]))
    gap[first] = start[first]  # a flow's first range counts from the start of the file
    values = np.empty(2 * len(start), dtype=np.int64)
    values[0::2] = gap
    values[1::2] = end - start
    encoded, ends = _leb128(np, values)
    cut = ends[2 * np.cumsum(np.bincount(flow, minlength=count)) - 1].tolist()
    return [base64.b64encode(encoded[i:j]).decode() for i, j in zip([0] + cut, cut)]


def _leb128(np, values):
    """(bytes of each non-negative value as an unsigned LEB128 varint, one after another; where each
    value's bytes end)."""
    size = np.ones(len(values), dtype=np.int64)
    for shift in range(7, 64, 7):
        size += values >= (1 << shift)
    ends = np.cumsum(size)
    out = np.empty(int(ends[-1]) if len(ends) else 0, dtype=np.uint8)
    at = ends - size
    for k in range(int(size.max()) if len(size) else 0):
        more = size > k
        byte = (values[more] >> (7 * k)) & 0x7F
        byte |= (size[more] > k + 1) * 0x80
        out[at[more] + k] = byte
    return out.tobytes(), ends


def leb128(values):
    """_leb128 for a list, in plain Python (the plain walk's, and the test's)."""
    out = bytearray()
    for v in values:
        while v >= 0x80:
            out.append(v & 0x7F | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def _flatten(flows):
    """Each flow's runs ([first record's offset, last record's end, ...]) as the index writes them:
    `runs` (see the module's docstring), in place of its last chunk and runs."""
    for st in flows.values():
        spans, values, prev = st[5], [], 0
        for i in range(0, len(spans), 2):
            values += [spans[i] - prev, spans[i + 1] - spans[i]]
            prev = spans[i + 1]
        st[4:] = [base64.b64encode(leb128(values)).decode()]


SIG_BYTES = 4096  # the file's first and last bytes, hashed: which pcap an index is of


def signature(read, size):
    """Which pcap of `size` bytes an index is of (its file line's `sig`): sha-256 of its first and last SIG_BYTES
    (read(offset, count) -> bytes), 32 hex digits. With the size, it tells apart two captures of one size (their
    headers' and last packets' times differ) without reading the file: what a copied, replaced or renamed pcap
    needs, where times of change (mtime) are copied along or not at all."""
    h = __import__("hashlib").sha256(read(0, min(size, SIG_BYTES)))
    if size > SIG_BYTES:
        h.update(read(max(SIG_BYTES, size - SIG_BYTES), size - max(SIG_BYTES, size - SIG_BYTES)))
    return h.hexdigest()[:32]


def current(line, size, read):
    """Whether index file line `line` is of this pcap (`size` bytes, read as for signature) as it is now."""
    return line.get("size") == size and line.get("sig") == signature(read, size)


def build(data, name, vni=None):
    """The index of a pcap/pcapng's bytes: (file line, [flow lines])."""
    meta = header(data)
    walked = None
    if meta["format"] == "pcap" and meta["ifaces"][0][0] == LINKTYPE_ETHERNET and len(data) >= 8:
        np = _numpy()
        if np is not None:
            walked = _walk_pcap_vectorized(data, meta, np)
    if walked is None:
        walked = (_walk_pcap if meta["format"] == "pcap" else _walk)(data, meta)
        _flatten(walked)
    flows = walked
    records_end = meta.pop("stop")
    unread = []
    if meta["format"] == "pcap" and records_end < len(data):
        # Not whole: a torn last record, or bytes that are no record (a damaged middle). The damaged
        # pcap is indexed stretch by stretch, around what cannot be read, and says which bytes those are.
        segments, unread = _readable(data, meta)
        if unread:
            flows = _walk(data, meta, segments)
            _flatten(flows)
            records_end = meta.pop("stop")
    meta.pop("end", None)
    stats = list(flows.values())
    line = dict(kind="file", v=VERSION, pcap=os.path.basename(name), size=len(data),
                sig=signature(lambda o, n: data[o:o + n], len(data)), end=records_end,
                format=meta["format"], endian=meta["endian"], ifaces=meta["ifaces"], vni=vni,
                **({"sections": meta["sections"]} if meta.get("sections") is not None else {}),
                **({"snap": meta["snap"]} if meta.get("snap") is not None else {}),
                first=min((s[0] for s in stats), default=None), last=max((s[1] for s in stats), default=None),
                packets=sum(s[2] for s in stats), bytes=sum(s[3] for s in stats), flows=len(flows),
                cut=sum(st[2] for k, st in flows.items() if k[0] == CUT),
                **({"unread": unread} if unread else {}))
    rows = []
    for (fam, proto, src, dst, ports), (f_first, f_last, n, nbytes, runs) in flows.items():
        sp, dp = struct.unpack(">HH", ports) if ports else (None, None)
        rows.append(dict(kind="flow", fam=fam, proto=proto, sa=src.hex(), da=dst.hex(), sp=sp, dp=dp, vni=vni,
                         first=f_first, last=f_last, packets=n, bytes=nbytes, runs=runs))
    rows.sort(key=lambda r: (r["first"], r["fam"], r["sa"], r["da"]))
    line["bloom"] = bloom(rows)
    return line, rows


def bloom(rows):
    """The file line's Bloom filter of the flows' addresses and ports, as hex."""
    items = set()
    for r in rows:
        items.add("a" + r["sa"])
        items.add("a" + r["da"])
        if r["sp"] is not None:
            items.add("p%d" % r["sp"])
            items.add("p%d" % r["dp"])
    m = 256
    while m < 8 * len(items):
        m *= 2
    bits = bytearray(m // 8)
    for item in items:
        for pos in _bloom_bits(item, m):
            bits[pos >> 3] |= 1 << (pos & 7)
    return bits.hex()


def _bloom_bits(item, m):
    b = item.encode()
    h1, h2 = zlib.crc32(b), zlib.crc32(b, 0x9E3779B9) | 1
    return [(h1 + i * h2) % m for i in range(3)]


def may_hold(line, item):
    """False when the file of index file line `line` certainly has no flow with `item` ("a" + hex
    address, or "p" + port); True when it may (or the line has no filter)."""
    hexbits = line.get("bloom")
    if not hexbits:
        return True
    m = len(hexbits) * 4
    for pos in _bloom_bits(item, m):
        byte = int(hexbits[2 * (pos >> 3):2 * (pos >> 3) + 2], 16)
        if not byte >> (pos & 7) & 1:
            return False
    return True


def ranges(runs):
    """[(start, end)] byte ranges of a flow line's `runs`."""
    data, out, at, value, shift, pair = base64.b64decode(runs), [], 0, 0, 0, []
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte & 0x80:
            continue
        pair.append(value)
        value = shift = 0
        if len(pair) == 2:
            start = at + pair[0]
            at = start + pair[1]
            out.append((start, at))
            pair = []
    return out


def flow_ranges(rows, gap=0):
    """The byte ranges holding the packets of flow lines `rows` (of one file), in order, ranges
    less than `gap` bytes apart read as one."""
    out = []
    for a, b in sorted(r for row in rows for r in ranges(row["runs"])):
        if out and a - out[-1][1] <= gap:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def reader_meta(line):
    """What records() needs to read a range of the file of index file line `line` (a copy: records()
    adds the interfaces a pcapng range declares)."""
    meta = dict(format=line["format"], endian=line["endian"], ifaces=[list(x) for x in line["ifaces"]])
    if line.get("sections") is not None:
        meta["sections"] = [list(x) for x in line["sections"]]
    if line.get("snap") is not None:
        meta["snap"] = line["snap"]
    return meta


def encode(line, rows):
    """The index file's bytes (gzip with no name or time in its header: the same pcap, the same bytes)."""
    # One call of json's C encoder for every line, then a line each: no value holds "},{" (no
    # object nests in another; strings are hex, names and fixed words), so only lines part there.
    text = (json.dumps([line] + rows, separators=(",", ":"))[1:-1].replace("},{", "}\n{") + "\n").encode()
    return gzip.compress(text, 1, mtime=0)  # level 1: a quarter larger than 6, a seventh of its CPU


def index_path(pcap):
    return pcap + SUFFIX


def write(pcap, out=None, vni=None):
    """Index `pcap` into `out` (default: beside it), replaced whole. Returns (file line, flows)."""
    fd = os.open(pcap, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO opens at once (then is refused), not when written
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise IndexError_("%s is not a regular file (a pipe, device or directory): give a pcap file" % pcap)
        size = st.st_size
        # Mapped, not read: a pcap of a few GiB costs page cache, not the indexer's memory.
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        try:
            line, rows = build(data, pcap, vni_in_name(pcap) if vni is None else vni)
        finally:
            if size:
                data.close()
    out = out or index_path(pcap)
    tmp = "%s.%d.tmp" % (out, os.getpid())
    try:
        with open(tmp, "wb") as f:
            f.write(encode(line, rows))
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return line, rows


def read_meta(path):
    """The file line of an index file alone (what deciding by time needs)."""
    with gzip.open(path, "rt") as f:
        line = json.loads(f.readline() or "{}")
    if line.get("kind") != "file" or line.get("v") != VERSION:
        raise IndexError_("%s is not a mirrorcap index (version %d)" % (path, VERSION))
    return line


def read(path):
    """(file line, [flow lines]) of an index file."""
    with gzip.open(path, "rt") as f:
        lines = [json.loads(x) for x in f if x.strip()]
    if not lines or lines[0].get("kind") != "file" or lines[0].get("v") != VERSION:
        raise IndexError_("%s is not a mirrorcap index (version %d)" % (path, VERSION))
    return lines[0], lines[1:]


PARTIAL = mirrorcap_host.INDEX_PARTIAL  # how a failure marker of a damaged pcap begins


def partial(line):
    """What the failure marker of a damaged pcap says: which bytes hold no record, what was read around them."""
    bad = sum(b - a for a, b in line["unread"])
    ranges_ = ", ".join("%d-%d" % (a, b) for a, b in line["unread"][:5])
    return ("%s: %d of its %d bytes hold no readable record (bytes %s%s: damaged); the %d packets around them are "
            "indexed and found, those bytes are not" % (PARTIAL, bad, line["size"], ranges_,
                                                         ", ..." if len(line["unread"]) > 5 else "", line["packets"]))


def main(argv):
    """mirrorcap_index.py [--vni N] PCAP...: what the capture runs on each pcap tcpdump closed,
    with the VNI it captures (without --vni: the VNI in the pcap's name, if any). A pcap that
    cannot be indexed gets NAME.pcap.idx-failed (why) instead, which health reports; it is still
    kept, archived and found by its time."""
    args, vni = argv[1:], None
    if args[:1] == ["--vni"]:
        given = args[1] if len(args) > 1 else ""
        if not (given.isdigit() and mirrorcap_host.VNI_MIN <= int(given) <= mirrorcap_host.VNI_MAX):
            print("mirrorcap_index.py: --vni %r: expected a VNI, %d-%d" % (given, mirrorcap_host.VNI_MIN, mirrorcap_host.VNI_MAX),
                  file=sys.stderr)
            return 2
        vni, args = int(given), args[2:]
    if not args:
        print("usage: mirrorcap_index.py [--vni N] PCAP... (writes PCAP%s beside each)" % SUFFIX, file=sys.stderr)
        return 2
    np = _numpy()
    walk = "numpy %s walk" % np.__version__ if np is not None else "plain walk: numpy is not installed"
    failed = 0
    for pcap in args:
        marker = pcap + FAILED_SUFFIX
        try:
            line, _rows = write(pcap, vni=vni)
        except Exception as e:  # noqa: BLE001 - whatever a hostile or broken file does, it is reported, not fatal
            failed += 1
            why = "%s: %s" % (type(e).__name__, e)
            print("mirrorcap-index: %s: not indexed: %s" % (os.path.basename(pcap), why), file=sys.stderr, flush=True)
            try:
                with open(marker, "w") as f:
                    f.write(why[:500] + "\n")
            except OSError:
                pass
            continue
        if line.get("unread"):
            # Indexed, but not whole: the marker says which bytes hold no record (health shows it).
            why = partial(line)
            print("mirrorcap-index: %s: %s" % (os.path.basename(pcap), why), file=sys.stderr, flush=True)
            try:
                with open(marker, "w") as f:
                    f.write(why + "\n")
            except OSError:
                pass
        elif os.path.exists(marker):
            os.unlink(marker)
        print("mirrorcap-index: %s: %d packets, %d flows (%s)" % (os.path.basename(pcap), line["packets"], line["flows"], walk),
              file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
