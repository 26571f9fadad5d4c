#!/bin/bash
# mirrorcap bake: install the capture tooling into an Amazon Linux 2023 image (Packer:
# make bake, or EC2 Image Builder): the capture host boots it. No instance-specific
# values: those come at boot in /etc/mirrorcap/mirrorcap.env.
# Rendered by `mirrorcap render` from scripts/host/bake.sh.j2. Safe to re-run.
set -euo pipefail
umask 022

# termshark is not packaged for AL2023: built from source with the distro's Go at
# a pinned version. Go verifies every module against go.sum and the public
# checksum database (sum.golang.org), so the pinned version is what gets built.
# A convenience: where it cannot be built, the bake goes on without it and says so.
TERMSHARK_VERSION=v2.4.0
termshark=""

if command -v dnf >/dev/null 2>&1; then
  dnf install -y -q tcpdump wireshark-cli xfsprogs iproute curl-minimal python3 python3-numpy awscli-2
  if ! command -v termshark >/dev/null 2>&1; then
    dnf install -y -q golang
    build=$(mktemp -d)
    if ! GOPATH="$build/go" GOCACHE="$build/cache" GOBIN=/usr/local/bin GOFLAGS=-trimpath \
      go install "github.com/gcla/termshark/v2/cmd/termshark@$TERMSHARK_VERSION"; then
      termshark="; termshark skipped (see above)"
      echo "mirrorcap bake: termshark $TERMSHARK_VERSION skipped: its build failed (no route to the Go module proxy?); tshark is installed to read pcaps" >&2
    fi
    rm -rf "$build"
    dnf remove -y -q golang
  fi
fi

# Capture identity: tcpdump drops to mirrorcap; people who may read pcaps
# join pcap (usermod -aG pcap <user>).
getent group pcap >/dev/null || groupadd --system pcap
id -u mirrorcap >/dev/null 2>&1 || useradd --system --gid pcap --no-create-home --home-dir /nonexistent --shell /sbin/nologin mirrorcap

install -d -m 0755 /etc/mirrorcap /etc/systemd/system /etc/systemd/system/mirrorcap.target.d /usr/local/bin /usr/local/lib/mirrorcap /usr/local/libexec/mirrorcap /usr/local/sbin

cat > '/usr/local/lib/mirrorcap/mirrorcap_host.py.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_LIB_MIRRORCAP_MIRRORCAP_HOST_PY'
"""What the host's Python scripts share: the env file, the pcap names, where
state lives, reading a pcap's end (the last whole record, a torn tail), and
calling the AWS CLI.

Installed as /usr/local/lib/mirrorcap/mirrorcap_host.py; the host's Python
scripts import it from there. Python 3.9 stdlib only.
"""
import datetime as dt
import json
import os
import re
import struct
import subprocess

ENV_FILE = "/etc/mirrorcap/mirrorcap.env"
BOOTSTRAP_LOCK = "/run/mirrorcap-bootstrap.lock"  # the user data and mirrorcap-settings take turns
RUN_DIR = "/run/mirrorcap"  # what a boot forgets: heartbeats, what storage and decap wait for
STATE_DIR = "/var/lib/mirrorcap"  # what survives restarts, failures and reboots: the loss record
# The VXLAN network identifier a capture is named by: 24 bits; 0 is never one (AWS refuses it).
VNI_MIN, VNI_MAX = 1, (1 << 24) - 1
# A pcap's packet index beside it (NAME.pcap + INDEX_SUFFIX, mirrorcap_index writes it), or why
# it could not be written (NAME.pcap + INDEX_FAILED_SUFFIX, which health reports).
INDEX_SUFFIX, INDEX_FAILED_SUFFIX = ".idx.json.gz", ".idx-failed"
# How the failure marker of a damaged pcap begins: it has an index, of what lies around the damage.
INDEX_PARTIAL = "partial index"
# The archive uploader's waits after 1, 2, 3, 4+ failed runs in a row; the laptop's threshold
# for the archive backlog (health, alarms) allows for the longest.
ARCHIVE_BACKOFF_SECONDS = (60, 120, 240, 300)


IMDS = "http://169.254.169.254"  # the instance metadata service, IMDSv2 only (the instances require it)


def imds(path, token_timeout=5, timeout=5):
    """The bytes at `path` (e.g. /latest/meta-data/instance-id) of the instance metadata service,
    asked with a session token (IMDSv2). OSError (URLError, a timeout) when it does not answer."""
    import urllib.request  # here: the scripts that never ask IMDS (the capture...) do not load it
    token = urllib.request.urlopen(urllib.request.Request(
        IMDS + "/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}),
        timeout=token_timeout).read()
    return urllib.request.urlopen(urllib.request.Request(
        IMDS + path, headers={"X-aws-ec2-metadata-token": token.decode()}), timeout=timeout).read()


def read_env(path=ENV_FILE):
    """The env file as a dict (KEY=value lines, quotes dropped; not run by a shell)."""
    values = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                values[key] = value.strip().strip('"')
    return values


def vxlan_iface(env, vni):
    """The decapsulating interface of a VNI (decap makes it)."""
    return env["MIRRORCAP_VXLAN_IFACE"].replace("{vni}", str(vni))


def capture_run_dir(vni):
    """The capture unit's RuntimeDirectory=mirrorcap/capture-%i."""
    return os.path.join(RUN_DIR, "capture-%s" % vni)


def capture_state_file(vni):
    """The capture's loss record, in its StateDirectory=mirrorcap/capture-%i."""
    return os.path.join(STATE_DIR, "capture-%s" % vni, "state.json")


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def write_json(path, data):
    """Replaced whole (a reader never sees half of it)."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def not_writing(vnis):
    """(the VNIs whose capture stopped on a full volume, the most room one of them needs to write
    again): the not-writing flags the capture leaves in its RuntimeDirectory for retention."""
    stopped, need = set(), 0
    for vni in vnis:
        try:
            with open(os.path.join(capture_run_dir(vni), "not-writing")) as f:
                need = max(need, int(f.read().split()[0]))
            stopped.add(vni)
        except (OSError, ValueError, IndexError):
            pass
    return stopped, need


# MIRRORCAP_PCAP_PATTERN is tcpdump -G's file name (strftime, UTC) with {vni}:
# everything else about pcap names is derived from it (retention does the same in shell).
def pcap_pattern(pattern, vni):
    """The -w pattern of one VNI's capture."""
    return pattern.replace("{vni}", str(vni))


def pcap_glob(pattern, vni="*"):
    """The names of one VNI's pcaps (of every VNI's by default) as a glob."""
    return re.sub("%.", "*", pcap_pattern(pattern, vni))


def pcap_start(pattern, name):
    """(VNI, start time in UTC) of a pcap named by `pattern`, None for any other name."""
    parts = [r"(\d+)" if p == "{vni}" else ".+" if p.startswith("%") else re.escape(p)
             for p in re.split(r"(\{vni\}|%.)", pattern)]
    m = re.fullmatch("".join(parts), name)
    if not m:
        return None
    try:
        start = dt.datetime.strptime(name, pcap_pattern(pattern, m.group(1)))
    except ValueError:
        return None
    return int(m.group(1)), start.replace(tzinfo=dt.timezone.utc)


def on_its_own_volume(directory):
    """True when `directory` is the root of a mounted file system.

    Compared by device number with its parent: in a unit ReadWritePaths=
    bind-mounts the directory, which makes mountpoint(1) and mountinfo say
    "mounted" even when the volume is not; a bind of a directory of the root
    volume still carries the root volume's device number.
    """
    try:
        return os.stat(directory).st_dev != os.stat(os.path.join(directory, "..")).st_dev
    except OSError:
        return False


# --- The end of a pcap -----------------------------------------------------------
# A pcap can end in a torn record: the write that hit a full disk, a tcpdump
# killed in the middle of one, a file read while tcpdump writes it. Readers stop
# at its last whole record, and the capture cuts a torn tail off (repair).
PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1": ("<", 10 ** 6), b"\xa1\xb2\xc3\xd4": (">", 10 ** 6),
              b"\x4d\x3c\xb2\xa1": ("<", 10 ** 9), b"\xa1\xb2\x3c\x4d": (">", 10 ** 9)}
MAX_LEN = 1 << 24  # no frame's original length is larger


