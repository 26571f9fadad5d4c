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
        ok = len(a) == 1 and _int(a[0], 0, (1 << 24) - 1)
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
def flow_may_match(tree, row, negate=False):
    """True when the flow row (an index's "flow" line) may hold a packet the query takes: what
    mirrorcap.find.query.sql() asks DuckDB, decided in Python. Negations are pushed down to
    the terms, where all but time are exact per flow; a time term asks only that the flow's
    span may hold one. A flow of frames cut short (fam "cut") may hold one of any query: its packets are decided
    one by one."""
    if row["fam"] == CUT:
        return True
    op, a = tree[0], tree[1:]
    if op == "not":
        return flow_may_match(a[0], row, not negate)
    if op in ("and", "or"):
        both = (op == "and") != negate
        l, r = flow_may_match(a[0], row, negate), flow_may_match(a[1], row, negate)
        return (l and r) if both else (l or r)
    if op == "time":
        lo, hi = a
        first, last = row["first"], row["last"]
        if not negate:
            return (lo is None or last >= lo) and (hi is None or first < hi)
        return (lo is not None and first < lo) or (hi is not None and last >= hi)
    return _exact(op, a, row) != negate


def _exact(op, a, row):
    if op in ("host", "net"):
        direction, version = a[0], a[1]
        if row["fam"] not in (V4_FAMS if version == 4 else ("ip6",)):
            return False
        cols = {"src": ("sa",), "dst": ("da",), "any": ("sa", "da")}[direction]
        if op == "host":
            return any(row[c] == a[2] for c in cols)
        return any(row[c] is not None and len(row[c]) == len(a[2]) and a[2] <= row[c] <= a[3] for c in cols)
    if op == "port":
        cols = {"src": ("sp",), "dst": ("dp",), "any": ("sp", "dp")}[a[0]]
        return any(row[c] == a[1] for c in cols)
    if op == "proto":
        return row["fam"] in (("ip",) if a[1] == "icmp" else ("ip", "ip6")) and row["proto"] == a[0]
    if op == "fam":
        return row["fam"] == a[0]
    if op == "vni":
        return row["vni"] == a[0]
    raise AssertionError(op)


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
