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