def pcap_end(path):
    """(offset just past the last whole record, that record's time in seconds or None).

    (0, None): not even a whole file header. A small file is walked record by
    record from its start. In a large one the records of its last stretch are
    found by their chain: headers whose time lies between the first record's
    (-1 h) and now (+1 h), whose fraction and lengths are possible, each followed
    by the next up to the end of the file, the last one whole or torn. Random
    bytes pass one such header about once in 3e7 tries, and never a chain of
    them; where no chain is found the whole file is walked instead.
    """
    with open(path, "rb") as f:
        head = f.read(40)
        size = os.fstat(f.fileno()).st_size
        if len(head) < 24 or head[:4] not in PCAP_MAGIC:
            return 0, None
        endian, per_second = PCAP_MAGIC[head[:4]]
        snaplen = min(struct.unpack(endian + "I", head[16:20])[0] or MAX_LEN, MAX_LEN)
        if len(head) < 40:
            return 24, None
        record = struct.Struct(endian + "IIII")
        first = record.unpack_from(head, 24)[0]
        latest = max(first, int(dt.datetime.now(dt.timezone.utc).timestamp())) + 3600

        def walk(data, o, exact):
            """(end of the last whole record, its header's offset) from the record at o; None
            when a header is impossible (unless exact: then the walk stops before it)."""
            end, last = o, None
            while o + 16 <= len(data):
                ts, frac, caplen, length = record.unpack_from(data, o)
                if not (first - 3600 <= ts <= latest and frac < per_second and 0 < caplen <= snaplen
                        and caplen <= length < MAX_LEN):
                    if exact:
                        break
                    return None
                if o + 16 + caplen > len(data):
                    break  # torn: the chain holds up to here
                end, last, o = o + 16 + caplen, o, o + 16 + caplen
            return end, last

        span = 2 * (16 + snaplen)
        found, base = None, max(24, size - span)
        if base > 24:
            f.seek(base)
            data = f.read(size - base)
            for o in range(min(len(data) - 16, span // 2 + 16)):
                found = walk(data, o, False)
                if found and found[1] is not None:
                    break
                found = None
        if found is None:  # small file, or no chain: every record from the first
            f.seek(0)
            data, base = f.read(), 0
            found = walk(data, 24, True)
    end, last = found
    if last is None:
        return base + end, None
    ts, frac = record.unpack_from(data, last)[:2]
    return base + end, ts + frac / per_second


def repair(path):
    """Cut a torn tail off a pcap nobody writes any more; a file without a whole
    header holds no packet and goes. Returns the bytes removed (0: it was whole)."""
    end, _ = pcap_end(path)
    size = os.path.getsize(path)
    if end == 0:
        os.unlink(path)
        return size
    if end < size:
        os.truncate(path, end)
    return size - end


def aws_cli(args, *, attempts, connect_timeout, read_timeout, timeout):
    """Run `aws ARGS...` (the instance role, through IMDSv2): (its result, None), or
    (None, why not) in one line when it could not run, timed out or failed."""
    cmd = ["aws", *args, "--no-cli-pager", "--cli-connect-timeout", str(connect_timeout),
           "--cli-read-timeout", str(read_timeout)]
    env = dict(os.environ, AWS_RETRY_MODE="standard", AWS_MAX_ATTEMPTS=str(attempts))
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, "aws %s: %s" % (" ".join(args[:2]), e)
    if r.returncode != 0:
        return None, (r.stderr.strip() or "aws exited with %d" % r.returncode).splitlines()[-1][:400]
    return r, None
MIRRORCAP_USR_LOCAL_LIB_MIRRORCAP_MIRRORCAP_HOST_PY
chmod 0644 '/usr/local/lib/mirrorcap/mirrorcap_host.py.mirrorcap-new'
mv -f '/usr/local/lib/mirrorcap/mirrorcap_host.py.mirrorcap-new' '/usr/local/lib/mirrorcap/mirrorcap_host.py'

cat > '/usr/local/lib/mirrorcap/mirrorcap_index.py.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_LIB_MIRRORCAP_MIRRORCAP_INDEX_PY'
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
MIRRORCAP_USR_LOCAL_LIB_MIRRORCAP_MIRRORCAP_INDEX_PY
chmod 0644 '/usr/local/lib/mirrorcap/mirrorcap_index.py.mirrorcap-new'
mv -f '/usr/local/lib/mirrorcap/mirrorcap_index.py.mirrorcap-new' '/usr/local/lib/mirrorcap/mirrorcap_index.py'

cat > '/usr/local/lib/mirrorcap/mirrorcap_query.py.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_LIB_MIRRORCAP_MIRRORCAP_QUERY_PY'
"""A parsed `mirrorcap find` query, deciding packets and flows: the one implementation of what
a query takes, run by the laptop (`mirrorcap find --dir`, the archive) and by the host
(mirrorcap-find, through Systems Manager) alike. Python 3.9 stdlib only (the host has no pip).

The laptop parses the text (mirrorcap.find.query, whose errors point at the word) and hands
over a tree of JSON values, every time already absolute (ns since the epoch, UTC):

  ["and", A, B]  ["or", A, B]  ["not", A]
  ["host", DIR, 4|6, HEX]            DIR: "src", "dst" or "any"; HEX: the address's bytes
  ["net", DIR, 4|6, LOHEX, HIHEX]    the network's first and last address
  ["port", DIR, N]  ["proto", N, "tcp"|"udp"|"icmp"]  ["fam", "ip"|"ip6"|"arp"]
  ["vni", N]  ["time", LO|null, HI|null]   [LO, HI): packets at or after LO, before HI

`check` refuses any other value (the host gets the tree from the network): what it accepts
has no free text left, only these words, numbers and hex.
"""
import re
import struct

import mirrorcap_host

V4_FAMS = ("ip", "arp", "rarp")  # where libpcap's `host`/`net` of an IPv4 address look
DIRECTIONS = ("src", "dst", "any")
PROTOS = {"tcp": 6, "udp": 17, "icmp": 1}
FAMS = ("ip", "ip6", "arp")
HEX = {4: re.compile(r"[0-9a-f]{8}"), 6: re.compile(r"[0-9a-f]{32}")}
CUT = "cut"  # mirrorcap_index.CUT: the fam of frames cut short
MAX_DEPTH = 64  # a query people write is a few levels deep; recursion stays far from Python's limit


class QueryTreeError(ValueError):
    """A tree that is not a query (from a different version of mirrorcap, or not from it at all)."""


def _int(v, lo, hi):
    return type(v) is int and lo <= v <= hi


def check(tree, depth=0):
    """`tree` when it is a query as the module docstring says; QueryTreeError otherwise."""
    if depth > MAX_DEPTH:
        raise QueryTreeError("the query is nested more than %d deep" % MAX_DEPTH)
    if not isinstance(tree, list) or not tree or not isinstance(tree[0], str):
        raise QueryTreeError("a query node is a list starting with its operator")
    op, a = tree[0], tree[1:]
    ok = False
    if op in ("and", "or"):
        ok = len(a) == 2 and all(check(x, depth + 1) is x for x in a)
    elif op == "not":
        ok = len(a) == 1 and check(a[0], depth + 1) is a[0]
    elif op == "host":
        ok = len(a) == 3 and a[0] in DIRECTIONS and a[1] in (4, 6) and isinstance(a[2], str) and bool(HEX[a[1]].fullmatch(a[2]))
    elif op == "net":
        ok = (len(a) == 4 and a[0] in DIRECTIONS and a[1] in (4, 6)
              and all(isinstance(x, str) and HEX[a[1]].fullmatch(x) for x in a[2:]) and a[2] <= a[3])
    elif op == "port":
        ok = len(a) == 2 and a[0] in DIRECTIONS and _int(a[1], 0, 65535)
    elif op == "proto":
        ok = len(a) == 2 and a[1] in PROTOS and a[0] == PROTOS[a[1]]
    elif op == "fam":
        ok = len(a) == 1 and a[0] in FAMS
    elif op == "vni":
        ok = len(a) == 1 and _int(a[0], mirrorcap_host.VNI_MIN, mirrorcap_host.VNI_MAX)
    elif op == "time":
        ok = (len(a) == 2 and a != [None, None]
              and all(x is None or _int(x, -(1 << 63), (1 << 63) - 1) for x in a))
    if not ok:
        raise QueryTreeError("not a query node: %.80r" % (tree,))
    return tree


# --- one packet ----------------------------------------------------------------------
def predicate(tree):
    """A function (key, vni, ts_ns) -> bool deciding one packet; key as mirrorcap_index.flow_key gives it."""
    op, a = tree[0], tree[1:]
    if op == "and":
        l, r = predicate(a[0]), predicate(a[1])
        return lambda k, v, t: l(k, v, t) and r(k, v, t)
    if op == "or":
        l, r = predicate(a[0]), predicate(a[1])
        return lambda k, v, t: l(k, v, t) or r(k, v, t)
    if op == "not":
        inner = predicate(a[0])
        return lambda k, v, t: not inner(k, v, t)
    if op in ("host", "net"):
        direction, version = a[0], a[1]
        fams = V4_FAMS if version == 4 else ("ip6",)
        if op == "host":
            want = bytes.fromhex(a[2])
            test = lambda x: x == want  # noqa: E731
        else:
            lo, hi = bytes.fromhex(a[2]), bytes.fromhex(a[3])
            test = lambda x: len(x) == len(lo) and lo <= x <= hi  # noqa: E731
        if direction == "src":
            return lambda k, v, t: k[0] in fams and test(k[2])
        if direction == "dst":
            return lambda k, v, t: k[0] in fams and test(k[3])
        return lambda k, v, t: k[0] in fams and (test(k[2]) or test(k[3]))
    if op == "port":
        direction, port = a
        want = port.to_bytes(2, "big")
        if direction == "src":
            return lambda k, v, t: k[4] is not None and k[4][:2] == want
        if direction == "dst":
            return lambda k, v, t: k[4] is not None and k[4][2:] == want
        return lambda k, v, t: k[4] is not None and (k[4][:2] == want or k[4][2:] == want)
    if op == "proto":
        proto, name = a
        fams = ("ip",) if name == "icmp" else ("ip", "ip6")
        return lambda k, v, t: k[0] in fams and k[1] == proto
    if op == "fam":
        return lambda k, v, t: k[0] == a[0]
    if op == "vni":
        return lambda k, v, t: v == a[0]
    if op == "time":
        lo, hi = a
        return lambda k, v, t: (lo is None or t >= lo) and (hi is None or t < hi)
    raise AssertionError(op)


def packet_predicate(tree, ix):
    """A function (data, linktype, frame, caplen, length, endian, vni, ts_ns) -> bool deciding one record's frame as
    tcpdump's filter does; ix: mirrorcap_index. A whole frame is decided on its flow key. A frame cut before a byte
    the filter may read (mirrorcap_index.CUT) is decided by libpcap itself, on the query in tcpdump's syntax: its
    compiled, optimized code rejects a packet when a load passes the captured bytes, and which loads it makes
    depends on the whole program (libpcap's optimizer merges the terms' loads), so nothing short of libpcap can
    answer as tcpdump does."""
    keep, flow_key, cut = predicate(tree), ix.flow_key, ix.CUT

    def decide(data, linktype, frame, caplen, length, endian, vni, ts):
        key = flow_key(data, linktype, frame, caplen, endian)
        if key[0] != cut:
            return keep(key, vni, ts)
        return libpcap().matches(linktype, endian, bpf(tree, vni, ts), bytes(data[frame:frame + caplen]), length)
    return decide


def bpf(tree, vni=None, ts=None):
    """The query in tcpdump's syntax. Its `vni` and time terms, which tcpdump has not, are the constants they are for a
    packet of `vni` at `ts` ('len >= 0' or 'len < 0': no load of the packet); without them, refused (ValueError).
    A chain of one operator is written unparenthesized, left to right, as tcpdump groups it."""
    op, a = tree[0], tree[1:]
    if op in ("and", "or"):
        parts = []
        for x in a:
            text = bpf(x, vni, ts)
            parts.append(text if x[0] == op or x[0] not in ("and", "or") else "(" + text + ")")
        return (" %s " % op).join(parts)
    if op == "not":
        inner = bpf(a[0], vni, ts)
        return "not " + (inner if a[0][0] not in ("and", "or") else "(" + inner + ")")
    d = "" if op not in ("host", "net", "port") or a[0] == "any" else a[0] + " "
    if op == "host":
        return d + "host " + _addr_text(a[1], a[2])
    if op == "net":
        lo, hi = int(a[2], 16), int(a[3], 16)
        return d + "net %s/%d" % (_addr_text(a[1], a[2]), len(a[2]) * 4 - (hi - lo).bit_length())
    if op == "port":
        return d + "port %d" % a[1]
    if op == "proto":
        return a[1]
    if op == "fam":
        return a[0]
    if op in ("vni", "time"):
        if ts is None:
            raise ValueError("%s has no tcpdump equivalent" % op)
        hit = vni == a[0] if op == "vni" else (a[0] is None or ts >= a[0]) and (a[1] is None or ts < a[1])
        return "len >= 0" if hit else "len < 0"
    raise AssertionError(op)


def _addr_text(version, hexaddr):
    import ipaddress
    return str(ipaddress.ip_address(bytes.fromhex(hexaddr)))




class NoLibpcap(Exception):
    """libpcap is not on this machine: frames cut short cannot be decided as tcpdump does."""


class _Libpcap:
    """libpcap through ctypes (stdlib: the host has no pip; libpcap is tcpdump's own library, on every capture host
    and most laptops): compiles a filter once for a link type and byte order, as tcpdump -r compiles it for a file
    of them (libpcap's code depends on both: a NULL header's families, in the file's order), and runs it on a
    frame as tcpdump -r does."""

    def __init__(self):
        import ctypes
        import ctypes.util
        name = ctypes.util.find_library("pcap")
        if name is None:
            raise NoLibpcap("libpcap is not installed (tcpdump's library): install libpcap (or tcpdump) to decide "
                            "frames cut shorter than the bytes the query reads")
        self.c = ctypes
        lib = ctypes.CDLL(name)

        class Prog(ctypes.Structure):
            _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]

        class Header(ctypes.Structure):
            _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long), ("caplen", ctypes.c_uint32),
                        ("len", ctypes.c_uint32)]
        self.Prog, self.Header = Prog, Header
        lib.pcap_open_offline.restype = ctypes.c_void_p
        lib.pcap_open_offline.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(Prog), ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32]
        lib.pcap_geterr.restype = ctypes.c_char_p
        lib.pcap_geterr.argtypes = [ctypes.c_void_p]
        lib.pcap_offline_filter.argtypes = [ctypes.POINTER(Prog), ctypes.POINTER(Header), ctypes.c_char_p]
        self.lib, self.handles, self.progs = lib, {}, {}

    def _handle(self, linktype, endian):
        """A pcap_t reading a file of `linktype` in byte order `endian` (its header alone, from a temporary file)."""
        import os
        import tempfile
        handle = self.handles.get((linktype, endian))
        if handle is None:
            fd, path = tempfile.mkstemp(prefix="mirrorcap-linktype-", suffix=".pcap")
            try:
                os.write(fd, struct.pack(endian + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
                os.close(fd)
                errbuf = self.c.create_string_buffer(512)
                handle = self.lib.pcap_open_offline(path.encode(), errbuf)
            finally:
                os.unlink(path)
            if not handle:
                raise ValueError("libpcap cannot read link type %d: %s" % (linktype, errbuf.value.decode(errors="replace")))
            self.handles[(linktype, endian)] = handle
        return handle

    def program(self, linktype, endian, text):
        key = (linktype, endian, text)
        prog = self.progs.get(key)
        if prog is None:
            handle = self._handle(linktype, endian)
            prog = self.Prog()
            if self.lib.pcap_compile(handle, self.c.byref(prog), text.encode(), 1, 0xFFFFFFFF) != 0:
                why = self.lib.pcap_geterr(handle).decode(errors="replace")
                if "rejects all packets" not in why:
                    raise ValueError("libpcap cannot compile %r: %s" % (text, why))
                prog = False  # libpcap proved no packet matches
            if len(self.progs) > 4096:
                self.progs.clear()  # (compiled programs are kept; a query has a few)
            self.progs[key] = prog
        return prog

    def matches(self, linktype, endian, text, frame, length):
        prog = self.program(linktype, endian, text)
        if prog is False:
            return False
        h = self.Header(0, 0, len(frame), max(length, len(frame)))
        return self.lib.pcap_offline_filter(self.c.byref(prog), self.c.byref(h), frame) != 0


_LIBPCAP = []


def libpcap():
    """The one _Libpcap of this process (NoLibpcap when the library is not installed)."""
    if not _LIBPCAP:
        _LIBPCAP.append(_Libpcap())
    return _LIBPCAP[0]


# --- an index's flow rows --------------------------------------------------------------
# What a query asks of a flow row is written once, as a condition (flow_condition), which both engines read:
# sql() writes it for DuckDB and Athena, row_matches() decides it in Python (the host). A condition is
#   ["all", C...]  ["any", C...]  ["not", C]       (and, or, not)
#   ["in", COL, [WORD...]]  ["eq", COL, VALUE]      (a null column: false)
#   ["range", COL, LO, HI]                          LO <= COL <= HI, strings of LO's length (a network)
#   ["ge", COL, N]  ["lt", COL, N]                  (times)
# where COL is a flow column and every value a word, hex digits or an integer from a checked tree.


def term_condition(op, a):
    """What term [op, *a] (not time) asks of a flow: exact, for every packet of the flow alike."""
    if op in ("host", "net"):
        direction, version = a[0], a[1]
        cols = {"src": ("sa",), "dst": ("da",), "any": ("sa", "da")}[direction]
        test = (lambda c: ["eq", c, a[2]]) if op == "host" else (lambda c: ["range", c, a[2], a[3]])
        return ["all", ["in", "fam", list(V4_FAMS if version == 4 else ("ip6",))], ["any"] + [test(c) for c in cols]]
    if op == "port":
        return ["any"] + [["eq", c, a[1]] for c in {"src": ("sp",), "dst": ("dp",), "any": ("sp", "dp")}[a[0]]]
    if op == "proto":
        return ["all", ["in", "fam", ["ip"] if a[1] == "icmp" else ["ip", "ip6"]], ["eq", "proto", a[0]]]
    if op == "fam":
        return ["eq", "fam", a[0]]
    if op == "vni":
        return ["eq", "vni", a[0]]
    raise AssertionError(op)


def flow_condition(tree, negate=False):
    """The condition every flow holding a packet the query takes meets. Negations are pushed down to the terms,
    where all but time are exact per flow; a time term asks only that the flow's span may hold one."""
    op, a = tree[0], tree[1:]
    if op == "not":
        return flow_condition(a[0], not negate)
    if op in ("and", "or"):
        return ["all" if (op == "and") != negate else "any", flow_condition(a[0], negate), flow_condition(a[1], negate)]
    if op == "time":
        lo, hi = a
        if not negate:
            return ["all"] + ([["ge", "last", lo]] if lo is not None else []) + ([["lt", "first", hi]] if hi is not None else [])
        return ["any"] + ([["lt", "first", lo]] if lo is not None else []) + ([["ge", "last", hi]] if hi is not None else [])
    cond = term_condition(op, a)
    return ["not", cond] if negate else cond


def flow_may_match(tree, row):
    """True when the flow row (an index's "flow" line) may hold a packet the query takes (flow_condition, decided in
    Python; sql() asks DuckDB and Athena the same). A flow of frames cut short (fam "cut") may hold one of any query:
    its packets are decided one by one."""
    return flow_matcher(tree)(row)


def flow_matcher(tree):
    """flow_may_match as a function of the row, the condition written once for every row."""
    cond = flow_condition(tree)
    return lambda row: row["fam"] == CUT or row_matches(cond, row)


def row_matches(cond, row):
    op = cond[0]
    if op == "all":
        return all(row_matches(c, row) for c in cond[1:])
    if op == "any":
        return any(row_matches(c, row) for c in cond[1:])
    if op == "not":
        return not row_matches(cond[1], row)
    v = row[cond[1]]
    if v is None:
        return False
    if op == "in":
        return v in cond[2]
    if op == "eq":
        return v == cond[2]
    if op == "range":
        return len(v) == len(cond[2]) and cond[2] <= v <= cond[3]
    if op == "ge":
        return v >= cond[2]
    if op == "lt":
        return v < cond[2]
    raise AssertionError(op)


def sql(cond):
    """A condition as SQL (DuckDB's and Athena's alike). Columns "first"/"last" are quoted (keywords in Athena); a
    test of a null column is false (coalesce), so that NOT of it is true, as in row_matches."""
    op = cond[0]
    if op in ("all", "any"):
        if len(cond) == 1:
            return "TRUE" if op == "all" else "FALSE"
        return "(" + (" AND " if op == "all" else " OR ").join(sql(c) for c in cond[1:]) + ")"
    if op == "not":
        return "(NOT %s)" % sql(cond[1])
    col = '"%s"' % cond[1] if cond[1] in ("first", "last") else cond[1]
    if op == "in":
        return "coalesce(%s IN (%s), false)" % (col, ", ".join("'%s'" % _word(w) for w in cond[2]))
    if op == "eq":
        value = "'%s'" % _word(cond[2]) if isinstance(cond[2], str) else "%d" % cond[2]
        return "coalesce(%s = %s, false)" % (col, value)
    if op == "range":
        return "coalesce(%s BETWEEN '%s' AND '%s' AND length(%s) = %d, false)" % (
            col, _word(cond[2]), _word(cond[3]), col, len(cond[2]))
    if op in ("ge", "lt"):
        return "coalesce(%s %s %d, false)" % (col, ">=" if op == "ge" else "<", cond[2])
    raise AssertionError(op)


def _word(text):
    """A value the SQL quotes: a word or hex digits (a checked tree has nothing else)."""
    if not re.fullmatch(r"[0-9a-z]*", text):
        raise QueryTreeError("not a word: %.40r" % (text,))
    return text


# --- an index's file line ----------------------------------------------------------------
def file_may_take(tree, line, may_hold):
    """False only when no flow of the file can hold a packet the query takes, decided on its index's
    file line alone (its VNI, and its Bloom filter through mirrorcap_index.may_hold). Conservative:
    a term the filter cannot decide (net, protocols, time, anything under `not`) may hold, and so may a file with
    frames cut short (its line's `cut`: they are decided one by one)."""
    if line.get("cut"):
        return True
    op, a = tree[0], tree[1:]
    if op == "and":
        return file_may_take(a[0], line, may_hold) and file_may_take(a[1], line, may_hold)
    if op == "or":
        return file_may_take(a[0], line, may_hold) or file_may_take(a[1], line, may_hold)
    if op == "host":
        return may_hold(line, "a" + a[2])
    if op == "port":
        return may_hold(line, "p%d" % a[1])
    if op == "vni":
        return line.get("vni") is None or line["vni"] == a[0]
    return True  # not, net, proto, fam, time (the file's time range is decided apart)


def file_in_time(tree, line):
    """Whether the packets of the file of index file line `line` span a time the query can take
    (a file without packets has none)."""
    lo, hi = time_bounds(tree)
    return line.get("first") is not None and (lo is None or line["last"] >= lo) and (hi is None or line["first"] < hi)


def time_bounds(tree):
    """[lo, hi) holding every packet the query can take (None: unbounded on that side)."""
    op, a = tree[0], tree[1:]
    if op == "time":
        return a[0], a[1]
    if op in ("and", "or"):
        (l1, h1), (l2, h2) = time_bounds(a[0]), time_bounds(a[1])
        if op == "and":
            lo = l1 if l2 is None else l2 if l1 is None else max(l1, l2)
            hi = h1 if h2 is None else h2 if h1 is None else min(h1, h2)
            return lo, hi
        return (None if l1 is None or l2 is None else min(l1, l2)), (None if h1 is None or h2 is None else max(h1, h2))
    return None, None  # a term without time, or a negation: any time
MIRRORCAP_USR_LOCAL_LIB_MIRRORCAP_MIRRORCAP_QUERY_PY
chmod 0644 '/usr/local/lib/mirrorcap/mirrorcap_query.py.mirrorcap-new'
mv -f '/usr/local/lib/mirrorcap/mirrorcap_query.py.mirrorcap-new' '/usr/local/lib/mirrorcap/mirrorcap_query.py'

cat > '/usr/local/lib/mirrorcap/mirrorcap-lib.sh.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_LIB_MIRRORCAP_MIRRORCAP_LIB_SH'
# mirrorcap-lib.sh: what the host's shell scripts share; sourced, never run.
# Installed as /usr/local/lib/mirrorcap/mirrorcap-lib.sh: reads the env file, names
# the script in its messages, and keeps its status for mirrorcap-health.
# shellcheck shell=bash disable=SC2034  # its variables are the sourcing script's
ENV_FILE=/etc/mirrorcap/mirrorcap.env
# shellcheck source=/dev/null
. "$ENV_FILE"
ME=${0##*/}
ME=${ME%.sh}
ME=mirrorcap-${ME#mirrorcap-}
# Every refusal says what to fix, then how to start capturing again: the target
# starts whatever part of the capture is not running.
AGAIN="then: systemctl start mirrorcap.target"
IMDS=http://169.254.169.254
# A pcap's packet index beside it (NAME + INDEX_SUFFIX), or why it could not be written
# (NAME + INDEX_FAILED_SUFFIX): mirrorcap_host's suffixes, spelled here for the shell scripts.
INDEX_SUFFIX=.idx.json.gz
INDEX_FAILED_SUFFIX=.idx-failed
since=$(date +%s)

say() { echo "$ME: $*"; }

# status STATE DETAIL: /run/mirrorcap/<script>.json, what it waits for or why it
# failed, for mirrorcap-health (root's scripts only; quotes dropped from the detail).
status() {
  [ "$(id -u)" = 0 ] || return 0
  local file=/run/mirrorcap/${ME#mirrorcap-}.json
  install -d -m 0755 /run/mirrorcap
  printf '{"state": "%s", "since": %s, "detail": "%s"}\n' "$1" "$since" "${2//[\"\\]/}" >"$file.tmp"
  mv -f "$file.tmp" "$file"
}

die() {
  echo "$ME: $*" >&2
  status failed "$*"
  exit 1
}

# waiting STATE DETAIL: said now, then once a minute while it lasts (and when it changes).
waiting() {
  if [ "$1:$2" != "${last_wait:-}" ] || ((SECONDS >= ${next_wait:-0})); then
    say "$2"
    status "$1" "$2"
    last_wait="$1:$2"
    next_wait=$((SECONDS + 60))
  fi
}

# imds PATH: IMDSv2 into $imds_out (a token taken again before it expires); on
# failure, curl's complaint is in $imds_error. Not in $(...): its variables must stay.
imds() {
  local out
  if [ -z "${imds_token:-}" ] || ((SECONDS >= ${imds_token_until:-0})); then
    out=$(curl -fsS --max-time 2 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 300" "$IMDS/latest/api/token" 2>&1) || {
      imds_error="the token request failed: ${out:0:200}" imds_token=""
      return 1
    }
    imds_token=$out imds_token_until=$((SECONDS + 240))
  fi
  out=$(curl -fsS --max-time 2 -H "X-aws-ec2-metadata-token: $imds_token" "$IMDS/latest/meta-data/$1" 2>&1) || {
    imds_error="GET $1 failed: ${out:0:200}"
    return 1
  }
  imds_out=$out
}
MIRRORCAP_USR_LOCAL_LIB_MIRRORCAP_MIRRORCAP_LIB_SH
chmod 0644 '/usr/local/lib/mirrorcap/mirrorcap-lib.sh.mirrorcap-new'
mv -f '/usr/local/lib/mirrorcap/mirrorcap-lib.sh.mirrorcap-new' '/usr/local/lib/mirrorcap/mirrorcap-lib.sh'

cat > '/usr/local/libexec/mirrorcap/storage.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_STORAGE'
#!/bin/bash
# mirrorcap-storage: mount the pcap EBS volume at the capture directory, on every boot.
# Finds the device from the volume ID (the NVMe by-id link EC2 gives on Nitro) or,
# on a fleet host, from the device name its launch template gives it (/dev/sdf:
# Amazon Linux's udev rules link it to the NVMe device, whose by-id name carries the
# volume ID); creates xfs ONLY on a device with no file system and no partition
# table, and mounts it in the host's mount namespace (the unit has no namespacing
# options). No fstab line: this enabled unit is the one place the volume is
# mounted, the same way on every boot, and a missing volume never stops boot: it is
# waited for without a deadline (Terraform attaches it after the instance starts;
# an operator may attach it much later), and capture starts the moment it is
# mounted. What it waits for, or why it refused, goes to /run/mirrorcap/storage.json.
# Safe to run again and again: a volume that holds pcaps is never formatted.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=mirrorcap-lib.sh
. "$(dirname "$(readlink -f "$0")")/../../lib/mirrorcap/mirrorcap-lib.sh"
DIR=${MIRRORCAP_CAPTURE_DIR:?MIRRORCAP_CAPTURE_DIR missing from $ENV_FILE}
CAPTURE_USER=${MIRRORCAP_CAPTURE_USER:?MIRRORCAP_CAPTURE_USER missing from $ENV_FILE}
CAPTURE_GROUP=${MIRRORCAP_CAPTURE_GROUP:?MIRRORCAP_CAPTURE_GROUP missing from $ENV_FILE}
VOLUME_ID=${MIRRORCAP_VOLUME_ID:-}
DEVICE_NAME=${MIRRORCAP_VOLUME_DEVICE:-}
BY_ID=/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_
# Xen (pre-Nitro) types have no NVMe serial: the attachment's device name, as Xen names it.
XEN_DEVICE=/dev/xvdf

# validate refuses anything else; checked again because this script runs as root.
[[ $DIR =~ ^(/[A-Za-z0-9._-]+)+$ && ! $DIR =~ (^|/)\.\.?(/|$) ]] || die "MIRRORCAP_CAPTURE_DIR=$DIR in $ENV_FILE is not a normalized absolute path: fix host.capture_dir"
if [ -n "$VOLUME_ID" ]; then
  [[ $VOLUME_ID =~ ^vol-[0-9a-f]{8}([0-9a-f]{9})?$ ]] || die "MIRRORCAP_VOLUME_ID=$VOLUME_ID in $ENV_FILE is not an EBS volume ID (vol-...): fix the user data"
  # NVMe serials drop the dash: vol-0abc -> nvme-Amazon_Elastic_Block_Store_vol0abc
  link=$BY_ID${VOLUME_ID/-/} wanted="volume $VOLUME_ID ($link)"
else
  [[ $DEVICE_NAME =~ ^/dev/[a-z0-9]+$ ]] || die "neither MIRRORCAP_VOLUME_ID nor a MIRRORCAP_VOLUME_DEVICE like /dev/sdf in $ENV_FILE: fix the user data"
  link=$DEVICE_NAME wanted="the launch template's pcap volume ($DEVICE_NAME)"
fi

device=""
while :; do
  if [ -e "$link" ]; then device=$(readlink -f "$link"); break; fi
  if [ -n "$VOLUME_ID" ] && [ -b "$XEN_DEVICE" ] && [ ! -e /sys/class/nvme ]; then device=$XEN_DEVICE; break; fi
  waiting waiting "waiting since $(date -u -d "@$since" +%FT%TZ) for $wanted: attach it to this instance (the stack attaches it; aws ec2 attach-volume); capture starts by itself once it is mounted"
  sleep 1
done
[ -b "$device" ] || die "$device ($wanted) is not a block device"
if [ -z "$VOLUME_ID" ]; then
  for l in "$BY_ID"vol*; do
    if [ -e "$l" ] && [ "$(readlink -f "$l")" = "$device" ]; then VOLUME_ID=vol-${l##*_vol}; break; fi
  done
  [ -n "$VOLUME_ID" ] || die "$DEVICE_NAME ($device) is not an EBS volume on NVMe (no ${BY_ID}vol* link to it): fleet hosts need a Nitro instance type"
fi

# -p probes the device itself, not the blkid cache.
fstype=$(blkid -p -o value -s TYPE "$device" || true)
pttype=$(blkid -p -o value -s PTTYPE "$device" || true)
if [ -z "$fstype" ]; then
  [ -z "$pttype" ] || die "$device (volume $VOLUME_ID) has a $pttype partition table and no file system: refusing to format it; wipe it deliberately first (wipefs -a $device), $AGAIN"
  say "$device (volume $VOLUME_ID) is blank: creating xfs"
  # No -f: mkfs.xfs itself refuses to overwrite an existing file system.
  mkfs.xfs -q -L mirrorcap "$device"  # xfs labels: 12 characters at most
  fstype=xfs
elif [ "$fstype" != xfs ]; then
  die "$device (volume $VOLUME_ID) holds a $fstype file system, not xfs: refusing to touch it; attach a blank volume or wipe this one deliberately (wipefs -a $device), $AGAIN"
fi
uuid=$(blkid -p -o value -s UUID "$device")
[ -n "$uuid" ] || die "could not read the file system UUID of $device"

if ! mountpoint -q "$DIR" && [ -d "$DIR" ] && [ -n "$(ls -A "$DIR")" ]; then
  die "$DIR holds files and is not the volume: mounting over it would hide them; move them away or pick another host.capture_dir, $AGAIN"
fi
# The mount point exists (and is locked down) even while the volume is absent:
# nobody else can write into it, and capture refuses a directory that is not a mount.
install -d -m 0750 -o root -g "$CAPTURE_GROUP" "$DIR"

if mountpoint -q "$DIR"; then
  mounted=$(findmnt -n -o SOURCE --mountpoint "$DIR")
  [ "$(readlink -f "$mounted")" = "$device" ] || die "$DIR is already a mount of $mounted, not of volume $VOLUME_ID ($device): unmount it (umount $DIR), $AGAIN"
else
  # nodev,nosuid,noexec: the volume holds data only.
  mount -t xfs -o noatime,nodev,nosuid,noexec "$device" "$DIR"
fi

# pcaps hold production payloads: only the capture user writes, only the pcap group reads.
# setgid keeps new files in the group; the capture unit's UMask=0027 makes them 0640.
chown "$CAPTURE_USER:$CAPTURE_GROUP" "$DIR"
chmod 2750 "$DIR"
say "volume $VOLUME_ID ($device, xfs UUID=$uuid) mounted at $DIR"
status mounted "volume $VOLUME_ID ($device) mounted at $DIR"
MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_STORAGE
chmod 0755 '/usr/local/libexec/mirrorcap/storage.mirrorcap-new'
mv -f '/usr/local/libexec/mirrorcap/storage.mirrorcap-new' '/usr/local/libexec/mirrorcap/storage'

cat > '/usr/local/libexec/mirrorcap/recover.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_RECOVER'
#!/bin/bash
# mirrorcap-recover: remount the pcap volume when its file system shut down.
# Started by mirrorcap-recover.timer every minute, and at once by
# mirrorcap-recover.path when a capture's watcher finds the capture directory unreadable (EIO: an impaired EBS volume, or an XFS forced shutdown
# after an I/O error) and asks for it in /run/mirrorcap/recover. It trusts no
# request: it acts only when the directory fails to read here too. A shut-down
# file system stays shut down until it is unmounted; mounting it again replays
# its log. Every unit whose mount namespace holds the capture directory is
# stopped first (a mount that lingers in one would hand the dead file system
# back to the new mount), then storage mounts the volume and the target starts
# capture again; each capture counts its gap from the last packet the volume
# kept. Repeated recoveries back off (a volume that fails again and again is
# not remounted in a loop); what it does goes to /run/mirrorcap/recover.json.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=mirrorcap-lib.sh
. "$(dirname "$(readlink -f "$0")")/../../lib/mirrorcap/mirrorcap-lib.sh"
DIR=${MIRRORCAP_CAPTURE_DIR:?MIRRORCAP_CAPTURE_DIR missing from $ENV_FILE}
REQUESTS=/run/mirrorcap/recover
HISTORY=/run/mirrorcap/recover.history
BACKOFF=(0 5 20 60 300)  # seconds before the 1st, 2nd... remount within 10 minutes

if error=$(LC_ALL=C stat -- "$DIR" 2>&1 >/dev/null); then
  if [ -n "$(ls -A "$REQUESTS" 2>/dev/null)" ]; then  # (the timer's runs find nothing, silently)
    rm -f -- "$REQUESTS"/*
    say "$DIR reads: nothing to recover"
  fi
  exit 0
fi
error=${error##*: }
case $error in
  "No such file or directory" | "Not a directory")
    rm -f -- "$REQUESTS"/*
    say "$DIR is missing ($error): mirrorcap-storage makes it, $AGAIN"
    exit 0 ;;
esac

now=$(date +%s)
recent=0
if [ -r "$HISTORY" ]; then
  while read -r t; do
    if [[ $t =~ ^[0-9]+$ ]] && ((now - t < 600)); then recent=$((recent + 1)); fi
  done <"$HISTORY"
fi
delay=${BACKOFF[$((recent < ${#BACKOFF[@]} ? recent : ${#BACKOFF[@]} - 1))]}
what="the file system of the pcap volume at $DIR failed ($error: shut down, or the volume is impaired)"
if ((delay)); then
  status backing-off "$what; remount $((recent + 1)) in 10 minutes, in ${delay}s"
  say "$what; remounted $recent time(s) in 10 minutes: waiting ${delay}s first"
  sleep "$delay"
fi
echo "$now" >>"$HISTORY"
status recovering "$what: remounting it"
say "$what: stopping what holds it, unmounting it, mounting it again (the mount replays its log)"

mapfile -t holders < <(systemctl list-units --plain --no-legend --state=active,activating,deactivating,reloading \
  'mirrorcap-capture@*.service' mirrorcap-retention.service mirrorcap-archive.service | awk '{ print $1 }')
if ((${#holders[@]})); then systemctl stop "${holders[@]}"; fi
if ! umount "$DIR"; then
  say "umount $DIR failed (a process still uses it: fuser -vm $DIR): detaching it lazily"
  umount -l "$DIR"
fi
rm -f -- "$REQUESTS"/*
systemctl restart mirrorcap-storage.service
systemctl start --no-block mirrorcap.target
say "$DIR mounted again; capture is starting (each capture's gap runs from the last packet the volume kept)"
status recovered "$what; remounted at $(date -u +%FT%TZ)"
MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_RECOVER
chmod 0755 '/usr/local/libexec/mirrorcap/recover.mirrorcap-new'
mv -f '/usr/local/libexec/mirrorcap/recover.mirrorcap-new' '/usr/local/libexec/mirrorcap/recover'

cat > '/usr/local/libexec/mirrorcap/decap.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_DECAP'
#!/bin/bash
# mirrorcap-decap: one vxlan interface per configured VNI on the interface that
# receives the mirrored traffic: the mirror ENI, found by its ENI ID through
# IMDSv2 (never by name), or on a fleet host (an NLB target) its primary ENI
# (device-number 0). Waits, without a deadline, for the metadata service and for
# the ENI's attachment (Terraform attaches it after the instance starts), and says
# which in /run/mirrorcap/decap.json for mirrorcap-health.
# Converges, so the same script is the unit's reload: creates what is missing,
# removes the vxlan interfaces it made for VNIs no longer configured (marked with
# an alias: never anyone else's), and raises the NIC's MTU to what mirrored
# traffic needs (a 9001-byte packet plus VXLAN's 50 arrives whole only there).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=mirrorcap-lib.sh
. "$(dirname "$(readlink -f "$0")")/../../lib/mirrorcap/mirrorcap-lib.sh"
VNIS=${MIRRORCAP_VNIS:?MIRRORCAP_VNIS missing from $ENV_FILE}
VXLAN_PORT=${MIRRORCAP_VXLAN_PORT:?MIRRORCAP_VXLAN_PORT missing from $ENV_FILE}
VXLAN_OVERHEAD=${MIRRORCAP_VXLAN_OVERHEAD:?MIRRORCAP_VXLAN_OVERHEAD missing from $ENV_FILE}
MIRROR_MTU=${MIRRORCAP_MIRROR_MTU:?MIRRORCAP_MIRROR_MTU missing from $ENV_FILE}
VXLAN_IFACE=${MIRRORCAP_VXLAN_IFACE:?MIRRORCAP_VXLAN_IFACE missing from $ENV_FILE}  # vxlan{vni}
MARK=mirrorcap  # the alias of every vxlan interface this script made
ENI_ID=${MIRRORCAP_MIRROR_ENI_ID:-}
if [ -n "$ENI_ID" ]; then
  [[ $ENI_ID =~ ^eni-[0-9a-f]{8}([0-9a-f]{9})?$ ]] || die "MIRRORCAP_MIRROR_ENI_ID=$ENI_ID is not an ENI ID: fix the user data"
  wanted="ENI $ENI_ID"
else
  [ "${MIRRORCAP_TARGET_KIND:-}" = nlb ] || die "MIRRORCAP_MIRROR_ENI_ID missing from $ENV_FILE: fix the user data"
  wanted="the primary ENI (device-number 0)"
fi
for vni in $VNIS; do
  if ! [[ $vni =~ ^[1-9][0-9]{0,7}$ ]] || ((vni > 16777215)); then die "VNI $vni in $ENV_FILE is not 1-16777215 (24 bits, never 0): fix the user data"; fi
done

# The MAC of the ENI the traffic reaches, from IMDSv2, as long as it takes.
mac=""
while :; do
  if imds network/interfaces/macs/; then
    for m in $imds_out; do
      m=${m%/}
      if [ -n "$ENI_ID" ]; then key=interface-id want=$ENI_ID; else key=device-number want=0; fi
      if imds "network/interfaces/macs/$m/$key" && [ "$imds_out" = "$want" ]; then mac=$m; break; fi
    done
    [ -z "$mac" ] || break
    waiting waiting-eni "waiting since $(date -u -d "@$since" +%FT%TZ) for $wanted: the instance metadata (IMDS) lists no such interface yet; capture starts by itself once it is attached (the stack's mirror_eni_attachment)"
  else
    waiting waiting-imds "waiting since $(date -u -d "@$since" +%FT%TZ) for the instance metadata service (IMDS, $IMDS) to find $wanted: it does not answer ($imds_error); capture starts by itself once it does (the instance's metadata options must keep http_endpoint enabled)"
  fi
  sleep 2
done
[ -n "$ENI_ID" ] || { imds "network/interfaces/macs/$mac/interface-id" && ENI_ID=$imds_out; } || ENI_ID="the primary ENI"

iface=""
for d in /sys/class/net/*; do
  if [ "$(cat "$d/address" 2>/dev/null)" = "$mac" ] && [ ! -e "$d/master" ]; then iface=${d##*/}; break; fi
done
[ -n "$iface" ] || die "no network interface has MAC $mac ($ENI_ID), which IMDS names: is its driver loaded? $AGAIN"

# The NIC at the MTU mirrored traffic needs, or at its largest when that is less:
# a frame over the NIC's MTU is dropped before it is decapsulated, uncounted.
mtu=$(cat "/sys/class/net/$iface/mtu")
if ((mtu < MIRROR_MTU)); then
  max_mtu=$(ip -d -j link show dev "$iface" | sed -n 's/.*"max_mtu":\([0-9]*\).*/\1/p')
  set_to=$MIRROR_MTU
  if [ -n "$max_mtu" ] && ((max_mtu < set_to)); then set_to=$max_mtu; fi
  ip link set dev "$iface" mtu "$set_to" || true
  say "$iface ($ENI_ID): MTU $mtu raised to $(cat "/sys/class/net/$iface/mtu")"
  mtu=$(cat "/sys/class/net/$iface/mtu")
fi
if ((mtu < MIRROR_MTU)); then
  say "WARNING: $iface ($ENI_ID) has MTU $mtu, under the $MIRROR_MTU mirrored traffic needs: larger mirrored packets are dropped (mirrorcap-health says so)"
fi
ip link set dev "$iface" up
inner_mtu=$((mtu - VXLAN_OVERHEAD))

for vni in $VNIS; do
  name=${VXLAN_IFACE//"{vni}"/$vni}
  if ip link show dev "$name" >/dev/null 2>&1; then
    details=$(ip -d link show dev "$name")
    if grep -q "vxlan id $vni " <<<"$details" && grep -q "dev $iface " <<<"$details" && grep -q "dstport $VXLAN_PORT " <<<"$details"; then
      :
    elif [ "$(cat "/sys/class/net/$name/ifalias")" = "$MARK" ]; then
      say "$name exists with other settings: recreating it"
      ip link del dev "$name"
    else
      die "$name exists with other settings and mirrorcap did not make it: delete it (ip link del $name), $AGAIN"
    fi
  fi
  if ! ip link show dev "$name" >/dev/null 2>&1; then
    ip link add "$name" type vxlan id "$vni" dstport "$VXLAN_PORT" dev "$iface" nolearning
  fi
  ip link set dev "$name" alias "$MARK" mtu "$inner_mtu"
  # Receive-only: no IPv6 autoconf/DAD/MLD, no ARP, so the host's own packets
  # never land in the captures.
  sysctl -q -w "net.ipv6.conf.$name.disable_ipv6=1" 2>/dev/null || true
  ip link set dev "$name" arp off multicast off
  ip link set dev "$name" up
  say "$name (VNI $vni) on $iface ($ENI_ID, $mac), MTU $inner_mtu"
done

# The VNIs no longer configured: mirrorcap-boot has stopped their capture first.
prefix=${VXLAN_IFACE%%"{vni}"*} suffix=${VXLAN_IFACE#*"{vni}"}
for d in /sys/class/net/"$prefix"*"$suffix"; do
  name=${d##*/} vni=${d##*/"$prefix"}
  vni=${vni%"$suffix"}
  [[ $vni =~ ^[0-9]+$ && $(cat "$d/ifalias" 2>/dev/null) = "$MARK" && " $VNIS " != *" $vni "* ]] || continue
  ip link del dev "$name"
  say "$name removed: VNI $vni is no longer configured (its pcaps stay, under retention)"
done
status ready "VNI(s) $VNIS on $iface ($ENI_ID), MTU $mtu"
MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_DECAP
chmod 0755 '/usr/local/libexec/mirrorcap/decap.mirrorcap-new'
mv -f '/usr/local/libexec/mirrorcap/decap.mirrorcap-new' '/usr/local/libexec/mirrorcap/decap'

cat > '/usr/local/libexec/mirrorcap/capture.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_CAPTURE'
#!/usr/bin/python3
"""mirrorcap-capture VNI: tcpdump on vxlan<VNI> into rotating pcaps, watched; every loss counted.

Run by mirrorcap-capture@<VNI>.service as the capture user with CAP_NET_RAW only.

tcpdump writes buffered (a write per 4 KiB, not per packet: -U costs about
three times the CPU). Every tick the watcher pushes what tcpdump holds to the
pcap with SIGUSR2, but only while tcpdump is stopped inside poll(), waiting for
packets: its handler calls fflush(), which corrupts the pcap if it lands inside
an fwrite(), and a tcpdump parked in poll() is in no fwrite().

Not writing: after one failed write (a full volume, an I/O error) tcpdump never
writes that pcap again, and goes on. A flush delivered while tcpdump waits in
poll() leaves its pcap ending on a whole record; when the interface received,
the pcap did not grow and still ends torn a tick after such a flush, its writes
fail (otherwise: no growth for 2 s while packets arrive). tcpdump is then
stopped, the pcap's torn last record cut off, retention asked for room, and a
new tcpdump started once the volume has room. A tcpdump that dies is started
again at once, after a back-off when it keeps dying young; nothing makes this
give up while the host runs.

Every gap goes to the loss record (state.json in the unit's StateDirectory, which
restarts, failures and reboots keep): from the last packet in the pcap to the
new tcpdump, and at most how many packets it lost (what the interface received
since that packet, from per-tick samples kept in the RuntimeDirectory). Kernel
drops of each tcpdump and truncated packets (an IP length beyond the frame, as
AWS cuts packets over the target's MTU) are counted there too.
Exit 1 when the volume is not mounted (systemd starts the unit again).

Every pcap tcpdump closes (it rotated, or stopped) gets its packet index beside it
(mirrorcap_index.py in a child: niced, without CAP_NET_RAW, one at a time); the
closed pcaps a previous run left without one get it when the watcher starts.
Python 3.9 stdlib only (Amazon Linux 2023's system Python).
"""
import ctypes
import errno
import fnmatch
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time

# The shared module: /usr/local/lib/mirrorcap, from /usr/local/libexec/mirrorcap.
HOST_LIB = os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "lib", "mirrorcap")
sys.path.insert(0, HOST_LIB)
import mirrorcap_host as host  # noqa: E402

TICK = 0.25
FLUSH_SECONDS = 2.0  # flush while packets arrived this recently: the kernel hands a block over within 1 s
STUCK_SECONDS = 2.0  # packets received, none reaching the pcap (and no flush told sooner): not writing
RESUME_FREE_BYTES = 64 << 20  # room needed before a new pcap is started after a full volume
RETENTION_EVERY = 5.0  # how often retention is asked for room while the volume is full
YOUNG_SECONDS = 10.0  # a tcpdump that dies younger than this starts again after a back-off
BACKOFF = (0, 1, 2, 4, 8, 16, 30)
SAMPLES_SECONDS = 120
COARSE_SECONDS = 10  # samples older than SAMPLES_SECONDS: one per this many seconds, back two rotations
KEEP_GAPS = 20
KEEP_RESTARTS = 50
POLL_SYSCALLS = {"x86_64": (7, 271), "aarch64": (73,)}  # poll, ppoll: where libpcap waits
COUNTERS = re.compile(r"(\d+) packets? captured[,\s]+(\d+) packets? received by filter[,\s]+(\d+) packets? dropped by kernel")
TRUNCATED = "(ip and ip[2:2] + 14 > len) or (ip6 and ip6[4:2] + 54 > len)"


def log(message):
    print("mirrorcap-capture: " + message, file=sys.stderr, flush=True)


def die(message):
    log(message)
    sys.exit(1)


def free_bytes(directory):
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def volume_error(directory):
    """The error reading the mounted volume gives (EIO: its file system shut down, the volume is
    impaired), None when it reads (or is simply not there: not this function's business)."""
    try:
        os.stat(directory)
        return None
    except OSError as e:
        return None if e.errno in (errno.ENOENT, errno.ENOTDIR) else e


def iface_counter(iface, name):
    try:
        with open("/sys/class/net/%s/%s" % (iface, name)) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


class Samples:
    """(time, packets received by the interface) every tick: how many arrived since any
    recent moment. In the RuntimeDirectory, for the next run after a crash; the
    tick's save is also the heartbeat health reads."""

    def __init__(self, path, iface, keep=SAMPLES_SECONDS):
        self.path, self.iface, self.keep = path, iface, max(keep, SAMPLES_SECONDS)
        old = host.read_json(path, {})
        self.points = [tuple(p) for p in old.get("points", [])] if old.get("ifindex") == iface_counter(iface, "ifindex") else []

    def add(self, t, rx):
        # Fine for the last SAMPLES_SECONDS, coarse back to `keep`: a gap can start where the last
        # durable packet was, long before it was seen (a file system that shut down loses its pcap).
        fine, kept = t - SAMPLES_SECONDS, []
        for point in self.points:
            if point[0] >= t - self.keep and (point[0] >= fine or not kept or point[0] - kept[-1][0] >= COARSE_SECONDS):
                kept.append(point)
        self.points = kept + [(t, rx)]
        host.write_json(self.path, dict(ifindex=iface_counter(self.iface, "ifindex"), heartbeat=t, points=self.points))

    def before(self, t):
        """(time, count) of the last sample at or before t, None when none is that old."""
        found = None
        for point in self.points:
            if point[0] > t:
                break
            found = point
        return found

    def quiet_until(self, t, rx):
        """The last sample time from t on at which the count was still rx: nothing arrived before it."""
        last = t
        for point in self.points:
            if point[0] >= t and point[1] <= rx:
                last = point[0]
        return last


class Record:
    """The loss record: state.json in the StateDirectory (restarts, failures and reboots keep it)."""

    def __init__(self, path):
        self.path = path
        self.data = host.read_json(path, {})
        for key, value in (("gaps", []), ("gaps_total", 0), ("lost_packets_total", 0), ("lost_unknown_gaps", 0),
                           ("kernel_drops_total", 0), ("truncated_total", 0), ("restarts", []), ("gap", None)):
            self.data.setdefault(key, value)

    def save(self):
        host.write_json(self.path, self.data)

    def open_gap(self, reason, start, rx_start, ifindex):
        if self.data["gap"] is None:
            self.data["gap"] = dict(start=start, reason=reason, rx_start=rx_start, ifindex=ifindex)
            log("NOT WRITING since %s: %s" % (time.strftime("%H:%M:%S", time.gmtime(start)), reason))
        self.data.update(writing=False, pid=None)
        self.save()

    def close_gap(self, end, rx_end, ifindex):
        gap, self.data["gap"] = self.data["gap"], None
        if gap is not None:
            rx_start = gap.pop("rx_start")
            known = rx_start is not None and gap.pop("ifindex") == ifindex and rx_end >= rx_start
            lost = rx_end - rx_start if known else None
            gap.update(end=end, lost_packets_max=lost)
            self.data["gaps"] = (self.data["gaps"] + [gap])[-KEEP_GAPS:]
            self.data["gaps_total"] += 1
            if known:
                self.data["lost_packets_total"] += lost
            else:
                self.data["lost_unknown_gaps"] += 1
            log("writing again after %.1fs (%s): %s packets lost" % (end - gap["start"], gap["reason"],
                                                                    "at most %d" % lost if known else "an unknown number of"))
        self.save()

    def restarted(self, reason):
        self.data["restarts"] = (self.data["restarts"] + [[time.time(), reason[:200]]])[-KEEP_RESTARTS:]


class Tcpdump:
    def __init__(self, command, log_path):
        self.command, self.log_path = command, log_path
        with open(log_path, "ab") as logf:
            self.log_offset = logf.tell()
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=logf,
                                         preexec_fn=self.die_with_parent)
        self.pid, self.started, self.switches_at_flush = self.proc.pid, time.monotonic(), -1
        # A signal before tcpdump installs its handlers (health's SIGUSR1, the flush's
        # SIGUSR2) would kill it: wait for "listening on", printed after it set them up.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None and not self.listening():
            time.sleep(0.02)

    def listening(self):
        return b"listening on" in self.log()

    @staticmethod
    def die_with_parent():  # PR_SET_PDEATHSIG: a killed watcher takes its tcpdump with it (flushed)
        ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                return f.read()
        except OSError:
            return b""

    def counters(self):
        """(captured, received, dropped) as tcpdump last printed them, None before it did."""
        found = COUNTERS.findall(self.log().decode(errors="replace"))
        return tuple(int(x) for x in found[-1]) if found else None

    def open_pcap(self, directory):
        """(path, size) of the pcap tcpdump has open, or None."""
        fd_dir = "/proc/%d/fd" % self.pid
        try:
            for fd in os.listdir(fd_dir):
                try:
                    target = os.readlink(os.path.join(fd_dir, fd))
                except OSError:
                    continue
                if target.startswith(directory + "/") and target.endswith(".pcap"):
                    return target, os.stat(target).st_size
        except OSError:
            pass
        return None

    def state(self):
        """tcpdump's process state (R, S, D, T, t...), None when it is gone."""
        try:
            with open("/proc/%d/stat" % self.pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return None

    def flush(self):
        """SIGUSR2 (flush) while tcpdump is stopped in poll(): never inside an fwrite(). A tcpdump
        someone else stopped (SIGSTOP, a debugger) is left as it is: continuing it is not ours to do."""
        if self.state() in ("T", "t"):
            return False
        try:
            os.kill(self.pid, signal.SIGSTOP)
        except OSError:
            return False
        try:
            for _ in range(200):
                with open("/proc/%d/stat" % self.pid) as f:
                    if f.read().rsplit(")", 1)[1].split()[0] in ("T", "t"):
                        break
                time.sleep(0.0005)
            else:
                return False
            with open("/proc/%d/syscall" % self.pid) as f:
                nr = f.read().split()[0]
            if nr.isdigit() and int(nr) in POLL_SYSCALLS.get(os.uname().machine, ()):
                os.kill(self.pid, signal.SIGUSR2)
                return True
            return False
        except OSError:
            return False
        finally:
            try:
                os.kill(self.pid, signal.SIGCONT)
                self.switches_at_flush = self.switches()
            except OSError:
                pass

    def switches(self):
        """Times tcpdump blocked (it blocks in poll() again once its flush handler ran)."""
        try:
            with open("/proc/%d/status" % self.pid) as f:
                return int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", f.read(), re.M).group(1))
        except (OSError, AttributeError):
            return -1

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            if self.state() in ("T", "t"):  # held stopped: it takes the SIGTERM once continued
                try:
                    os.kill(self.pid, signal.SIGCONT)
                except OSError:
                    pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self):
        return " ".join(self.log().decode(errors="replace").strip().splitlines()[-1:])


class TruncationCounter:
    """Packets whose IP length runs past the frame (cut short before they reached the host),
    counted by the kernel on a packet socket with a filter that keeps only those."""

    def __init__(self, iface):
        lines = subprocess.run(["tcpdump", "-ddd", "-y", "EN10MB", TRUNCATED], capture_output=True, text=True,
                               check=True).stdout.split("\n")
        program = b"".join(struct.pack("HBBI", *map(int, line.split())) for line in lines[1:int(lines[0]) + 1])
        self.program = ctypes.create_string_buffer(program)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: nothing until bound
        self.sock.setsockopt(socket.SOL_SOCKET, 26, struct.pack("HL", int(lines[0]), ctypes.addressof(self.program)))
        self.sock.bind((iface, 3))  # ETH_P_ALL on this interface only
        self.sock.setblocking(False)

    def count(self):
        """Matching packets since the last call (PACKET_STATISTICS resets on read)."""
        for _ in range(10000):
            try:
                self.sock.recv(1)
            except OSError:
                break
        packets, _drops = struct.unpack("II", self.sock.getsockopt(263, 6, 8))  # SOL_PACKET, PACKET_STATISTICS
        return packets


class Indexer:
    """The packet index of each closed pcap, written by one child at a time: a burst of
    rotations never takes more than one core from tcpdump. A pcap it could not index
    gets NAME.idx-failed (mirrorcap_index.py writes it), which health reports."""

    SUFFIXES = (host.INDEX_SUFFIX, host.INDEX_FAILED_SUFFIX)
    # numpy's BLAS would start a thread per CPU at import: the indexer needs none (one core at most)
    ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")

    RETRY = (30, 60, 120, 300, 600)  # seconds before indexing again a pcap whose index could not be written

    def __init__(self, vni):
        self.vni = vni  # what the index says its packets came in on (not read back from the name)
        self.queue, self.proc, self.current, self.retries = [], None, None, {}  # retries: path -> (due, attempts)

    def add(self, path, again=False):
        """Index `path` when it has none; `again`: even then (it was just closed: an index written
        while tcpdump still wrote it, by `mirrorcap find --dir` on the host, is of part of it)."""
        if path and path not in self.queue and (again or not any(os.path.exists(path + s) for s in self.SUFFIXES)):
            self.queue.append(path)

    def tick(self):
        if self.proc is not None and self.proc.poll() is None:
            return
        if self.proc is not None:
            self.finished(self.current, self.proc.returncode)
        self.proc = self.current = None
        now = time.monotonic()
        for path, (due, _) in list(self.retries.items()):
            if due <= now:
                self.add(path, again=True)
        while self.queue:
            path = self.queue.pop(0)
            if os.path.exists(path):
                self.current = path
                try:
                    self.proc = subprocess.Popen([sys.executable, os.path.join(HOST_LIB, "mirrorcap_index.py"), "--vni", str(self.vni), path],
                                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=self.weaken,
                                                 env=self.ENV)
                except OSError as e:
                    log("cannot index %s: %s" % (os.path.basename(path), e))
                    continue
                return

    def finished(self, path, code):
        """A pcap the child could not index for want of room (a full volume: its index, or even its
        failure marker, could not be written) is indexed again later, with a back-off; one it could
        not index for what it holds is not (the marker says why)."""
        try:
            with open(path + self.SUFFIXES[1]) as f:
                why = f.read()
        except OSError:
            why = None if os.path.exists(path + self.SUFFIXES[0]) else "no index and no marker"
        if code == 0 or why is None or not ("No space left" in why or "Disk quota" in why or why == "no index and no marker"):
            self.retries.pop(path, None)
            return
        if not os.path.exists(path):
            self.retries.pop(path, None)
            return
        attempts = self.retries.get(path, (0, 0))[1]
        self.retries[path] = (time.monotonic() + self.RETRY[min(attempts, len(self.RETRY) - 1)], attempts + 1)
        log("%s: not indexed (%s): trying again in %ds" % (os.path.basename(path), why.strip()[:200],
                                                            self.RETRY[min(attempts, len(self.RETRY) - 1)]))

    @staticmethod
    def weaken():
        """The child parses what the network sent: lower priority than tcpdump, no capability
        (PR_CAP_AMBIENT_CLEAR_ALL: a user's exec keeps none), gone with the watcher."""
        os.nice(10)
        libc = ctypes.CDLL(None)
        libc.prctl(47, 4, 0, 0, 0)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


class Capture:
    def __init__(self, vni, run_dir):
        self.vni, self.iface, self.run_dir = vni, host.vxlan_iface(host.read_env(), vni), run_dir
        self.log_path = os.path.join(run_dir, "tcpdump.log")
        self.flag = os.path.join(run_dir, "not-writing")  # retention may then take this VNI's newest pcap
        # mirrorcap-recover.path starts the root repair when this directory holds a file
        self.recover_flag = os.path.join(os.path.dirname(run_dir), "recover", vni)
        self.failed_volume = None
        self.record = Record(host.capture_state_file(vni))
        self.tcpdump = self.truncation = self.samples = self.watched = None
        self.indexer = Indexer(vni)
        self.stopping = self.reload_requested = False
        self.need_room = False
        self.young_deaths = 0
        self.next_start = self.last_retention = 0.0
        self.load_settings()

    def load_settings(self):
        env = host.read_env()
        self.directory = env["MIRRORCAP_CAPTURE_DIR"]
        self.rotate_seconds = int(env["MIRRORCAP_ROTATE_SECONDS"])
        self.retention = env["MIRRORCAP_RETENTION_COMMAND"].split()
        self.name_pattern = host.pcap_pattern(env["MIRRORCAP_PCAP_PATTERN"], self.vni)
        self.name_glob = host.pcap_glob(env["MIRRORCAP_PCAP_PATTERN"], self.vni)
        self.command = ["tcpdump", "-i", self.iface, "-Q", "in", "-n",
                        "-B", env["MIRRORCAP_BUFFER_KIB"], "-s", env["MIRRORCAP_SNAPLEN"],
                        "-G", env["MIRRORCAP_ROTATE_SECONDS"],
                        # strftime, in UTC (the unit sets TZ=UTC)
                        "-w", os.path.join(self.directory, host.pcap_pattern(env["MIRRORCAP_PCAP_PATTERN"], self.vni))]

    # -- the loss record -------------------------------------------------------------
    def last_packet(self, path):
        """Time of the last whole packet in `path` (or, if none, in the VNI's previous pcap)."""
        try:
            names = self.pcaps()
        except OSError:
            return None  # the volume cannot be read: the gap is moved back when it can (start)
        if path:
            names = [n for n in names if n <= os.path.basename(path)]
        for name in reversed(names[-2:]):
            try:
                ts = host.pcap_end(os.path.join(self.directory, name))[1]
            except OSError:
                continue
            if ts is not None:
                return ts
        return None

    def open_gap(self, reason, path):
        """From the last packet written: the first lost one arrived after it, and after the
        interface's count last stood where it stood then."""
        if self.record.data["gap"] is not None:
            return
        now, last = time.time(), self.last_packet(path)
        point = self.samples.before(last if last is not None else now)
        start = self.samples.quiet_until(point[0], point[1]) if point else (last or now)
        self.record.open_gap(reason, max(start, last or 0), point[1] if point else None, iface_counter(self.iface, "ifindex"))

    def back_to_durable(self):
        """An open gap starts where the last packet still on the volume ends: packets a tcpdump wrote
        that did not last (a file system that shut down drops what it had not written out, and the
        pcap with it) were lost too."""
        gap, last = self.record.data["gap"], self.last_packet(None)
        if last is None:  # not one packet left: the last tcpdump's pcaps are gone from its start on
            last = self.record.data.get("since")
        if gap is None or last is None or last >= gap["start"] or gap.get("rx_start") is None:
            return
        point = self.samples.before(last)
        # No sample that old: the gap lost an unknown number (counted as such, never as too few).
        start, rx_start = (max(self.samples.quiet_until(point[0], point[1]), last), point[1]) if point else (last, None)
        if (start, rx_start) != (gap["start"], gap["rx_start"]):
            gap.update(start=start, rx_start=rx_start)
            log("the gap starts at %s: the last packet still on the volume" % time.strftime("%H:%M:%S", time.gmtime(start)))
            self.record.save()

    def volume_failed(self):
        """True while the volume does not read (EIO: its file system shut down). tcpdump is stopped,
        the gap opened, and mirrorcap-recover asked to remount it (it stops this unit first); the
        watcher waits for that, beating, instead of dying into a restart loop."""
        error = volume_error(self.directory)
        if error is None:
            return False
        if self.failed_volume is None:
            self.failed_volume = error
            reason = ("the pcap volume's file system failed (%s: shut down, or the volume is impaired); "
                      "mirrorcap-recover remounts it" % (error.strerror or error))
            log("%s: %s" % (self.directory, reason))
            if self.tcpdump is not None:
                tcpdump, self.tcpdump = self.tcpdump, None
                tcpdump.stop()
                self.account(tcpdump)
            self.open_gap(reason, (self.watched or (None,))[0])
            self.record.restarted(reason)
            self.record.save()
            try:
                with open(self.recover_flag, "w") as f:
                    f.write("%s\n" % error)
            except OSError as e:
                log("cannot ask mirrorcap-recover for the remount (%s): systemctl start mirrorcap-recover.service" % e)
        return True

    def account(self, tcpdump):
        """A tcpdump that is gone: its kernel drops, as it last printed them."""
        counters = tcpdump.counters()
        if counters:
            self.record.data["kernel_drops_total"] += counters[2]

    def set_flag(self, on):
        if on:
            with open(self.flag, "w") as f:
                f.write("%d\n" % RESUME_FREE_BYTES)
        elif os.path.exists(self.flag):
            os.unlink(self.flag)

    # -- tcpdump -----------------------------------------------------------------------
    def start(self):
        if not os.path.isdir("/sys/class/net/" + self.iface):
            if self.record.data.get("waiting") != self.iface:
                log("%s does not exist yet: waiting for it (mirrorcap-decap creates it)" % self.iface)
                self.record.data["waiting"] = self.iface
                self.record.save()
            return
        if not host.on_its_own_volume(self.directory):
            die("%s is not a mounted volume: waiting for mirrorcap-storage (refusing to write pcaps to the root "
                "volume); systemd starts this unit again" % self.directory)
        self.record.data["waiting"] = None
        self.back_to_durable()
        ifindex = iface_counter(self.iface, "ifindex")
        if self.truncation is None or self.truncation[0] != ifindex:
            try:
                self.truncation = (ifindex, TruncationCounter(self.iface))
            except (OSError, subprocess.CalledProcessError) as e:
                self.truncation = None
                log("truncated packets are not counted: %s" % e)
        # tcpdump names its file by the second it opens it, and opens it for writing: started
        # twice in one second (a kill, a restart) it would empty the file it wrote a moment ago.
        while os.path.exists(os.path.join(self.directory, time.strftime(self.name_pattern, time.gmtime()))):
            time.sleep(1.02 - time.time() % 1)
        self.tcpdump = Tcpdump(self.command, self.log_path)
        if not self.tcpdump.listening():
            return  # the next tick sees it die
        rx = iface_counter(self.iface, "statistics/rx_packets")
        self.record.close_gap(time.time(), rx, ifindex)
        self.record.data.update(writing=True, pid=self.tcpdump.pid, since=time.time())
        self.record.save()
        self.set_flag(False)
        self.watched, self.rx_at_growth, self.pending = None, rx, None
        self.last_rx, self.rx_changed, self.flushed = rx, 0.0, False
        log("tcpdump (pid %d) capturing %s into %s" % (self.tcpdump.pid, self.iface, self.directory))

    def lose(self, reason, restart_in=0.0, room=False):
        """tcpdump is gone or no longer writes: stop it, record the gap, repair its pcap."""
        tcpdump, self.tcpdump = self.tcpdump, None
        path = (self.watched or (None,))[0]
        tcpdump.stop()
        self.account(tcpdump)
        self.open_gap(reason, path)
        self.record.restarted(reason)
        self.record.save()
        try:
            self.repair(path)
            self.need_room = room or free_bytes(self.directory) < RESUME_FREE_BYTES
        except OSError as e:  # the volume failed under it: the next tick's volume_failed() says so
            log("cannot repair %s: %s" % (path, e))
            self.need_room = room
        if path and os.path.exists(path):
            self.indexer.add(path, again=True)
        self.set_flag(self.need_room)
        self.next_start = time.monotonic() + restart_in

    def room(self):
        """True once the volume has room again; asks retention for it meanwhile."""
        if not host.on_its_own_volume(self.directory):
            die("%s is no longer a mounted volume" % self.directory)
        if free_bytes(self.directory) >= RESUME_FREE_BYTES:
            self.need_room = False
            return True
        if time.monotonic() - self.last_retention >= RETENTION_EVERY:
            self.last_retention = time.monotonic()
            try:
                subprocess.run(self.retention, stdin=subprocess.DEVNULL, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as e:
                log("retention failed: %s" % e)
        return False

    def beat(self):
        """Every tick, whatever the state: the interface's count (the heartbeat health reads)
        and the truncated packets."""
        rx = iface_counter(self.iface, "statistics/rx_packets")
        if rx is not None:
            self.samples.add(time.time(), rx)
        if self.truncation:
            n = self.truncation[1].count()
            if n:
                self.record.data["truncated_total"] += n
                self.record.save()
        return rx

    def why_stuck(self, free):
        """Why the pcap stopped growing, from what can be seen: the room left, tcpdump's state."""
        state = self.tcpdump.state()
        if free < RESUME_FREE_BYTES:
            return "volume full"
        if state in ("T", "t"):
            return ("tcpdump (pid %d) is held stopped (state %s: a SIGSTOP or a debugger not from mirrorcap); "
                    "it is replaced" % (self.tcpdump.pid, state))
        if state == "D":
            return ("tcpdump (pid %d) hangs in the kernel (state D: a write the volume does not complete); it is replaced"
                    % self.tcpdump.pid)
        return "tcpdump (pid %d, state %s) writes nothing with room left: a write error (I/O) or a hung tcpdump; " \
               "it is replaced" % (self.tcpdump.pid, state)

    def tick(self):
        if self.volume_failed():
            return
        now, rx = time.time(), self.beat()
        if rx is None:  # the interface is gone (decap recreated or removed it)
            return self.lose("%s disappeared" % self.iface)
        code = self.tcpdump.proc.poll()
        if code is not None:
            how = "killed by signal %d" % -code if code < 0 else "exited with %d" % code
            young = time.monotonic() - self.tcpdump.started < YOUNG_SECONDS
            self.young_deaths = self.young_deaths + 1 if young else 0
            return self.lose("tcpdump %s: %s" % (how, self.tcpdump.tail()),
                             BACKOFF[min(self.young_deaths, len(BACKOFF) - 1)])
        current = self.tcpdump.open_pcap(self.directory)
        if current is not None and current != self.watched:
            if self.watched is not None and self.watched[0] != current[0]:
                self.indexer.add(self.watched[0], again=True)  # rotated: tcpdump closed it
            self.watched, self.rx_at_growth, self.pending = current, rx, None
        elif rx > self.rx_at_growth:
            self.pending = self.pending or now
            # Torn after a flush that ran (tcpdump blocked again since): the flush could not write.
            torn = (self.flushed and current is not None and self.tcpdump.switches() > self.tcpdump.switches_at_flush
                    and host.pcap_end(current[0])[0] < current[1])
            if torn or now - self.pending >= STUCK_SECONDS:
                free = free_bytes(self.directory)
                return self.lose("%s stopped growing while %s received %d packets (%d MiB free): %s"
                                 % (os.path.basename(current[0]) if current else "the pcap", self.iface,
                                    rx - self.rx_at_growth, free >> 20, self.why_stuck(free)), room=free < RESUME_FREE_BYTES)
        if rx != self.last_rx:
            self.last_rx, self.rx_changed = rx, now
        # What tcpdump holds of recent packets, onto the volume (checked at the next tick).
        self.flushed = now - self.rx_changed <= FLUSH_SECONDS and self.tcpdump.flush()

    # -- the watch ---------------------------------------------------------------------
    def take_over(self, rebooted):
        """What the previous run left: a gap it opened, or it stopped (or died, or the host went down)
        writing. `rebooted`: its samples are gone, /run is new (nothing else removes them)."""
        previous = self.record.data
        if previous.get("gap") is None and previous.get("writing") is not None:
            if rebooted:
                reason = "the host restarted"
            elif previous.get("writing"):
                reason = "the capture unit's watcher died (killed, or crashed: journalctl -u mirrorcap-capture@%s)" % self.vni
                self.record.restarted(reason)
            else:
                reason = "capture was stopped (systemctl stop or restart)"
            self.open_gap(reason, None)
        self.repair(None)
        for name in os.listdir(self.directory):
            if fnmatch.fnmatch(name, self.name_glob + "*.tmp"):  # an index a kill cut short
                os.unlink(os.path.join(self.directory, name))
        for name in reversed(self.pcaps()):  # newest first: the likeliest to be asked for
            self.indexer.add(os.path.join(self.directory, name))

    def pcaps(self):
        """This VNI's pcaps, oldest first (their names carry their UTC start time)."""
        return sorted(n for n in os.listdir(self.directory) if fnmatch.fnmatch(n, self.name_glob))

    def repair(self, path):
        """Cut the torn tail of the pcap tcpdump wrote (and of the VNI's newest: it may have rotated)."""
        newest = self.pcaps()[-1:]
        for p in {path} | {os.path.join(self.directory, n) for n in newest}:
            if p and os.path.exists(p):
                cut = host.repair(p)
                if cut:
                    log("%s: cut its torn last record (%d bytes)" % (os.path.basename(p), cut))

    def run(self):
        signal.signal(signal.SIGTERM, self.on_stop)
        signal.signal(signal.SIGINT, self.on_stop)
        signal.signal(signal.SIGHUP, self.on_reload)
        path = os.path.join(self.run_dir, "rx.json")
        rebooted = not os.path.exists(path)
        for name in os.listdir(self.run_dir):
            if name.endswith(".tmp"):  # a write a kill cut short
                os.unlink(os.path.join(self.run_dir, name))
        self.samples = Samples(path, self.iface, 2 * self.rotate_seconds + SAMPLES_SECONDS)
        if volume_error(self.directory) is None:  # else: the loop waits for mirrorcap-recover
            if not host.on_its_own_volume(self.directory):
                die("%s is not a mounted volume: waiting for mirrorcap-storage (refusing to write pcaps to the root "
                    "volume); systemd starts this unit again" % self.directory)
            self.take_over(rebooted)
        while not self.stopping:
            if self.reload_requested:
                self.reload()
            if self.volume_failed():
                self.beat()
                time.sleep(TICK)
                continue
            self.indexer.tick()
            if self.tcpdump is None:
                self.beat()
                if self.need_room and not self.room() or time.monotonic() < self.next_start:
                    time.sleep(TICK)
                    continue
                self.start()
                if self.tcpdump is None:
                    time.sleep(1)  # waiting for the interface
                continue
            time.sleep(TICK)
            if not self.stopping:
                self.tick()
        self.stop()

    def reload(self):
        """SIGHUP (systemctl reload): the env file again; tcpdump restarts only if its command changed."""
        self.reload_requested = False
        old = self.command
        self.load_settings()
        if self.command == old:
            log("reloaded: settings unchanged")
        elif self.tcpdump is not None:
            self.lose("settings changed: %s" % " ".join(self.command))

    def stop(self):
        self.indexer.stop()
        if self.tcpdump is not None:
            tcpdump, self.tcpdump = self.tcpdump, None
            tcpdump.stop()
            self.account(tcpdump)
        self.record.data.update(writing=False, pid=None, stopped=time.time())
        self.record.save()
        log("stopped")

    def on_stop(self, signum, frame):
        self.stopping = True

    def on_reload(self, signum, frame):
        self.reload_requested = True


def main(argv):
    if len(argv) != 2 or not (re.fullmatch(r"[0-9]{1,8}", argv[1]) and host.VNI_MIN <= int(argv[1]) <= host.VNI_MAX):
        print("usage: mirrorcap-capture VNI (run by mirrorcap-capture@VNI.service)", file=sys.stderr)
        return 2
    run_dir = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]  # the unit's first: capture-VNI
    if not run_dir or not os.environ.get("STATE_DIRECTORY"):
        die("RUNTIME_DIRECTORY/STATE_DIRECTORY are not set: start me with systemctl start mirrorcap-capture@%s" % argv[1])
    try:
        Capture(argv[1], run_dir).run()
    except (OSError, KeyError) as e:
        die("cannot capture: %s" % e)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_CAPTURE
chmod 0755 '/usr/local/libexec/mirrorcap/capture.mirrorcap-new'
mv -f '/usr/local/libexec/mirrorcap/capture.mirrorcap-new' '/usr/local/libexec/mirrorcap/capture'

cat > '/usr/local/libexec/mirrorcap/capture-backoff.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_CAPTURE_BACKOFF'
#!/bin/bash
# mirrorcap-capture-backoff VNI: start a capture unit again, later each time, when
# systemd could not even set up its sandbox. The capture unit restarts for ever,
# two seconds after it stops, except after exit status 226/NAMESPACE
# (RestartPreventExitStatus=): its mount namespace cannot be made on a pcap volume
# whose file system failed, and retrying every two seconds is a hot loop that
# changes nothing. Such a failure starts this (OnFailure=); it waits 2, 4, 8, 16,
# 32, then 60 s by the failures of the last 10 minutes, never past the moment the
# capture directory reads again (the volume was remounted) or the unit was started
# by someone else, then starts the unit. It never gives up: each failure comes back
# here (mirrorcap-health says "flapping", and names the I/O error first).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=mirrorcap-lib.sh
. "$(dirname "$(readlink -f "$0")")/../../lib/mirrorcap/mirrorcap-lib.sh"
vni=${1:?usage: capture-backoff VNI}
[[ $vni =~ ^[1-9][0-9]{0,7}$ ]] || die "not a VNI: $vni"
DIR=${MIRRORCAP_CAPTURE_DIR:?MIRRORCAP_CAPTURE_DIR missing from $ENV_FILE}
unit=mirrorcap-capture@$vni.service
HISTORY=/run/mirrorcap/capture-backoff.$vni  # mirrorcap-health counts these starts as restarts
DELAYS=(2 4 8 16 32 60)

# OnFailure= also fires when the unit never ran (storage or decap failed: "Dependency failed"); those
# units have their own waits and remedies, and starting capture again would only start them again.
if [ "$(systemctl show -p Result --value "$unit")" != exit-code ] ||
   [ "$(systemctl show -p ExecMainStatus --value "$unit")" != 226 ] ||
   ! systemctl is-active --quiet mirrorcap-storage.service || ! systemctl is-active --quiet mirrorcap-decap.service; then
  exit 0
fi
install -d -m 0755 /run/mirrorcap
now=$(date +%s)
kept=()  # the starts of the last 10 minutes: the file never grows past them
if [ -r "$HISTORY" ]; then
  while read -r t; do
    if [[ $t =~ ^[0-9]+$ ]] && ((now - t < 600)); then kept+=("$t"); fi
  done <"$HISTORY"
fi
recent=${#kept[@]}
printf '%s\n' "${kept[@]}" "$now" >"$HISTORY.tmp"
mv -f -- "$HISTORY.tmp" "$HISTORY"
delay=${DELAYS[$((recent < ${#DELAYS[@]} ? recent : ${#DELAYS[@]} - 1))]}
volume_failed=false
stat -- "$DIR" >/dev/null 2>&1 || volume_failed=true
say "$unit could not set up its sandbox ($((recent + 1)) time(s) in 10 minutes$($volume_failed && echo ": $DIR does not read")): starting it again in ${delay}s"
for ((i = 0; i < delay * 4; i++)); do
  systemctl is-enabled --quiet "$unit" || exit 0  # mirrorcap-boot removed this VNI meanwhile
  if $volume_failed && stat -- "$DIR" >/dev/null 2>&1; then break; fi
  case $(systemctl show -p ActiveState --value "$unit") in active | activating | reloading) exit 0 ;; esac
  sleep 0.25
done
systemctl start --no-block "$unit"
MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_CAPTURE_BACKOFF
chmod 0755 '/usr/local/libexec/mirrorcap/capture-backoff.mirrorcap-new'
mv -f '/usr/local/libexec/mirrorcap/capture-backoff.mirrorcap-new' '/usr/local/libexec/mirrorcap/capture-backoff'

cat > '/usr/local/libexec/mirrorcap/retention.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_RETENTION'
#!/bin/bash
# mirrorcap-retention: delete pcaps older than MIRRORCAP_RETENTION_DAYS, and the
# oldest pcaps while free space is under the floor. Only regular files named
# like mirrorcap's pcaps, directly in the capture directory; never the newest
# file of a VNI that is being captured (tcpdump is writing it: deleting it would
# free nothing and lose what is written next). The newest file of a VNI that is
# no longer configured, or whose capture has stopped writing on a full volume
# (its not-writing flag), is not being written and goes like any other; such a
# capture also needs room to start again: the floor is then at least that.
# Deleting for space happens only when it can reach its goal: when files
# mirrorcap did not write fill the volume, deleting pcaps would lose them and
# free too little; retention then deletes none and says what fills the volume.
# Logs every deletion. Runs as the capture user, who owns the directory: every
# minute (its timer), and from a capture that found the volume full; one at a time.
# A pcap's packet index (or the note that it failed) goes with it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=mirrorcap-lib.sh
. "$(dirname "$(readlink -f "$0")")/../../lib/mirrorcap/mirrorcap-lib.sh"
DIR=${MIRRORCAP_CAPTURE_DIR:?MIRRORCAP_CAPTURE_DIR missing from $ENV_FILE}
DAYS=${MIRRORCAP_RETENTION_DAYS:?MIRRORCAP_RETENTION_DAYS missing from $ENV_FILE}
VNIS=${MIRRORCAP_VNIS:?MIRRORCAP_VNIS missing from $ENV_FILE}
PATTERN=${MIRRORCAP_PCAP_PATTERN:?MIRRORCAP_PCAP_PATTERN missing from $ENV_FILE}
MIN_FREE_PERCENT=${MIRRORCAP_MIN_FREE_PERCENT:-0}
MIN_FREE_GIB=${MIRRORCAP_MIN_FREE_GIB:-0}
NOW=$(date +%s)
RUN=/run/mirrorcap

log() { say "$@"; }
# delete NAME: a pcap and its index.
delete() { rm -f -- "$DIR/$1" "$DIR/$1$INDEX_SUFFIX" "$DIR/$1$INDEX_FAILED_SUFFIX"; }
# The names of VNI $1's pcaps (* = every VNI's): the capture's strftime pattern
# with each %X as * (as mirrorcap_host.pcap_glob derives it for the Python scripts).
pcap_glob() { local g=${PATTERN//"{vni}"/$1}; echo "${g//%?/*}"; }
[ -d "$DIR" ] || { log "$DIR does not exist (mirrorcap-storage has not run): nothing to do"; exit 0; }
# Device numbers, not mountpoint(1): ReadWritePaths= bind-mounts the directory in
# this unit, which mountpoint would take for the volume.
if [ "$(stat -c %d "$DIR")" = "$(stat -c %d "$DIR/..")" ]; then
  log "$DIR is not a mounted volume (check mirrorcap-storage): nothing to do"
  exit 0
fi

exec 9<"$DIR"
flock 9  # the timer's run and a capture's run, one after the other

# mtime (integer seconds), size and name, oldest first; -maxdepth 1 and -type f
# keep subdirectories, symlinks and anything else out of reach.
mapfile -t files < <(find "$DIR" -maxdepth 1 -type f -name "$(pcap_glob '*')" -printf '%T@ %s %f\n' | sort -n -k1,1 -k3,3)

declare -A glob=() newest=()
need=0
for vni in $VNIS; do
  flag=$RUN/capture-$vni/not-writing
  if [ -r "$flag" ]; then
    read -r bytes <"$flag" || true
    [[ ${bytes:-} =~ ^[0-9]+$ ]] && ((bytes > need)) && need=$bytes
    continue  # not writing: its newest pcap is not protected
  fi
  glob[$vni]=$(pcap_glob "$vni")
done
for entry in "${files[@]}"; do
  name=${entry#* * }
  for vni in "${!glob[@]}"; do
    # shellcheck disable=SC2053  # the right side is a glob
    if [[ $name == ${glob[$vni]} ]]; then newest[$vni]=$name; fi
  done
done
protected() {
  local vni
  for vni in "${!newest[@]}"; do [ "${newest[$vni]}" != "$1" ] || return 0; done
  return 1
}

deleted=0
remaining=()
deletable=0
cutoff=$((NOW - DAYS * 86400))
for entry in "${files[@]}"; do
  read -r mtime bytes name <<<"$entry"
  mtime=${mtime%%.*}
  if ((mtime < cutoff)) && ! protected "$name"; then
    delete "$name"
    log "deleted $name (older than $DAYS days)"
    deleted=$((deleted + 1))
  else
    remaining+=("$name")
    protected "$name" || deletable=$((deletable + bytes))
  fi
done

read -r size avail < <(df -P -B1 "$DIR" | awk 'NR == 2 { print $2, $4 }')
floor=$((size * MIN_FREE_PERCENT / 100))
((floor >= MIN_FREE_GIB * 1073741824)) || floor=$((MIN_FREE_GIB * 1073741824))
((floor >= need)) || floor=$need
why="free space under ${MIN_FREE_PERCENT}% / ${MIN_FREE_GIB} GiB"
if ((need)); then why+=", or the $((need >> 20)) MiB a capture needs to write again"; fi
if ((avail + deletable < floor)) && ((need)) && ((avail + deletable >= need)); then
  floor=$need  # the floor is out of reach, the room a capture needs is not
fi
if ((avail < floor)) && ((avail + deletable < floor)); then
  log "WARNING: $why, and deleting every pcap it may would leave $(((avail + deletable) >> 20)) MiB: nothing deleted; files mirrorcap did not write fill $DIR (du -sh $DIR/* shows them): delete them"
else
  for name in "${remaining[@]}"; do
    read -r size avail < <(df -P -B1 "$DIR" | awk 'NR == 2 { print $2, $4 }')
    ((avail < floor)) || break
    protected "$name" && continue
    delete "$name"
    log "deleted $name ($why)"
    deleted=$((deleted + 1))
  done
fi
# An index whose pcap is gone (written while its pcap was being deleted) goes too.
shopt -s nullglob
for suffix in "$INDEX_SUFFIX" "$INDEX_FAILED_SUFFIX"; do
  for idx in "$DIR"/*"$suffix"; do
    [ -e "${idx%"$suffix"}" ] || rm -f -- "$idx"
  done
done
log "done: $deleted file(s) deleted, $(( ${#files[@]} - deleted )) kept"
MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_RETENTION
chmod 0755 '/usr/local/libexec/mirrorcap/retention.mirrorcap-new'
mv -f '/usr/local/libexec/mirrorcap/retention.mirrorcap-new' '/usr/local/libexec/mirrorcap/retention'

cat > '/usr/local/sbin/mirrorcap-boot.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_SBIN_MIRRORCAP_BOOT'
#!/bin/bash
# mirrorcap-boot: capture with the settings in the env file (/etc/mirrorcap), now.
# Run by the user data, and safe to run by hand after changing the env file: it
# converges the running host, no reboot needed.
#  - a VNI no longer configured: its capture is stopped and disabled (then decap
#    removes its interface; its pcaps stay, under retention);
#  - decap runs again (a reload: the captures that require it keep running) and
#    makes the new VNIs' interfaces; a decap still waiting starts over;
#  - every capture that stays reads the settings again (tcpdump restarts only if
#    its command changed: an unchanged VNI captures without a gap);
#  - the target starts whatever is not running, without waiting (storage may
#    wait for its volume, decap for the metadata service).
# Everything is enabled first: whatever fails now, the next boot starts it all.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=mirrorcap-lib.sh
. "$(dirname "$(readlink -f "$0")")/../lib/mirrorcap/mirrorcap-lib.sh"
VNIS=${MIRRORCAP_VNIS:?MIRRORCAP_VNIS missing from $ENV_FILE}

units=(mirrorcap.target mirrorcap-settings.service mirrorcap-storage.service mirrorcap-decap.service mirrorcap-retention.timer
  mirrorcap-recover.path mirrorcap-recover.timer)
for vni in $VNIS; do units+=("mirrorcap-capture@$vni.service"); done

systemctl daemon-reload
mapfile -t known < <({
  systemctl list-units --all --plain --no-legend 'mirrorcap-capture@*.service' | awk '{ print $1 }'
  find /etc/systemd/system -path '*.wants/mirrorcap-capture@*.service' -printf '%f\n'
} | sort -u)
for unit in "${known[@]}"; do
  vni=${unit#mirrorcap-capture@}
  vni=${vni%.service}
  if [[ " $VNIS " != *" $vni "* ]]; then
    say "VNI $vni is no longer configured: stopping and disabling $unit (its pcaps stay, under retention)"
    systemctl disable --now --quiet "$unit"
  fi
done
# reenable: links an older version made elsewhere (WantedBy=multi-user.target) go.
systemctl reenable --quiet "${units[@]}"
case $(systemctl is-active mirrorcap-decap.service || true) in
  active) systemctl reload --no-block mirrorcap-decap.service ;;
  activating) systemctl restart --no-block mirrorcap-decap.service ;;
esac
for vni in $VNIS; do
  if [ "$(systemctl is-active "mirrorcap-capture@$vni.service" || true)" = active ]; then
    systemctl reload --no-block "mirrorcap-capture@$vni.service"
  fi
done
systemctl start --no-block mirrorcap.target
say "capturing VNI(s) $VNIS: mirrorcap-health tells when it runs"
MIRRORCAP_USR_LOCAL_SBIN_MIRRORCAP_BOOT
chmod 0755 '/usr/local/sbin/mirrorcap-boot.mirrorcap-new'
mv -f '/usr/local/sbin/mirrorcap-boot.mirrorcap-new' '/usr/local/sbin/mirrorcap-boot'

cat > '/usr/local/libexec/mirrorcap/settings.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_SETTINGS'
#!/usr/bin/python3
"""mirrorcap-settings: the instance's settings from its current user data, on every boot.

A deploy that changes a capture's settings (a VNI, the rotation...) changes the
instance's user data, which AWS applies by stopping and starting the instance;
cloud-init runs user data only on an instance's first boot. So on every boot,
before storage and decap start, this reads the user data from IMDSv2, takes the
env file it carries (never runs it: only its MIRRORCAP_ENV block, and only a user
data of this capture), and when that differs from the env file (/etc/mirrorcap),
writes it and runs mirrorcap-boot, which converges the host on it. When IMDS does
not answer within a minute the settings stay as they are (decap waits for IMDS
anyway). Python 3.9 stdlib only.
"""
import fcntl
import gzip
import os
import re
import subprocess
import sys
import time

# The shared module: /usr/local/lib/mirrorcap, from /usr/local/libexec/mirrorcap.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "lib", "mirrorcap"))
import mirrorcap_host as host  # noqa: E402

WAIT_SECONDS = 60
BOOT = "/usr/local/sbin/mirrorcap-boot"
# The block user-data.sh.j2 writes the env file from (the renderer's own test reads it back).
BLOCK = re.compile(r"<<'MIRRORCAP_ENV'\n(.*?)MIRRORCAP_ENV\n", re.S)


def log(message):
    print("mirrorcap-settings: " + message, file=sys.stderr, flush=True)


def user_data():
    """The instance's user data (gzip unpacked), through IMDSv2."""
    data = host.imds("/latest/user-data", token_timeout=3)
    return (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode()


def env_block(text, capture):
    """The env file a user data of `capture` writes, or None for any other user data."""
    marker = '# mirrorcap first boot for capture "%s" ' % capture
    if not any(line.startswith(marker) for line in text.split("\n", 3)[1:3]):
        return None
    m = BLOCK.search(text)
    return m.group(1) if m else None


def main():
    try:
        with open(host.ENV_FILE) as f:
            current = f.read()
        capture = host.read_env()["MIRRORCAP_CAPTURE"]
    except (OSError, KeyError) as e:
        log("cannot read %s: %s (the user data writes it on the first boot)" % (host.ENV_FILE, e))
        return 0
    deadline, error = time.monotonic() + WAIT_SECONDS, None
    while True:
        try:
            text = user_data()
            break
        except (OSError, ValueError, EOFError) as e:
            error = e
        if time.monotonic() > deadline:
            log("the instance metadata service (IMDS) gave no user data (%s): keeping the settings in %s" % (error, host.ENV_FILE))
            return 0
        time.sleep(2)
    new = env_block(text, capture)
    if new is None:
        log("the instance's user data is not capture %s's: keeping the settings in %s" % (capture, host.ENV_FILE))
        return 0
    if new == current:
        log("settings unchanged")
        return 0
    before = dict(line.split("=", 1) for line in current.splitlines() if "=" in line and not line.startswith("#"))
    after = dict(line.split("=", 1) for line in new.splitlines() if "=" in line and not line.startswith("#"))
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    with open(host.BOOTSTRAP_LOCK, "w") as lock:  # the user data's run, if any, first: then this one
        fcntl.flock(lock, fcntl.LOCK_EX)
        tmp = host.ENV_FILE + ".tmp"
        with open(tmp, "w") as f:
            f.write(new)
        os.chmod(tmp, 0o644)
        os.replace(tmp, host.ENV_FILE)
        log("the user data changed %s: converging" % ", ".join("%s (%s -> %s)" % (k, before.get(k), after.get(k)) for k in changed))
        return subprocess.run([BOOT]).returncode


if __name__ == "__main__":
    sys.exit(main())
MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_SETTINGS
chmod 0755 '/usr/local/libexec/mirrorcap/settings.mirrorcap-new'
mv -f '/usr/local/libexec/mirrorcap/settings.mirrorcap-new' '/usr/local/libexec/mirrorcap/settings'

cat > '/usr/local/sbin/mirrorcap-health.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_SBIN_MIRRORCAP_HEALTH'
#!/usr/bin/python3
"""mirrorcap-health: is this capture host capturing? For people and for alarms.

Checks storage (the volume: mounted, or what it waits for), decap (the vxlan
interfaces: made, or what they wait for), mtu (the NIC's, against what mirrored
traffic needs), services, and per VNI: tcpdump, writing (the capture's loss
record: an open gap, gaps and what they lost), restarts (flapping), newest-pcap,
drops (kernel), truncated (packets cut short before they arrived); then
unmatched (VNIs no interface accepts), disk and metrics (is mirrorcap-metrics
publishing to CloudWatch: a warning, never a failure): see the README. Losses are
reported once to each reader ("since the last check", remembered across reboots:
a person, mirrorcap-metrics and the NLB probe each keep their own). Exit 0 when
healthy (warnings allowed), 1 when not, 2 when it cannot run. Runs as root
(signals tcpdump, samples the mirror ENI). Python 3.9 stdlib only.
"""
import argparse
import errno
import glob
import json
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import time

# The shared module: /usr/local/lib/mirrorcap, from /usr/local/sbin.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "lib", "mirrorcap"))
import mirrorcap_host as host  # noqa: E402

PCAP_HEADER_BYTES = 24
COUNTERS = re.compile(r"(\d+) packets? captured[,\s]+(\d+) packets? received by filter[,\s]+(\d+) packets? dropped by kernel")
HEARTBEAT_SECONDS = 5  # the capture's watcher writes its heartbeat four times a second
FLAPPING = (3, 600)  # this many restarts in this many seconds
BACKOFF_HISTORY = "/run/mirrorcap/capture-backoff.%s"  # mirrorcap-capture-backoff's HISTORY
STATE_FILE = os.path.join(host.STATE_DIR, "health-state.json")  # what was reported already (to a person)
# Every reader of the verdict keeps its own "since the last check": mirrorcap-metrics' run a minute
# after a reboot once took the reboot's gap, and the person who asked next was told all was well.
READER = re.compile(r"[a-z][a-z0-9-]{0,31}\Z")
METRICS_FILE = os.path.join(host.STATE_DIR, "metrics.json")  # mirrorcap-metrics' last runs
METRICS_FAILURES = 2  # one failed publish can be a blip; two in a row are worth saying
AGAIN = "systemctl start mirrorcap.target"


# Which failed check names the cause when several fail: the volume before what it stops (a shut-down
# file system also fails disk and writing; foreign files filling it also stop the writing).
CAUSE_ORDER = ("storage", "decap", "disk", "mtu", "services", "writing", "tcpdump", "restarts")


class Report:
    def __init__(self):
        self.checks = []

    def add(self, name, status, detail, **data):
        self.checks.append(dict(name=name, status=status, detail=detail, **data))

    def run(self, name, check, *args):
        """A check that breaks is a failed check saying so: an alarm always gets a verdict."""
        try:
            return check(self, *args)
        except Exception as e:  # noqa: BLE001 - whatever it was, the verdict must still be printed
            self.add(name, "fail", "the %s check could not run: %s: %s" % (name, type(e).__name__, e))

    @property
    def healthy(self):
        return all(c["status"] != "fail" for c in self.checks)

    def cause(self):
        """The check that says why the host is unhealthy (or, healthy, the first warning): None when all is well."""
        for status in ("fail", "warn"):
            found = [c for c in self.checks if c["status"] == status]
            if found:
                rank = {name: i for i, name in enumerate(CAUSE_ORDER)}
                return min(found, key=lambda c: rank.get(c["name"], len(rank)))
        return None


def capture_unit(vni):
    return "mirrorcap-capture@%s.service" % vni


def unit_props(unit, *props):
    out = subprocess.run(["systemctl", "show", unit] + ["--property=" + p for p in props], capture_output=True, text=True)
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def check_stage(report, name, unit, directory=None):
    """storage or decap: active, or what its script waits for, or why it failed (its status file).
    Storage (`directory`): also whether the mounted volume reads, and what mirrorcap-recover did."""
    state = unit_props(unit, "ActiveState").get("ActiveState", "unknown")
    error = volume_error(directory) if directory else None
    if error is not None:
        recover = host.read_json(os.path.join(host.RUN_DIR, "recover.json"), {}) or {}
        doing = (" (mirrorcap-recover: %s)" % recover["detail"]) if recover.get("state") in ("recovering", "backing-off") \
            else ""
        report.add(name, "fail", "%s: %s: the pcap volume's file system failed (shut down, or the volume is impaired): "
                   "nothing can be written until it is mounted again%s; mirrorcap-recover remounts it when a capture "
                   "notices; by hand: systemctl start mirrorcap-recover.service (it stops what holds the volume, "
                   "unmounts it, mounts it again and starts capture)" % (directory, error.strerror or error, doing),
                   unit=unit, unit_state=state,
                   state="io-error", errno=error.errno)
        return
    status = host.read_json(os.path.join(host.RUN_DIR, name + ".json"), {}) or {}
    detail = status.get("detail") or ""
    data = dict(unit=unit, unit_state=state, state=status.get("state"), since=status.get("since"))
    if state == "active":
        report.add(name, "ok", detail or "%s active" % unit, **data)
    elif state == "activating" and status.get("state", "").startswith("waiting"):
        report.add(name, "fail", "%s %s" % (detail, "(%ds)" % (time.time() - status["since"]) if status.get("since") else ""),
                   **data)
    elif state == "failed" and status.get("state") == "failed":
        report.add(name, "fail", "%s failed: %s" % (unit, detail), **data)
    else:
        report.add(name, "fail", "%s is %s (journalctl -u %s); then: %s" % (unit, state, unit, AGAIN), **data)


def check_services(report, vnis):
    units = ["mirrorcap.target", "mirrorcap-settings.service", "mirrorcap-storage.service", "mirrorcap-decap.service"]
    units += [capture_unit(v) for v in vnis] + ["mirrorcap-retention.timer", "mirrorcap-recover.path",
                                                       "mirrorcap-recover.timer"]
    out = subprocess.run(["systemctl", "is-active"] + units, capture_output=True, text=True).stdout.split()
    states = dict(zip(units, out + ["unknown"] * (len(units) - len(out))))
    down = sorted(u for u, s in states.items() if s != "active")
    if down:
        report.add("services", "fail", "not active: %s (%s starts what is not running)"
                   % (", ".join("%s (%s)" % (u, states[u]) for u in down), AGAIN), units=states)
    else:
        report.add("services", "ok", "%d units active" % len(units), units=states)


def children(pid, comm):
    """PIDs of the processes named `comm` whose parent is `pid`."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2:].split()[1])
        if ppid == pid and name == comm:
            found.append(int(stat.split("/")[2]))
    return sorted(found)


def check_tcpdump(report, vni):
    """The tcpdump the capture unit runs: a child of the unit's main process (its watcher)."""
    unit = capture_unit(vni)
    main_pid = int(unit_props(unit, "MainPID").get("MainPID") or 0)
    pids = children(main_pid, "tcpdump") if main_pid else []
    if pids:
        report.add("tcpdump", "ok", "VNI %s: running (pid %s, %s)" % (vni, ",".join(map(str, pids)), unit), vni=vni, pids=pids)
    else:
        report.add("tcpdump", "fail", "VNI %s: %s runs no tcpdump (systemctl status %s)" % (vni, unit, unit), vni=vni, pids=[])
    return pids


def since_last(state, key, total):
    """How much `total` grew since the last check (all of it when it shrank: the record started over)."""
    before = state.get(key, 0)
    state[key] = total
    return total - before if total >= before else total


def when(t):
    return time.strftime("%H:%M:%S", time.gmtime(t)) if t else "?"


def check_writing(report, vni, record, state, now):
    """The capture's own record: is it writing now, and what did its gaps lose since the last check."""
    heartbeat = (host.read_json(os.path.join(host.capture_run_dir(vni), "rx.json"), {}) or {}).get("heartbeat")
    new_gaps = since_last(state, "gaps:%s" % vni, record.get("gaps_total", 0))
    new_lost = since_last(state, "lost:%s" % vni, record.get("lost_packets_total", 0))
    new_unknown = since_last(state, "unknown:%s" % vni, record.get("lost_unknown_gaps", 0))
    gap, last = record.get("gap"), (record.get("gaps") or [{}])[-1]
    data = dict(vni=vni, writing=bool(record.get("writing")) and gap is None, gap=gap, gaps_total=record.get("gaps_total", 0),
                lost_packets_max=record.get("lost_packets_total", 0), lost_unknown_gaps=record.get("lost_unknown_gaps", 0),
                lost_since_last_check=new_lost, gaps_since_last_check=new_gaps, last_gaps=(record.get("gaps") or [])[-3:],
                heartbeat_age=None if heartbeat is None else round(now - heartbeat, 1))
    lost = "at most %d packets lost" % new_lost + (" (and an unknown number in %d gap(s) the host could not count: "
                                                   "it was down)" % new_unknown if new_unknown else "")
    if gap:
        report.add("writing", "fail", "VNI %s: NOT WRITING since %s (%ds): %s" % (vni, when(gap["start"]), now - gap["start"],
                                                                               gap["reason"]), **data)
    elif record.get("waiting"):
        report.add("writing", "fail", "VNI %s: NOT WRITING: waiting for %s (mirrorcap-decap makes it)" % (vni, record["waiting"]),
                   **data)
    elif not record.get("writing") or heartbeat is None or now - heartbeat > HEARTBEAT_SECONDS:
        report.add("writing", "fail", "VNI %s: NOT WRITING: the capture's watcher %s (journalctl -u %s)"
                   % (vni, "is not running" if heartbeat is None else "last reported %ds ago" % (now - heartbeat),
                      capture_unit(vni)), **data)
    elif new_gaps:
        report.add("writing", "fail", "VNI %s: %d gap(s) since the last check, %s (last: %s, %s-%s, %.1fs)"
                   % (vni, new_gaps, lost, last.get("reason", "?"), when(last.get("start")), when(last.get("end")),
                      (last.get("end") or 0) - (last.get("start") or 0)), **data)
    else:
        report.add("writing", "ok", "VNI %s: writing (%d gap(s) in all, none since the last check)"
                   % (vni, record.get("gaps_total", 0)), **data)


def backoff_starts(vni, now, window):
    """When mirrorcap-capture-backoff started the unit again (its sandbox could not be set up, 226/NAMESPACE):
    those starts are no automatic restart, so NRestarts does not count them."""
    try:
        with open(BACKOFF_HISTORY % vni) as f:
            times = [int(line) for line in f if line.strip().isdigit()]
    except OSError:
        return []
    return [t for t in times if now - t <= window]


def check_restarts(report, vni, record, now, state):
    """Restarts the watcher recorded (tcpdump's, the unit's) and the unit's restarts systemd counts
    (NRestarts, sampled at each check): a unit that fails before its watcher runs (its mount
    namespace cannot be set up) records nothing itself."""
    count, window = FLAPPING
    recent = [r for r in record.get("restarts", []) if now - r[0] <= window]
    props = unit_props(capture_unit(vni), "NRestarts", "Result", "ExecMainStatus", "ActiveState", "SubState")
    seen = [p for p in state.get("nrestarts:%s" % vni, []) if now - p[0] <= window]
    nrestarts = int(props.get("NRestarts") or 0)
    if seen and nrestarts < seen[-1][1]:
        seen = []  # the unit was loaded again: its count started over
    state["nrestarts:%s" % vni] = (seen + [[now, nrestarts]])[-50:]
    by_systemd = (nrestarts - seen[0][1] if seen else 0) + len(backoff_starts(vni, now, window))
    data = dict(vni=vni, restarts_recent=max(len(recent), by_systemd), window_seconds=window, nrestarts=nrestarts)
    if by_systemd >= count and by_systemd > len(recent):
        report.add("restarts", "fail", "VNI %s: flapping: systemd restarted %s %d times in %d minutes (now %s/%s, last "
                   "result %s, status %s; journalctl -u %s)"
                   % (vni, capture_unit(vni), by_systemd, window // 60, props.get("ActiveState"), props.get("SubState"),
                      props.get("Result"), props.get("ExecMainStatus"), capture_unit(vni)), **data)
    elif len(recent) >= count:
        report.add("restarts", "fail", "VNI %s: flapping: %d restarts in %d minutes (last: %s)"
                   % (vni, len(recent), window // 60, recent[-1][1]), **data)
    else:
        report.add("restarts", "ok", "VNI %s: %d restart(s) in the last %d minutes" % (vni, len(recent), window // 60), **data)


def check_newest_pcap(report, directory, pattern, vni, stale_after, now):
    files = []
    for path in glob.glob(os.path.join(directory, host.pcap_glob(pattern, vni))):
        try:
            st = os.stat(path)
        except OSError:
            continue
        files.append((path, st.st_mtime, st.st_size))
    if not files:
        report.add("newest-pcap", "fail", "VNI %s: no pcap in %s" % (vni, directory), vni=vni)
        return
    files.sort()  # names carry the UTC start time: the last one is being written
    path, mtime, size = files[-1]
    age = max(0, int(now - mtime))
    # Rotated files holding only the header: normal for the first file after a
    # quiet start (tcpdump opens it before any packet). Reported, not judged.
    header_only = sum(1 for _, _, s in files[:-1] if s <= PCAP_HEADER_BYTES)
    data = dict(vni=vni, file=os.path.basename(path), age_seconds=age, size_bytes=size, header_only_rotated=header_only)
    detail = "VNI %s: %s, %d bytes, %ds old" % (vni, data["file"], size, age)
    if header_only:
        detail += "; %d rotated file(s) hold only a pcap header" % header_only
    if age > stale_after:
        what = "holds no packet and was opened" if size <= PCAP_HEADER_BYTES else "was last written"
        report.add("newest-pcap", "fail", "VNI %s: %s %s %ds ago (stale after %ds): is mirrored traffic arriving?"
                   % (vni, data["file"], what, age, stale_after), **data)
    else:
        report.add("newest-pcap", "ok", detail, **data)


INDEX_SUFFIX, INDEX_FAILED_SUFFIX = host.INDEX_SUFFIX, host.INDEX_FAILED_SUFFIX
INDEX_PARTIAL = host.INDEX_PARTIAL  # the marker of a damaged pcap, indexed around the damage
INDEX_LATE_SECONDS = 600  # a closed pcap is indexed within seconds of its rotation


def marker(path):
    try:
        with open(path + INDEX_FAILED_SUFFIX) as f:
            return f.read().strip()
    except OSError:
        return "?"


def check_index(report, directory, pattern, vni, now):
    """Closed pcaps without their packet index: still kept, archived and found by time, but
    `mirrorcap find` reads them whole. A warning, never a failed host."""
    pcaps = sorted(glob.glob(os.path.join(directory, host.pcap_glob(pattern, vni))))[:-1]  # the newest is being written
    failed, late, damaged = [], [], []
    for path in pcaps:
        if os.path.exists(path + INDEX_FAILED_SUFFIX):
            why = marker(path)
            (damaged if why.startswith(INDEX_PARTIAL) else failed).append((path, why))
        elif not os.path.exists(path + INDEX_SUFFIX):
            try:
                if now - os.stat(path).st_mtime > INDEX_LATE_SECONDS:
                    late.append(path)
            except OSError:
                pass
    data = dict(vni=vni, closed=len(pcaps), index_failed=len(failed), index_late=len(late), index_partial=len(damaged),
                damaged=[os.path.basename(p) for p, _ in damaged[-5:]])
    if not failed and not late and not damaged:
        report.add("index", "ok", "VNI %s: every closed pcap (%d) has its packet index" % (vni, len(pcaps)), **data)
        return
    parts = []
    if damaged:
        # Bytes in the middle that are no record: what lies around them is indexed, they are not.
        parts.append("%d pcap(s) damaged, indexed only in part (latest %s: %s)" % (len(damaged),
                                                                                   os.path.basename(damaged[-1][0]), damaged[-1][1]))
    if failed:
        parts.append("%d pcap(s) could not be indexed (latest %s: %s)" % (len(failed), os.path.basename(failed[-1][0]),
                                                                          failed[-1][1]))
    if late:
        parts.append("%d closed more than %ds ago have no index yet (journalctl -u %s)" % (len(late), INDEX_LATE_SECONDS, capture_unit(vni)))
    report.add("index", "warn", "VNI %s: %s; they are kept and found by time, and read whole" % (vni, "; ".join(parts)), **data)


def tcpdump_counters(pid, log, timeout=2.0):
    """Ask tcpdump for its counters (SIGUSR1) and read them from its log."""
    try:
        start = os.path.getsize(log)
    except OSError:
        return None
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        with open(log, "rb") as f:
            f.seek(start)
            found = COUNTERS.findall(f.read().decode(errors="replace"))
        if found:
            return tuple(int(x) for x in found[-1])
    return None


def check_drops(report, vni, pids, record, state):
    """Kernel drops of every tcpdump the capture ran: the record's (those that ended) plus the live one's."""
    log = os.path.join(host.capture_run_dir(vni), "tcpdump.log")
    counters = tcpdump_counters(pids[0], log) if pids else None
    if pids and counters is None:
        report.add("drops", "warn", "VNI %s: tcpdump (pid %d) gave no counters in %s" % (vni, pids[0], log), vni=vni)
        return
    captured, received, dropped = counters or (0, 0, 0)
    total = record.get("kernel_drops_total", 0) + dropped
    new = since_last(state, "drops:%s" % vni, total)
    data = dict(vni=vni, captured=captured, received=received, dropped=dropped, dropped_total=total, dropped_since_last_check=new)
    if new > 0:
        report.add("drops", "fail", "VNI %s: kernel dropped %d packets since the last check (%d in all): "
                   "raise buffer_kib or capture less" % (vni, new, total), **data)
    else:
        report.add("drops", "ok", "VNI %s: 0 new kernel drops (%d captured by this tcpdump)" % (vni, captured), **data)
    if pids and os.path.getsize(log) > 1 << 20:
        open(log, "w").close()  # appended to (O_APPEND), so truncating is safe


def check_truncated(report, vni, record, state):
    total = record.get("truncated_total", 0)
    new = since_last(state, "truncated:%s" % vni, total)
    data = dict(vni=vni, truncated_total=total, truncated_since_last_check=new)
    if new:
        report.add("truncated", "fail", "VNI %s: %d packets arrived cut short since the last check (%d in all; their IP "
                   "length runs past the frame): a source's packet_length, or packets over the target's MTU"
                   % (vni, new, total), **data)
    else:
        report.add("truncated", "ok", "VNI %s: no packet cut short since the last check (%d in all)" % (vni, total), **data)


def lower_iface(iface):
    """The interface a vxlan interface receives on: the one mirrored traffic reaches."""
    out = subprocess.run(["ip", "-d", "-j", "link", "show", "dev", iface], capture_output=True, text=True)
    try:
        return json.loads(out.stdout)[0]["linkinfo"]["info_data"]["link"]
    except (ValueError, LookupError, TypeError):
        return None


def check_mtu(report, iface, needed, overhead, state):
    """The NIC mirrored traffic reaches: a frame over its MTU is dropped there, before it is
    decapsulated; its receive drops are shown (the only count of them)."""
    if not iface:
        report.add("mtu", "fail", "cannot tell the interface mirrored traffic reaches: no vxlan interface (see decap)")
        return
    try:
        with open("/sys/class/net/%s/mtu" % iface) as f:
            mtu = int(f.read())
        with open("/sys/class/net/%s/statistics/rx_dropped" % iface) as f:
            dropped = since_last(state, "nic_dropped:%s" % iface, int(f.read()))
    except (OSError, ValueError) as e:
        report.add("mtu", "fail", "cannot read %s's MTU and counters: %s" % (iface, e))
        return
    data = dict(iface=iface, mtu=mtu, needed=needed, nic_dropped_since_last_check=dropped)
    drops = "; %d frames dropped by %s since the last check" % (dropped, iface) if dropped else ""
    if mtu < needed:
        report.add("mtu", "fail", "%s: MTU %d, under the %d mirrored traffic needs: mirrored packets over %d bytes (%d inside "
                   "the VXLAN) are dropped before they are decapsulated%s; fix: systemctl reload mirrorcap-decap (it sets %d)"
                   % (iface, mtu, needed, mtu, mtu - overhead, drops, needed), **data)
    elif dropped:
        report.add("mtu", "warn", "%s: MTU %d%s (rx_dropped: frames the NIC or the kernel refused)" % (iface, mtu, drops), **data)
    else:
        report.add("mtu", "ok", "%s: MTU %d: mirrored packets up to %d bytes inside the VXLAN arrive whole"
                   % (iface, mtu, mtu - overhead), **data)


def pcap_vnis(raw):
    """VNIs of the VXLAN packets (Ethernet/IPv4/UDP) in a pcap byte string."""
    vnis = {}
    if len(raw) < PCAP_HEADER_BYTES:
        return vnis
    endian = "<" if raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    pos = PCAP_HEADER_BYTES
    while pos + 16 <= len(raw):
        incl = struct.unpack(endian + "I", raw[pos + 8:pos + 12])[0]
        pkt = raw[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        if len(pkt) < 14 + 20 or pkt[12:14] != b"\x08\x00":
            continue
        ihl = (pkt[14] & 0x0F) * 4
        vxlan = pkt[14 + ihl + 8:14 + ihl + 16]
        if len(vxlan) == 8:
            vni = struct.unpack("!I", vxlan[4:8])[0] >> 8
            vnis[vni] = vnis.get(vni, 0) + 1
    return vnis


def check_unmatched(report, iface, vnis, vxlan, vxlan_port, seconds):
    if seconds <= 0:
        report.add("unmatched", "skip", "sampling disabled (--sample-seconds 0)")
        return
    if not iface:
        report.add("unmatched", "fail", "cannot tell the mirror ENI: %s is missing (check mirrorcap-decap)" % vxlan)
        return
    # The kernel filter keeps only VXLAN packets whose VNI (UDP payload bytes 4-6)
    # is not configured, so the sample is small even under heavy mirroring.
    accepted = " or ".join("udp[12:4] >> 8 = %s" % v for v in vnis)
    expr = "udp dst port %d and not (%s)" % (vxlan_port, accepted)
    # -Z root: distribution builds otherwise switch users; -w -: no file to create.
    proc = subprocess.run(["timeout", str(seconds), "tcpdump", "-i", iface, "-n", "-p", "-s", "64", "-c", "10000",
                           "-Z", "root", "-w", "-", expr], capture_output=True)
    seen = pcap_vnis(proc.stdout)
    if proc.returncode not in (0, 124) and not proc.stdout:
        report.add("unmatched", "warn", "could not sample %s: %s" % (iface, proc.stderr.decode(errors="replace").strip()))
    elif seen:
        listing = ", ".join("VNI %d (%d pkts)" % kv for kv in sorted(seen.items()))
        report.add("unmatched", "fail", "%s: VXLAN with a VNI no interface accepts, dropped by the kernel: %s. "
                   "Fix the session's VNI or add it to the capture" % (iface, listing), iface=iface,
                   vnis={str(k): n for k, n in seen.items()}, sample_seconds=seconds)
    else:
        report.add("unmatched", "ok", "%s: no VXLAN with other VNIs in %ss" % (iface, seconds), iface=iface, vnis={},
                   sample_seconds=seconds)


FOREIGN_SHOWN = 5  # the largest files mirrorcap did not write, named in the disk check


def printable(text):
    """A name from the volume, safe in a terminal: control characters as escapes."""
    return "".join(c if c.isprintable() else "\\x%02x" % ord(c) for c in text)


def foreign_files(directory, pattern):
    """[(size, path)] of the files under `directory` that mirrorcap did not write (its pcaps, their
    packet index or index failure marker and the temporary files of those), largest first. Walked
    without following links."""
    own = re.compile(re.sub(r"\\\*", ".*", re.escape(host.pcap_glob(pattern))) + r"(%s|%s)?(\.\d+\.tmp)?" % (re.escape(INDEX_SUFFIX), re.escape(INDEX_FAILED_SUFFIX)))
    found = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            if root == directory and own.fullmatch(name):
                continue
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            found.append((st.st_blocks * 512, path))
    return sorted(found, reverse=True)


def volume_error(directory):
    """Why the mounted volume cannot be read (an OSError such as EIO: the file system shut down), or None."""
    try:
        os.stat(directory)
    except OSError as e:
        return None if e.errno in (errno.ENOENT, errno.ENOTDIR) else e
    return None


def check_disk(report, directory, min_free_percent, min_free_gib, pattern):
    error = volume_error(directory)
    if error is not None:
        report.add("disk", "fail", "%s: %s" % (directory, error.strerror or error), errno=error.errno)
        return
    if not os.path.ismount(directory):
        report.add("disk", "fail", "%s is not a mount point: the pcap volume is not mounted" % directory)
        return
    usage = shutil.disk_usage(directory)
    percent = 100.0 * usage.free / usage.total if usage.total else 0.0
    gib = usage.free / (1 << 30)
    data = dict(free_bytes=usage.free, total_bytes=usage.total, free_percent=round(percent, 1))
    if percent < min_free_percent or gib < min_free_gib:
        foreign = foreign_files(directory, pattern)
        others = sum(size for size, _ in foreign)
        pcaps = max(0, usage.used - others)
        data.update(foreign_bytes=others, foreign_files=[dict(path=p, bytes=b) for b, p in foreign[:FOREIGN_SHOWN]])
        floor = "%s: %.1f%% (%.1f GiB) free, under the floor (%s%% / %s GiB)" % (directory, percent, gib, min_free_percent,
                                                                              min_free_gib)
        if foreign and others >= pcaps:
            # Retention deletes only pcaps: it cannot make this room, and never deletes what it did not write.
            shown = ", ".join("%s (%s)" % (printable(p), human(b)) for b, p in foreign[:FOREIGN_SHOWN])
            more = " and %d more" % (len(foreign) - FOREIGN_SHOWN) if len(foreign) > FOREIGN_SHOWN else ""
            report.add("disk", "fail", "%s: files mirrorcap did not write fill it (%s in %d file(s): %s%s), and retention "
                       "deletes only pcaps: delete them (rm -- %s) or move them off the volume; capture resumes by itself"
                       % (floor, human(others), len(foreign), shown, more,
                          " ".join(shlex.quote(printable(p)) for _, p in foreign[:FOREIGN_SHOWN])), **data)
        else:
            report.add("disk", "fail", "%s: is retention running? (pcaps %.1f GiB; other files %.1f GiB, which retention "
                       "never deletes)" % (floor, pcaps / (1 << 30), others / (1 << 30)), **data)
    else:
        report.add("disk", "ok", "%s: %.1f%% (%.1f GiB) free" % (directory, percent, gib), **data)


def human(n):
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return "%d %s" % (n, unit) if unit == "bytes" else "%.1f %s" % (n, unit)
        n /= 1024.0


def check_metrics(report, path=METRICS_FILE):
    """Whether the alarms get their datapoints. A warning at most: publishing is never the capture's health."""
    m = host.read_json(path, {}) or {}
    failures, last = int(m.get("failures") or 0), m.get("last_published")
    data = dict(last_published=last, failures=failures, last_error=m.get("last_error"))
    if failures >= METRICS_FAILURES:
        since = "%s UTC" % time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(last)) if last else "this host started"
        report.add("metrics", "warn", "not published since %s (%d attempts in a row failed; the last: %s; "
                   "journalctl -u mirrorcap-metrics.service): the capture's alarms see no data"
                   % (since, failures, m.get("last_error")), **data)
    elif last:
        report.add("metrics", "ok", "published to CloudWatch at %s" % when(last), **data)
    else:
        report.add("metrics", "ok", "not published yet (mirrorcap-metrics.timer runs every minute)", **data)


def reader(name):
    if not READER.match(name):
        raise argparse.ArgumentTypeError("%r: a reader is a lowercase name (letters, digits, '-'), e.g. person" % name)
    return name


def state_file_of(name):
    """The person's record keeps its old name; every other reader has its own."""
    return STATE_FILE if name == "person" else os.path.join(host.STATE_DIR, "health-state.%s.json" % name)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="mirrorcap-health", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--sample-seconds", type=float, default=3.0,
                        help="how long to watch the mirror ENI for unmatched VNIs (0 = skip)")
    parser.add_argument("--reader", default="person", type=reader,
                        help="whose \"since the last check\" this is (each is told of a loss once): "
                             "mirrorcap-metrics and the NLB probe have their own; default: person")
    args = parser.parse_args(argv)
    try:
        env = host.read_env()
        vnis = env["MIRRORCAP_VNIS"].split()
        directory, pattern = env["MIRRORCAP_CAPTURE_DIR"], env["MIRRORCAP_PCAP_PATTERN"]
        stale_after = int(env["MIRRORCAP_STALE_AFTER_SECONDS"])
        vxlan_port, overhead = int(env["MIRRORCAP_VXLAN_PORT"]), int(env["MIRRORCAP_VXLAN_OVERHEAD"])
        mirror_mtu = int(env["MIRRORCAP_MIRROR_MTU"])
        min_free_percent = float(env.get("MIRRORCAP_MIN_FREE_PERCENT", "0"))
        min_free_gib = float(env.get("MIRRORCAP_MIN_FREE_GIB", "0"))
    except (OSError, KeyError, ValueError) as e:
        print("mirrorcap-health: cannot read %s: %s" % (host.ENV_FILE, e), file=sys.stderr)
        return 2

    state_file = state_file_of(args.reader)
    state = host.read_json(state_file, None)
    if state is None:  # a reader new to this host starts where the shared record was: no old loss told again
        state = host.read_json(STATE_FILE, {}) or {}
    report = Report()
    now = time.time()
    vxlan = host.vxlan_iface(env, vnis[0]) if vnis else None
    iface = lower_iface(vxlan) if vxlan else None
    report.run("storage", check_stage, "storage", "mirrorcap-storage.service", directory)
    report.run("decap", check_stage, "decap", "mirrorcap-decap.service")
    report.run("mtu", check_mtu, iface, mirror_mtu, overhead, state)
    report.run("services", check_services, vnis)
    for vni in vnis:
        record = host.read_json(host.capture_state_file(vni), {}) or {}
        pids = report.run("tcpdump", check_tcpdump, vni) or []
        report.run("writing", check_writing, vni, record, state, now)
        report.run("restarts", check_restarts, vni, record, now, state)
        report.run("newest-pcap", check_newest_pcap, directory, pattern, vni, stale_after, now)
        report.run("index", check_index, directory, pattern, vni, now)
        report.run("drops", check_drops, vni, pids, record, state)
        report.run("truncated", check_truncated, vni, record, state)
    report.run("unmatched", check_unmatched, iface, vnis, vxlan, vxlan_port, args.sample_seconds)
    report.run("disk", check_disk, directory, min_free_percent, min_free_gib, pattern)
    report.run("metrics", check_metrics)

    os.makedirs(host.STATE_DIR, exist_ok=True)
    host.write_json(state_file, state)
    cause = report.cause()
    first = "mirrorcap-health: %s%s" % ("healthy" if report.healthy else "UNHEALTHY",
                                        ": %s: %s" % (cause["name"], cause["detail"]) if cause else "")
    if args.json:
        json.dump(dict(healthy=report.healthy, capture=env.get("MIRRORCAP_CAPTURE"), summary=first, checks=report.checks),
                  sys.stdout, indent=2)
        print()
    else:
        print(first)  # the cause first: what an alarm or a person reads of it
        for c in report.checks:
            print("%-4s  %-11s  %s" % (c["status"].upper(), c["name"], c["detail"]))
        print("mirrorcap-health: %s" % ("healthy" if report.healthy else "UNHEALTHY"))
    return 0 if report.healthy else 1


if __name__ == "__main__":
    sys.exit(main())
MIRRORCAP_USR_LOCAL_SBIN_MIRRORCAP_HEALTH
chmod 0755 '/usr/local/sbin/mirrorcap-health.mirrorcap-new'
mv -f '/usr/local/sbin/mirrorcap-health.mirrorcap-new' '/usr/local/sbin/mirrorcap-health'

cat > '/usr/local/bin/mirrorcap-window.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_BIN_MIRRORCAP_WINDOW'
#!/usr/bin/python3
"""mirrorcap-window: the packets around a moment, from the rotated pcaps.

  mirrorcap-window --at 2026-11-25T10:15:00+09:00 --window 5m          # list the pcaps covering it
  mirrorcap-window --at ... --window 2m --port 443 --out err.pcap      # merge, cut to the window, filter
  mirrorcap-window --at ... --host 10.0.3.7 --open                     # ... and open it in termshark

A pcap covers [the time in its name - 5 s, its last write]; the merged result is cut
to exactly the window (frame times) and filtered with a capture filter (BPF:
--host/--port/--bpf, via tcpdump) and/or a display filter (--filter, via
tshark). A pcap whose last record is torn (a full volume, a killed tcpdump, or
the file tcpdump is writing now) is read up to its last whole record.
Writes nothing unless --out or --open; never overwrites a file.
Exit 0 = found, 1 = no pcap covers the window, 2 = bad usage.
Python 3.9 stdlib only (Amazon Linux 2023's system Python).
"""
import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading

if __name__ == "__main__":  # the host runs it; the shared module: /usr/local/lib/mirrorcap, from /usr/local/bin
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "lib", "mirrorcap"))
import mirrorcap_host as host  # noqa: E402

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# tcpdump -G names a file by the wall clock when it opens it, but the kernel
# hands packets over in blocks (TPACKET_V3, up to ~1 s late on a quiet link):
# a file can hold packets stamped a little before its name. Its last write
# (mtime) is always after its last packet. Reading one file too many is free
# (the cut below is by packet time); missing one is not.
EARLY_SLACK = dt.timedelta(seconds=5)


class Usage(Exception):
    pass


def settings(path):
    """(capture directory, pcap name pattern) from the host's env file."""
    try:
        env = host.read_env(path)
        return env["MIRRORCAP_CAPTURE_DIR"], env["MIRRORCAP_PCAP_PATTERN"]
    except OSError as exc:
        raise Usage("cannot read %s: %s (--env-file)" % (path, exc.strerror))
    except KeyError as exc:
        raise Usage("%s sets no %s" % (path, exc))


def parse_time(text):
    if text == "now":
        return dt.datetime.now(dt.timezone.utc)
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        raise Usage("--at %r is not a date and time: write e.g. 2026-11-25T10:15:00+09:00" % text)
    if t.tzinfo is None:
        raise Usage("--at %r has no time zone: pcaps are named in UTC, so add one, e.g. %s+09:00 or %sZ" % (text, text, text))
    try:
        return t.astimezone(dt.timezone.utc)
    except OverflowError:
        raise Usage("--at %r is outside the years 1-9999 in UTC: pick a moment pcaps can hold" % text)


def parse_span(text, flag):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text or "")
    if not m:
        raise Usage("%s %r is not a duration: write e.g. 90s, 5m, 1h" % (flag, text))
    return dt.timedelta(seconds=float(m.group(1)) * UNITS[m.group(2) or "s"])  # OverflowError past ~2.7 million years


def span_around(at, spans):
    """The window as (begin, end) from (text, flag) before and after; Usage when a span or the
    window reaches past the calendar's ends."""
    try:
        before, after = (parse_span(text, flag) for text, flag in spans)
        return at - before, at + after
    except OverflowError:
        raise Usage("the window around --at %s reaches outside the years 1-9999: shorten %s" % (
            at.isoformat(), " or ".join(dict.fromkeys(flag for _, flag in spans))))


def pcaps(directory, pattern, vni=None):
    found = []
    try:
        names = os.listdir(directory)
    except OSError as exc:
        raise Usage("cannot read %s: %s (are you in the pcap group?)" % (directory, exc.strerror))
    for name in names:
        named = host.pcap_start(pattern, name)
        if not named or (vni is not None and named[0] != vni):
            continue
        path = os.path.join(directory, name)
        st = os.stat(path)
        start = named[1]
        end = dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc)
        found.append({"path": path, "vni": named[0], "start": start, "end": max(start, end), "bytes": st.st_size})
    return sorted(found, key=lambda p: (p["start"], p["path"]))


def covering(files, begin, end):
    return [f for f in files if f["start"] - EARLY_SLACK <= end and f["end"] >= begin]


def bpf_for(args):
    parts = []
    if args.host:
        parts.append("host %s" % args.host)
    if args.port:
        parts.append("port %d" % args.port)
    if args.bpf:
        parts.append("(%s)" % args.bpf)
    return " and ".join(parts)


TOOLS = ("mergecap", "tcpdump", "tshark")


def missing_tools():
    """Usage when a tool the extraction runs is not installed (checked before anything is read)."""
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        raise Usage("%s not found: install Wireshark's command-line tools and tcpdump (Amazon Linux: dnf install "
                    "wireshark-cli tcpdump; Debian/Ubuntu: apt install tshark tcpdump; macOS: brew install wireshark)"
                    % ", ".join(missing))


def run(cmd, pass_fds=()):
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, pass_fds=pass_fds)
    if result.returncode != 0:
        raise Usage("%s failed: %s" % (cmd[0], result.stderr.strip()[:400]))


def feed(path, length, fd):
    """The first `length` bytes of `path` into a pipe (its whole records), then end of file."""
    try:
        with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
            while length > 0:
                block = src.read(min(length, 1 << 20))
                if not block:
                    break
                dst.write(block)
                length -= len(block)
    except (BrokenPipeError, OSError):
        pass


def whole_records(files):
    """(inputs for mergecap, pipe read ends, feeders): a pcap is read as it is, or up to its last
    whole record through a pipe when its end is torn; one without a whole header holds no packet."""
    inputs, fds, feeders = [], [], []
    for f in files:
        whole, _ = host.pcap_end(f["path"])
        if whole == 0:
            print("mirrorcap-window: %s holds no whole pcap header: skipped" % f["path"], file=sys.stderr)
        elif whole == os.path.getsize(f["path"]):
            inputs.append(f["path"])
        else:
            r, w = os.pipe()
            feeders.append(threading.Thread(target=feed, args=(f["path"], whole, w), daemon=True))
            fds.append(r)
            inputs.append("/dev/fd/%d" % r)
    return inputs, fds, feeders


def extract(files, begin, end, bpf, display, out):
    """mergecap (time order) -> tcpdump BPF -> tshark window + display filter -> out (pcap)."""
    tmp = tempfile.mkdtemp(prefix="mirrorcap-window-")
    inputs, fds, feeders = whole_records(files)
    try:
        if not inputs:
            raise Usage("no pcap of the window holds a whole packet")
        for t in feeders:
            t.start()
        merged = os.path.join(tmp, "merged.pcap")
        run(["mergecap", "-F", "pcap", "-w", merged] + inputs, pass_fds=fds)
        if bpf:
            narrowed = os.path.join(tmp, "bpf.pcap")
            run(["tcpdump", "-r", merged, "-w", narrowed, bpf])
            merged = narrowed
        window = "frame.time_epoch >= %.6f && frame.time_epoch <= %.6f" % (begin.timestamp(), end.timestamp())
        expr = "(%s) && (%s)" % (window, display) if display else window
        # Created exclusively (unpredictable name, O_EXCL) beside `out`, with the
        # pcaps' own mode: the result is as sensitive as they are, whatever the umask.
        fd, partial = tempfile.mkstemp(prefix=".mirrorcap-window-", suffix=".partial", dir=os.path.dirname(os.path.abspath(out)))
        try:
            os.fchmod(fd, 0o640)
            os.close(fd)
            run(["tshark", "-n", "-r", merged, "-Y", expr, "-F", "pcap", "-w", partial])
            try:
                os.link(partial, out)  # fails if `out` exists: never replaces a file
            except FileExistsError:
                raise Usage("%s appeared while extracting: not replaced; pick another --out" % out)
        finally:
            os.unlink(partial)
    finally:
        for fd in fds:
            os.close(fd)
        for t in feeders:
            if t.is_alive() or t.ident:
                t.join()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(prog="mirrorcap-window", description=__doc__.split("\n")[0])
    p.add_argument("--at", required=True, help="the moment, with a time zone (2026-11-25T10:15:00+09:00, ...Z, or now)")
    p.add_argument("--window", default="5m", help="either side of --at (default 5m)")
    p.add_argument("--before", help="before --at (overrides --window)")
    p.add_argument("--after", help="after --at (overrides --window)")
    p.add_argument("--vni", type=int, help="only this VNI's pcaps")
    p.add_argument("--dir", default=None, help="capture directory (default: the env file's)")
    p.add_argument("--env-file", default=host.ENV_FILE, help="the host's settings: capture directory, pcap names (default %(default)s)")
    p.add_argument("--host", help="capture filter: this IP address")
    p.add_argument("--port", type=int, help="capture filter: this TCP/UDP port")
    p.add_argument("--bpf", help="capture filter (tcpdump syntax)")
    p.add_argument("--filter", dest="display", help="display filter (Wireshark syntax), e.g. 'http.response.code >= 500'")
    p.add_argument("--out", help="write the merged, cut, filtered packets here (pcap)")
    p.add_argument("--open", action="store_true", help="open the result in termshark")
    p.add_argument("--json", action="store_true", help="list as JSON")
    args = p.parse_args(argv)
    try:
        at = parse_time(args.at)
        begin, end = span_around(at, [(args.before or args.window, "--before" if args.before else "--window"),
                                      (args.after or args.window, "--after" if args.after else "--window")])
        default_dir, pattern = settings(args.env_file)
        directory = args.dir or default_dir
        files = covering(pcaps(directory, pattern, args.vni), begin, end)
        out = args.out
        if args.open and not out:
            out = "mirrorcap-%s.pcap" % at.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        if out and os.path.exists(out):
            raise Usage("%s exists: pick another --out (mirrorcap-window never overwrites a file)" % out)
        if (args.host or args.port or args.bpf or args.display) and not out:
            raise Usage("filters apply to the extracted packets: add --out FILE or --open")
        if out:
            missing_tools()
    except Usage as exc:
        print("mirrorcap-window: %s" % exc, file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"begin": begin.isoformat(), "end": end.isoformat(), "directory": directory,
                          "pcaps": [dict(f, start=f["start"].isoformat(), end=f["end"].isoformat()) for f in files]}, indent=2))
    else:
        print("window %s .. %s (UTC), %d pcap(s) in %s" % (begin.astimezone(dt.timezone.utc).isoformat(),
                                                        end.astimezone(dt.timezone.utc).isoformat(), len(files), directory))
        for f in files:
            print("  %s  %s .. %s  %d bytes" % (f["path"], f["start"].strftime("%H:%M:%S"), f["end"].strftime("%H:%M:%S"), f["bytes"]))
    if not files:
        return 1
    if out:
        try:
            extract(files, begin, end, bpf_for(args), args.display, out)
        except Usage as exc:
            print("mirrorcap-window: %s" % exc, file=sys.stderr)
            return 2
        print("wrote %s" % out, file=sys.stderr)
    if args.open:
        if not shutil.which("termshark"):
            print("mirrorcap-window: termshark not found (the bake skips it when it cannot build it): "
                  "the packets are in %s (tshark -r %s)" % (out, out), file=sys.stderr)
            return 2
        os.execvp("termshark", ["termshark", "-r", out])
    return 0


if __name__ == "__main__":
    sys.exit(main())
MIRRORCAP_USR_LOCAL_BIN_MIRRORCAP_WINDOW
chmod 0755 '/usr/local/bin/mirrorcap-window.mirrorcap-new'
mv -f '/usr/local/bin/mirrorcap-window.mirrorcap-new' '/usr/local/bin/mirrorcap-window'

cat > '/usr/local/sbin/mirrorcap-find.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_SBIN_MIRRORCAP_FIND'
#!/usr/bin/python3
"""mirrorcap-find: a `mirrorcap find` query run on this host's pcaps, for the laptop through Systems Manager.

  mirrorcap-find --request BASE64      # run the query; one JSON line says what was found and where it waits
  mirrorcap-find --chunk ID OFFSET     # the result's gzip'd bytes from OFFSET, base64, one line
  mirrorcap-find --forget ID           # delete the result (results older than an hour go by themselves)

`mirrorcap find QUERY --capture NAME` (a capture without an archive) sends these as AWS-RunShellScript
commands; the command line holds only these words, a hex ID, numbers and base64 (the request:
JSON of {"query": the parsed tree of mirrorcap_query.py, "flows": bool, "max_bytes": N}), so
nothing of the query's text reaches a shell. It runs as root (the SSM agent's user):

  - reads the pcaps in MIRRORCAP_CAPTURE_DIR (symlinks and other non-files skipped) and each one's
    index beside it; a pcap without a current index (the one being written, a failed one) is
    indexed in memory, never written beside it (that directory is the capture user's);
  - picks the flows the query may take (mirrorcap_query: the same code as the laptop's),
    reads only their byte ranges, decides every packet, writes one time-ordered pcap (or the
    flows as JSON lines), gzip'd, into /var/lib/mirrorcap/find (root, the pcap group may read);
  - prints a summary under SSM's 24,000 characters of stdout: the laptop fetches the result in
    --chunk pieces that each fit, and checks its sha256.

Exit 0: found; 1: nothing matches; 2: refused (a request that is not one, a result over max_bytes).
Python 3.9 stdlib only.
"""
import argparse
import base64
import binascii
import grp
import gzip
import hashlib
import json
import mmap
import os
import re
import secrets
import stat
import struct
import sys
import time
import zlib

# The shared modules: /usr/local/lib/mirrorcap, from /usr/local/sbin.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "lib", "mirrorcap"))
import mirrorcap_host as host  # noqa: E402
import mirrorcap_index as ix  # noqa: E402
import mirrorcap_query as mq  # noqa: E402

SPOOL = os.path.join(host.STATE_DIR, "find")
KEEP_SECONDS = 3600  # a result nobody fetched (the laptop went away) is deleted by the next run after this
# Raw bytes per --chunk: 17,997 is 23,996 base64 characters and a newline, under the 24,000
# characters of stdout GetCommandInvocation returns (StandardOutputContent).
CHUNK = 17997
RESULT_ID = re.compile(r"[0-9a-f]{32}\Z")
MAX_SKIPPED = 20  # named in the summary; the count is always there
VERSION = 1


class Refused(Exception):
    """A request this does not run, or a result it will not write: the why, for the summary."""


def answer(status, **fields):
    print(json.dumps(dict(v=VERSION, status=status, **fields), separators=(",", ":")), flush=True)
    return {"found": 0, "nothing": 1}.get(status, 2)


# --- the request ------------------------------------------------------------------------
def decode(text):
    """The request in --request: (query tree, flows?, max bytes)."""
    try:
        req = json.loads(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError) as e:
        raise Refused("the request is not base64 of JSON (%s)" % e)
    if not isinstance(req, dict) or req.get("v") != VERSION:
        raise Refused("the request is not a version %d mirrorcap-find request: update mirrorcap (laptop) and re-bake" % VERSION)
    max_bytes, flows = req.get("max_bytes"), req.get("flows")
    if type(max_bytes) is not int or max_bytes < 1 or type(flows) is not bool:
        raise Refused("the request's max_bytes/flows are not a size and a yes/no")
    try:
        tree = mq.check(req.get("query"))
    except mq.QueryTreeError as e:
        raise Refused(str(e))
    return tree, flows, max_bytes


# --- this host's pcaps and their indexes ----------------------------------------------------
def open_file(path):
    """A read-only descriptor of a regular file at `path` (not through a symlink), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def mapped(fd):
    size = os.fstat(fd).st_size
    return mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if size else b""


def read_index(path, size, pcap_fd):
    """(file line, flow rows) of the index at `path` when it is current for the pcap open as `pcap_fd`
    (`size` bytes: its size and first and last bytes, mirrorcap_index.current)."""
    fd = open_file(path)
    if fd is None:
        return None
    try:
        with os.fdopen(fd, "rb") as raw, gzip.GzipFile(fileobj=raw) as f:
            lines = [json.loads(x) for x in f if x.strip()]
    except (OSError, ValueError, EOFError, zlib.error):
        return None
    if not lines or lines[0].get("kind") != "file" or lines[0].get("v") != ix.VERSION:
        return None  # another version
    if not ix.current(lines[0], size, lambda o, n: os.pread(pcap_fd, n, o)):
        return None  # the pcap grew since (the one being written), or it is another one now
    return lines[0], lines[1:]


def sources(directory):
    """[(name, path, file line, flow rows)] of every pcap in `directory`, (built, [(name, why)] skipped)."""
    found, skipped, built = [], [], 0
    for name in sorted(os.listdir(directory)):
        if name.endswith((ix.SUFFIX, ix.FAILED_SUFFIX, ".tmp")):
            continue
        path = os.path.join(directory, name)
        fd = open_file(path)
        if fd is None:
            continue
        try:
            size = os.fstat(fd).st_size
            magic = os.pread(fd, 4, 0)
            if magic not in ix.PCAP_MAGIC and magic != ix.PCAPNG_SHB:
                skipped.append((name, "not a pcap or pcapng file"))
                continue
            index = read_index(path + ix.SUFFIX, size, fd)
            if index is None:
                data = mapped(fd)  # mapped only to index it (the pcap being written, a failed one)
                try:
                    index = ix.build(data, name, ix.vni_in_name(name))  # in memory: nothing written beside the pcap
                except (ValueError, struct.error, ix.IndexError_) as e:
                    skipped.append((name, "cannot index: %s" % e))
                    continue
                finally:
                    if len(data):
                        data.close()
                built += 1
        finally:
            os.close(fd)
        found.append((name, path) + tuple(index))
    return found, built, skipped


def damaged(srcs):
    """[(name, [[start, end]...])] of the pcaps whose index says bytes of them hold no record: an answer
    from them is of the rest of them, and says so."""
    return [(name, line["unread"]) for name, _path, line, _rows in srcs if line.get("unread")]


def select(srcs, tree):
    """The flow rows the query may take, each with its pcap's name in "source", oldest first."""
    rows = []
    may_match = mq.flow_matcher(tree)
    for name, _path, line, flows in srcs:
        if not mq.file_in_time(tree, line):
            continue
        if not mq.file_may_take(tree, line, ix.may_hold):
            continue  # the file line's VNI and Bloom filter: none of its flows can hold a packet of the query
        rows += [dict(r, source=name) for r in flows if r.get("kind") == "flow" and may_match(r)]
    rows.sort(key=lambda r: (r["first"], r["source"]))
    return rows


def packets(srcs, rows, tree, max_bytes):
    """(packets in time order as (ts, linktype, tsres, frame, length), bytes of pcaps read); Refused
    once the pcap they make passes max_bytes."""
    decide = mq.packet_predicate(tree, ix)

    def keep(*frame):
        try:
            return decide(*frame)
        except mq.NoLibpcap as e:  # (a frame cut short, and no libpcap to decide it as tcpdump does)
            raise Refused(str(e))
    by_source = {}
    for r in rows:
        by_source.setdefault(r["source"], []).append(r)
    out, size, read = [], 24, 0
    for n, (name, path, line, _flows) in enumerate(s for s in srcs if s[0] in by_source):
        merged = ix.flow_ranges(by_source[name])
        meta = ix.reader_meta(line)
        fd = open_file(path)
        if fd is None:
            continue  # gone since (retention)
        with os.fdopen(fd, "rb") as f:
            for a, b in merged:
                f.seek(a)
                data = f.read(b - a)
                read += len(data)
                for o, ts, linktype, caplen, length, frame in ix.records(data, meta, 0, len(data), origin=a):
                    if keep(data, linktype, frame, caplen, length, meta["endian"], line.get("vni"), ts):
                        size += 16 + caplen
                        if size > max_bytes:
                            raise Refused("too_big")
                        tsres = meta["ifaces"][0][1] if meta["format"] == "pcap" else 9
                        out.append((ts, n, a + o, linktype, tsres, data[frame:frame + caplen], length))
    out.sort(key=lambda p: p[:3])
    return [p[3:] + (p[0],) for p in out], read


def pcap_bytes(pkts):
    """One pcap of `pkts` (nanosecond when any input was), as mirrorcap.find.search.write_pcap writes it."""
    linktypes = {p[0] for p in pkts} or {1}
    if len(linktypes) > 1:
        raise Refused("the matching packets have link types %s: one pcap holds one; narrow the query" % sorted(linktypes))
    nano = any(p[1] != 6 for p in pkts)
    unit = 1 if nano else 1000
    per = 10 ** 9 // unit
    snap = max([len(p[2]) for p in pkts] + [262144])
    parts = [struct.pack("<IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, snap, linktypes.pop())]
    for _lt, _res, frame, length, ts in pkts:
        t = ts // unit
        parts += [struct.pack("<IIII", t // per, t % per, len(frame), length), frame]
    return b"".join(parts)


# --- the spool ------------------------------------------------------------------------------
def spool(group):
    """/var/lib/mirrorcap/find: root's, readable by the pcap group; results older than KEEP_SECONDS go."""
    os.makedirs(SPOOL, 0o750, exist_ok=True)
    gid = grp.getgrnam(group).gr_gid
    os.chown(SPOOL, 0, gid)
    os.chmod(SPOOL, 0o750)
    now = time.time()
    for name in os.listdir(SPOOL):
        p = os.path.join(SPOOL, name)
        try:
            if now - os.lstat(p).st_mtime > KEEP_SECONDS:
                os.unlink(p)
        except OSError:
            pass
    return gid


def keep_result(content, gid):
    """Store gzip(content) in the spool (0640, root and the pcap group): (its ID, gzip'd size)."""
    rid = secrets.token_hex(16)
    path = os.path.join(SPOOL, rid + ".gz")
    packed = gzip.compress(content, 6, mtime=0)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    with os.fdopen(fd, "wb") as f:
        os.fchown(f.fileno(), 0, gid)
        f.write(packed)
    os.replace(path + ".tmp", path)
    return rid, len(packed)


def result_path(rid):
    if not RESULT_ID.match(rid):
        raise Refused("%r is not a result ID" % rid[:40])
    return os.path.join(SPOOL, rid + ".gz")


# --- the commands ---------------------------------------------------------------------------
def run(request, env):
    tree, flows, max_bytes = decode(request)
    gid = spool(env["MIRRORCAP_CAPTURE_GROUP"])
    srcs, built, skipped = sources(env["MIRRORCAP_CAPTURE_DIR"])
    rows = select(srcs, tree)
    info = dict(files=len(srcs), indexed_here=built, skipped=len(skipped), skipped_names=skipped[:MAX_SKIPPED],
                flows=len(rows), damaged=damaged(srcs)[:MAX_SKIPPED])
    if flows:
        content = "".join(json.dumps({k: v for k, v in r.items() if k != "runs"}, separators=(",", ":")) + "\n"
                          for r in rows).encode()
        count, read = len(rows), 0
    else:
        try:
            pkts, read = packets(srcs, rows, tree, max_bytes)
        except Refused as e:
            if str(e) != "too_big":
                raise
            return answer("too_big", max_bytes=max_bytes, **info)
        content, count = pcap_bytes(pkts) if pkts else b"", len(pkts)
        info["packets"] = count
    if not count:
        return answer("nothing", **info)
    if len(content) > max_bytes:
        return answer("too_big", max_bytes=max_bytes, **info)
    rid, packed = keep_result(content, gid)
    return answer("found", id=rid, kind="flows" if flows else "pcap", bytes=len(content), gz_bytes=packed,
                  sha256=hashlib.sha256(content).hexdigest(), chunk=CHUNK, read_bytes=read, **info)


def chunk(rid, offset):
    fd = open_file(result_path(rid))
    if fd is None:
        raise Refused("no result %s (fetched and forgotten, or older than %d s): run the query again" % (rid, KEEP_SECONDS))
    with os.fdopen(fd, "rb") as f:
        f.seek(offset)
        sys.stdout.write(base64.b64encode(f.read(CHUNK)).decode() + "\n")
    return 0


def forget(rid):
    try:
        os.unlink(result_path(rid))
    except FileNotFoundError:
        pass
    return 0


def main(argv):
    p = argparse.ArgumentParser(prog="mirrorcap-find", description=__doc__.split("\n")[0].split(": ", 1)[1])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--request", metavar="BASE64", help="run the query (base64 of the request JSON)")
    g.add_argument("--chunk", nargs=2, metavar=("ID", "OFFSET"), help="a piece of a result, base64")
    g.add_argument("--forget", metavar="ID", help="delete a result")
    p.add_argument("--env-file", default=host.ENV_FILE, help="the host's settings (default: %(default)s)")
    args = p.parse_args(argv[1:])
    try:
        if args.chunk:
            if not args.chunk[1].isdigit():
                raise Refused("OFFSET is a number of bytes")
            return chunk(args.chunk[0], int(args.chunk[1]))
        if args.forget:
            return forget(args.forget)
        return run(args.request, host.read_env(args.env_file))
    except Refused as e:
        return answer("refused", why=str(e))
    except (OSError, KeyError) as e:  # no env file, an unreadable capture directory, no pcap group
        return answer("refused", why="%s: %s" % (type(e).__name__, e))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
MIRRORCAP_USR_LOCAL_SBIN_MIRRORCAP_FIND
chmod 0755 '/usr/local/sbin/mirrorcap-find.mirrorcap-new'
mv -f '/usr/local/sbin/mirrorcap-find.mirrorcap-new' '/usr/local/sbin/mirrorcap-find'

cat > '/etc/systemd/system/mirrorcap.target.mirrorcap-new' <<'MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_TARGET'
[Unit]
Description=mirrorcap: the capture (pcap volume, decapsulation, one capture per VNI, retention)
Documentation=file:///usr/local/share/doc/mirrorcap/README
# Never holds up boot: a volume attached late or a metadata service that does not
# answer is waited for here, without a deadline, while the rest of the host
# (Session Manager, cloud-init) comes up. `systemctl start mirrorcap.target`
# starts whatever part of the capture is not running.
DefaultDependencies=no
Conflicts=shutdown.target
Before=shutdown.target

[Install]
WantedBy=multi-user.target
MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_TARGET
chmod 0644 '/etc/systemd/system/mirrorcap.target.mirrorcap-new'
mv -f '/etc/systemd/system/mirrorcap.target.mirrorcap-new' '/etc/systemd/system/mirrorcap.target'

cat > '/etc/systemd/system/mirrorcap-settings.service.mirrorcap-new' <<'MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_SETTINGS_SERVICE'
[Unit]
Description=mirrorcap: the instance's settings from its current user data (a deploy may have changed them)
Documentation=file:///usr/local/share/doc/mirrorcap/README
Wants=network-online.target
After=network-online.target
# Before the volume and the interfaces: they start with the settings the deploy asked for.
Before=mirrorcap-storage.service mirrorcap-decap.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/libexec/mirrorcap/settings
# Bounded: without the metadata service the settings stay as they are.
TimeoutStartSec=180

[Install]
WantedBy=mirrorcap.target
MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_SETTINGS_SERVICE
chmod 0644 '/etc/systemd/system/mirrorcap-settings.service.mirrorcap-new'
mv -f '/etc/systemd/system/mirrorcap-settings.service.mirrorcap-new' '/etc/systemd/system/mirrorcap-settings.service'

cat > '/etc/systemd/system/mirrorcap-storage.service.mirrorcap-new' <<'MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_STORAGE_SERVICE'
[Unit]
Description=mirrorcap: mount the pcap volume at the capture directory
Documentation=file:///usr/local/share/doc/mirrorcap/README
After=local-fs.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/libexec/mirrorcap/storage
# Waits for the volume as long as it takes (the script says what it waits for).
TimeoutStartSec=infinity
# No PrivateTmp=, ProtectHome=, ProtectSystem=, ReadWritePaths= or any other
# option that gives the unit its own mount namespace: the mount this unit makes
# must be the host's, seen by every other unit and by people. It runs as root to
# read the block device, format a blank one and mount it.

[Install]
WantedBy=mirrorcap.target
MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_STORAGE_SERVICE
chmod 0644 '/etc/systemd/system/mirrorcap-storage.service.mirrorcap-new'
mv -f '/etc/systemd/system/mirrorcap-storage.service.mirrorcap-new' '/etc/systemd/system/mirrorcap-storage.service'

cat > '/etc/systemd/system/mirrorcap-recover.service.mirrorcap-new' <<'MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_RECOVER_SERVICE'
[Unit]
Description=mirrorcap: remount the pcap volume when its file system shut down
Documentation=file:///usr/local/share/doc/mirrorcap/README

[Service]
Type=oneshot
ExecStart=/usr/local/libexec/mirrorcap/recover
# Backs off up to 300 s between remounts of a volume that keeps failing.
TimeoutStartSec=15min
# As mirrorcap-storage: no option that gives the unit its own mount namespace, so
# its unmount and the storage unit's mount are the host's.
MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_RECOVER_SERVICE
chmod 0644 '/etc/systemd/system/mirrorcap-recover.service.mirrorcap-new'
mv -f '/etc/systemd/system/mirrorcap-recover.service.mirrorcap-new' '/etc/systemd/system/mirrorcap-recover.service'

cat > '/etc/systemd/system/mirrorcap-recover.path.mirrorcap-new' <<'MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_RECOVER_PATH'
[Unit]
Description=mirrorcap: remount the pcap volume when a capture finds its file system failed
Documentation=file:///usr/local/share/doc/mirrorcap/README

[Path]
# A capture's watcher (the capture user, no privilege) can only ask: it writes its
# VNI here (its RuntimeDirectory); mirrorcap-recover checks the volume itself.
DirectoryNotEmpty=/run/mirrorcap/recover
Unit=mirrorcap-recover.service

[Install]
WantedBy=mirrorcap.target
MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_RECOVER_PATH
chmod 0644 '/etc/systemd/system/mirrorcap-recover.path.mirrorcap-new'
mv -f '/etc/systemd/system/mirrorcap-recover.path.mirrorcap-new' '/etc/systemd/system/mirrorcap-recover.path'

cat > '/etc/systemd/system/mirrorcap-recover.timer.mirrorcap-new' <<'MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_RECOVER_TIMER'
[Unit]
Description=mirrorcap: check every minute that the pcap volume reads (remount it if its file system shut down)
Documentation=file:///usr/local/share/doc/mirrorcap/README

[Timer]
# The path unit answers a capture's watcher at once; this catches what no watcher
# saw (a capture unit that cannot start on the dead file system has no watcher).
# Cheap: one stat of the capture directory.
OnBootSec=1min
OnUnitInactiveSec=1min
AccuracySec=5s

[Install]
WantedBy=mirrorcap.target
MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_RECOVER_TIMER
chmod 0644 '/etc/systemd/system/mirrorcap-recover.timer.mirrorcap-new'
mv -f '/etc/systemd/system/mirrorcap-recover.timer.mirrorcap-new' '/etc/systemd/system/mirrorcap-recover.timer'

cat > '/etc/systemd/system/mirrorcap-decap.service.mirrorcap-new' <<'MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_DECAP_SERVICE'
[Unit]
Description=mirrorcap: VXLAN decapsulation on the mirror ENI
Documentation=file:///usr/local/share/doc/mirrorcap/README
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/libexec/mirrorcap/decap
# systemctl reload: the same script again, converging on the env file's VNIs
# (mirrorcap-boot reloads it when the user data runs again).
ExecReload=/usr/local/libexec/mirrorcap/decap
# Waits for the metadata service and the ENI as long as it takes (the script says which).
TimeoutStartSec=infinity
PrivateTmp=yes
ProtectHome=yes
ProtectSystem=full

[Install]
WantedBy=mirrorcap.target
MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_DECAP_SERVICE
chmod 0644 '/etc/systemd/system/mirrorcap-decap.service.mirrorcap-new'
mv -f '/etc/systemd/system/mirrorcap-decap.service.mirrorcap-new' '/etc/systemd/system/mirrorcap-decap.service'

cat > '/etc/systemd/system/mirrorcap-capture@.service.mirrorcap-new' <<'MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_CAPTURE__SERVICE'
[Unit]
Description=mirrorcap: capture VXLAN VNI %i into /var/log/tcpdump
Documentation=file:///usr/local/share/doc/mirrorcap/README
# Storage mounts the volume in the host's namespace and decap creates vxlan%i;
# both are oneshot units that stay active: capture starts after they succeed,
# however long they wait (for a volume attached late, for the metadata service).
Requires=mirrorcap-storage.service mirrorcap-decap.service
After=mirrorcap-storage.service mirrorcap-decap.service
# Stopping the volume's mount unit (systemctl stop) stops capture first.
RequiresMountsFor=/var/log/tcpdump
# Never gives up while the host runs: restarted however often it dies (no start
# limit); mirrorcap-health says "flapping" when it keeps dying.
StartLimitIntervalSec=0
# Except when systemd cannot set up its sandbox (226/NAMESPACE: the pcap volume's
# file system failed): that is retried later each time, not every two seconds.
OnFailure=mirrorcap-capture-backoff@%i.service

[Service]
Type=simple
# tcpdump never runs as root: the capture user opens the packet socket with
# CAP_NET_RAW, the only capability it has (ambient, so it passes to tcpdump;
# bounded, so nothing can gain more). It creates its pcaps itself in the
# directory it owns: no -Z, so no CAP_SETUID/CAP_SETGID to drop privileges and
# no CAP_CHOWN/CAP_DAC_OVERRIDE to create a file as root and hand it over.
# Promiscuous mode is a packet-socket option that CAP_NET_RAW covers, and -B
# sizes a memory-mapped ring, which needs no CAP_NET_ADMIN.
User=mirrorcap
Group=pcap
AmbientCapabilities=CAP_NET_RAW
CapabilityBoundingSet=CAP_NET_RAW
Environment=TZ=UTC
ExecStart=/usr/local/libexec/mirrorcap/capture %i
# systemctl reload: the watcher reads the env file again; tcpdump restarts only
# if its command changed (mirrorcap-boot reloads every capture it keeps).
ExecReload=/bin/kill -HUP $MAINPID
Restart=always
RestartSec=2
RestartPreventExitStatus=226
# SIGTERM to the watcher only: it stops tcpdump, which flushes and prints its counters.
KillMode=mixed
TimeoutStopSec=20
# The loss record (gaps, what they lost, kernel drops, truncated packets, restarts):
# kept across restarts, failures and reboots, for mirrorcap-health.
StateDirectory=mirrorcap/capture-%i
StateDirectoryMode=0750
# tcpdump.log (drop counters) and the interface's recent counts (the heartbeat);
# recover: where the watcher asks mirrorcap-recover to remount a failed volume.
RuntimeDirectory=mirrorcap/capture-%i mirrorcap/recover
RuntimeDirectoryMode=0750
RuntimeDirectoryPreserve=yes
# New pcaps: 0640 (the directory's setgid gives them the pcap group).
UMask=0027
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=/var/log/tcpdump
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_PACKET AF_NETLINK AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native

[Install]
WantedBy=mirrorcap.target
MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_CAPTURE__SERVICE
chmod 0644 '/etc/systemd/system/mirrorcap-capture@.service.mirrorcap-new'
mv -f '/etc/systemd/system/mirrorcap-capture@.service.mirrorcap-new' '/etc/systemd/system/mirrorcap-capture@.service'

cat > '/etc/systemd/system/mirrorcap-capture-backoff@.service.mirrorcap-new' <<'MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_CAPTURE_BACKOFF__SERVICE'
[Unit]
Description=mirrorcap: start capture of VNI %i again, after a back-off, when its sandbox could not be set up
Documentation=file:///usr/local/share/doc/mirrorcap/README
# Started by mirrorcap-capture@%i.service's OnFailure= (226/NAMESPACE only: any other
# stop restarts the capture itself two seconds later).

[Service]
Type=oneshot
ExecStart=/usr/local/libexec/mirrorcap/capture-backoff %i
# Waits at most 60 s before it starts the capture again.
TimeoutStartSec=5min
# As mirrorcap-recover: no sandbox of its own, it only reads the capture directory and asks systemd.
MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_CAPTURE_BACKOFF__SERVICE
chmod 0644 '/etc/systemd/system/mirrorcap-capture-backoff@.service.mirrorcap-new'
mv -f '/etc/systemd/system/mirrorcap-capture-backoff@.service.mirrorcap-new' '/etc/systemd/system/mirrorcap-capture-backoff@.service'

cat > '/etc/systemd/system/mirrorcap-retention.service.mirrorcap-new' <<'MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_RETENTION_SERVICE'
[Unit]
Description=mirrorcap: delete old pcaps and keep a free-space floor
Documentation=file:///usr/local/share/doc/mirrorcap/README
After=mirrorcap-storage.service

[Service]
Type=oneshot
ExecStart=/usr/local/libexec/mirrorcap/retention
# The capture user owns the capture directory, so it may delete in it: no capability at all.
User=mirrorcap
Group=pcap
CapabilityBoundingSet=
NoNewPrivileges=yes
ProtectSystem=strict
# "-": a missing directory (storage never ran) is not a namespace error; the script says so.
ReadWritePaths=-/var/log/tcpdump
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateNetwork=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_UNIX
MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_RETENTION_SERVICE
chmod 0644 '/etc/systemd/system/mirrorcap-retention.service.mirrorcap-new'
mv -f '/etc/systemd/system/mirrorcap-retention.service.mirrorcap-new' '/etc/systemd/system/mirrorcap-retention.service'

cat > '/etc/systemd/system/mirrorcap-retention.timer.mirrorcap-new' <<'MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_RETENTION_TIMER'
[Unit]
Description=mirrorcap: run pcap retention every minute (a burst can fill the disk fast)

[Timer]
# Cheap (one directory listing): every minute keeps the free-space floor close
# behind a burst. A capture that finds its volume full runs retention itself.
OnBootSec=1min
OnUnitActiveSec=1min
AccuracySec=5s

[Install]
WantedBy=mirrorcap.target
MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_RETENTION_TIMER
chmod 0644 '/etc/systemd/system/mirrorcap-retention.timer.mirrorcap-new'
mv -f '/etc/systemd/system/mirrorcap-retention.timer.mirrorcap-new' '/etc/systemd/system/mirrorcap-retention.timer'

cat > '/usr/local/libexec/mirrorcap/metrics.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_METRICS'
#!/usr/bin/python3
"""mirrorcap-metrics: this host's health as CloudWatch metrics, for the stack's alarms.

Run once a minute by mirrorcap-metrics.timer: runs mirrorcap-health, turns its
report into datapoints and publishes them with the AWS CLI (credentials: the
instance role, through IMDSv2) into MIRRORCAP_METRICS_NAMESPACE:

  Capturing        per VNI: 1 when its tcpdump runs and writes, else 0
  PacketsLost      per VNI: packets lost since the last datapoint published
                   (kernel drops + what the capture's gaps lost)
  DiskFreePercent  free space on the pcap volume (when it is mounted)
  ArchiveBacklog   closed pcaps S3 has not confirmed (a capture that archives)

Each datum goes out with the capture's dimensions (what the alarms read: one series
whichever host publishes it) and again with this host's (instance, fleet group).
Publishing never touches capture or health: a failure is recorded in metrics.json
(health's "metrics" check reads it) and the losses wait for the next success.
Runs as root (mirrorcap-health signals tcpdump). Python 3.9 stdlib only.
"""
import datetime as dt
import json
import os
import subprocess
import sys
import time

# The shared module: /usr/local/lib/mirrorcap, from /usr/local/libexec/mirrorcap.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "lib", "mirrorcap"))
import mirrorcap_host as host  # noqa: E402

STATE_FILE = os.path.join(host.STATE_DIR, "metrics.json")
PER_CALL = 20  # datums per PutMetricData: what every CloudWatch API version accepts
HEALTH_TIMEOUT_SECONDS = 60
PUT_TIMEOUT_SECONDS = 30


def log(message):
    print("mirrorcap-metrics: " + message, file=sys.stderr, flush=True)


class Names:
    """The namespace, metric and dimension names, from the env file (contract.py's, rendered)."""

    def __init__(self, env):
        self.namespace = env["MIRRORCAP_METRICS_NAMESPACE"]
        self.capturing, self.lost, self.disk_free, self.backlog = env["MIRRORCAP_METRICS_NAMES"].split()
        self.capture, self.vni, self.instance, self.fleet = env["MIRRORCAP_METRICS_DIMENSIONS"].split()


def grown(totals, key, total):
    """How much a cumulative count grew since `totals` last held it (all of it when it shrank: it started over)."""
    before = totals.get(key)
    totals[key] = total
    if before is None or total < before:
        return total
    return total - before


def measure(report, vnis, totals):
    """[(metric, value, unit, vni or None)] from a health report; `totals` (the cumulative loss
    counts last published) is updated in place."""
    checks = report.get("checks", [])

    def of(name, vni=None):
        return [c for c in checks if c.get("name") == name and (vni is None or c.get("vni") == vni)]

    points = []
    for vni in vnis:
        running = [c["status"] for c in of("tcpdump", vni) + of("writing", vni)]
        points.append(("capturing", 1 if running and all(s == "ok" for s in running) else 0, "None", vni))
        lost = 0
        for c in of("writing", vni):
            lost += grown(totals, "gaps:%s" % vni, int(c.get("lost_packets_max") or 0))
        for c in of("drops", vni):
            if "dropped_total" in c:  # absent when tcpdump gave no counters: the next run counts them
                lost += grown(totals, "drops:%s" % vni, int(c["dropped_total"]))
        points.append(("lost", lost, "Count", vni))
    for c in of("disk"):
        if "free_percent" in c:
            points.append(("disk_free", float(c["free_percent"]), "Percent", None))
    for c in of("archive"):
        if "backlog" in c:
            points.append(("backlog", int(c["backlog"]), "Count", None))
    return points


def datums(points, names, capture, instance, fleet_group, at):
    """Each point with the capture's dimensions, then with this host's."""
    stamp = dt.datetime.fromtimestamp(at, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = []
    for metric, value, unit, vni in points:
        common = [{"Name": names.capture, "Value": capture}]
        own = common + [{"Name": names.instance, "Value": instance}]
        if fleet_group:
            own.append({"Name": names.fleet, "Value": fleet_group})
        if vni is not None:
            common = common + [{"Name": names.vni, "Value": str(vni)}]
            own = own + [{"Name": names.vni, "Value": str(vni)}]
        for dims in (common, own):
            out.append({"MetricName": getattr(names, metric), "Dimensions": dims, "Value": value, "Unit": unit,
                        "Timestamp": stamp})
    return out


def instance_id():
    return host.imds("/latest/meta-data/instance-id").decode().strip()


def health_report():
    r = subprocess.run(["mirrorcap-health", "--json", "--sample-seconds", "0", "--reader", "metrics"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=HEALTH_TIMEOUT_SECONDS)
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise RuntimeError("mirrorcap-health exited %d: %s" % (r.returncode, r.stderr.strip()[-300:]))


def put(region, namespace, data):
    """Publish; None when CloudWatch accepted every datum, else why not."""
    for i in range(0, len(data), PER_CALL):
        _, error = host.aws_cli(["cloudwatch", "put-metric-data", "--region", region, "--namespace", namespace,
                                 "--metric-data", json.dumps(data[i:i + PER_CALL])],
                                attempts=2, connect_timeout=5, read_timeout=10, timeout=PUT_TIMEOUT_SECONDS)
        if error:
            return error
    return None


def publish(env, state, now, report=None):
    """One run: measure, publish, record the outcome in `state`. Returns the error or None."""
    state["last_attempt"] = now
    totals = dict(state.get("totals") or {})
    try:
        names = Names(env)
        if report is None:
            report = health_report()
        points = measure(report, env["MIRRORCAP_VNIS"].split(), totals)
        data = datums(points, names, env["MIRRORCAP_CAPTURE"], instance_id(), env.get("MIRRORCAP_FLEET_GROUP", ""), now)
        error = put(env["MIRRORCAP_REGION"], names.namespace, data)
    except (OSError, KeyError, ValueError, RuntimeError, subprocess.SubprocessError) as e:
        error = "%s: %s" % (type(e).__name__, e)
    if error:
        state["failures"] = int(state.get("failures") or 0) + 1
        state["last_error"] = error
    else:  # the losses just published are not counted again
        state.update(totals=totals, failures=0, last_error=None, last_published=now, published=len(data))
    return error


def main(argv):
    if len(argv) != 1:
        print("usage: mirrorcap-metrics (run by mirrorcap-metrics.timer)", file=sys.stderr)
        return 2
    try:
        env = host.read_env()
    except OSError as e:
        log("cannot read %s: %s" % (host.ENV_FILE, e))
        return 2
    state = host.read_json(STATE_FILE, {}) or {}
    error = publish(env, state, time.time())
    os.makedirs(host.STATE_DIR, exist_ok=True)
    host.write_json(STATE_FILE, state)
    if error:
        log("NOT PUBLISHED (%d run(s) in a row): %s" % (state["failures"], error))
    else:
        log("published %d datapoints to %s" % (state["published"], env.get("MIRRORCAP_METRICS_NAMESPACE")))
    return 0  # a failed publish is health's to report, not a failed unit


if __name__ == "__main__":
    sys.exit(main(sys.argv))
MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_METRICS
chmod 0755 '/usr/local/libexec/mirrorcap/metrics.mirrorcap-new'
mv -f '/usr/local/libexec/mirrorcap/metrics.mirrorcap-new' '/usr/local/libexec/mirrorcap/metrics'

cat > '/etc/systemd/system/mirrorcap-metrics.service.mirrorcap-new' <<'MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_METRICS_SERVICE'
[Unit]
Description=mirrorcap: publish mirrorcap-health's verdict as CloudWatch metrics
Documentation=file:///usr/local/share/doc/mirrorcap/README
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
# Root: mirrorcap-health signals tcpdump for its counters. Writes only health's and its own
# state; credentials: the instance role (IMDSv2); PutMetricData into one namespace only (IAM).
ExecStart=/usr/local/libexec/mirrorcap/metrics
Nice=10
NoNewPrivileges=yes
ProtectSystem=strict
StateDirectory=mirrorcap
ReadWritePaths=-/run/mirrorcap
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
TimeoutStartSec=150
MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_METRICS_SERVICE
chmod 0644 '/etc/systemd/system/mirrorcap-metrics.service.mirrorcap-new'
mv -f '/etc/systemd/system/mirrorcap-metrics.service.mirrorcap-new' '/etc/systemd/system/mirrorcap-metrics.service'

cat > '/etc/systemd/system/mirrorcap-metrics.timer.mirrorcap-new' <<'MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_METRICS_TIMER'
[Unit]
Description=mirrorcap: publish the capture's health as CloudWatch metrics every minute

[Timer]
# The alarms' period is a minute: one datapoint per minute each. A run that has not
# finished is not started twice.
OnActiveSec=0
OnUnitInactiveSec=1min
AccuracySec=5s

[Install]
WantedBy=timers.target
MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_METRICS_TIMER
chmod 0644 '/etc/systemd/system/mirrorcap-metrics.timer.mirrorcap-new'
mv -f '/etc/systemd/system/mirrorcap-metrics.timer.mirrorcap-new' '/etc/systemd/system/mirrorcap-metrics.timer'

cat > '/etc/systemd/system/mirrorcap.target.d/metrics.conf.mirrorcap-new' <<'MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_TARGET_D_METRICS_CONF'
# mirrorcap: every capture host publishes its health as CloudWatch metrics (the
# stack's alarms read them): the capture's target brings the publisher's timer.
[Unit]
Wants=mirrorcap-metrics.timer
MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_TARGET_D_METRICS_CONF
chmod 0644 '/etc/systemd/system/mirrorcap.target.d/metrics.conf.mirrorcap-new'
mv -f '/etc/systemd/system/mirrorcap.target.d/metrics.conf.mirrorcap-new' '/etc/systemd/system/mirrorcap.target.d/metrics.conf'

if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
echo "mirrorcap bake: installed (30 files)$termshark"
