"""The query language of `mirrorcap find`: a subset of tcpdump's filter syntax, plus VNI and time.

    expr    := unary (("and" | "&&" | "or" | "||") unary)...   one precedence, left to right, as tcpdump:
                                                            `tcp or udp and port 53` is `(tcp or udp) and port 53`
    unary   := ("not" | "!") unary | "(" expr ")" | term
    N       := as tcpdump reads a number: 0x1bb hex, 010 octal (8), else decimal; ASCII digits, below 2**32
    term    := [src|dst] host ADDR | [src|dst] net ADDR[/LEN] | [src|dst] port N
             | tcp | udp | icmp | ip | ip6 | arp | vni N
             | after TIME | before TIME | around TIME ±DURATION (or +-DURATION)
    TIME    := 2026-12-03T14:10Z (an offset or Z required) | 14:05 (today, UTC) | now | DURATION ago

A parsed query compiles two ways that agree by construction: to a predicate on one
packet (its flow key, VNI and time: exact, what tcpdump's filter decides; evaluated by
scripts/host/mirrorcap_query.py, which the host runs too) and to a SQL condition on an index's flow rows (exact for everything but time, where it keeps
every flow that may hold a matching packet; the predicate then decides).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from ..aws_limits import VNI_MAX, VNI_MIN
from .hostindex import hostquery

NS = 1_000_000_000
MAX_DEPTH = hostquery().MAX_DEPTH  # the deepest tree the host's evaluator takes: the parser refuses deeper ones
TOKEN = re.compile(r"\s*(\(|\)|&&|\|\||!|±|[^\s()!±]+)")
DURATION = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,9})?)(ms|s|m|h|d)")
INT64 = (-(1 << 63), (1 << 63) - 1)  # what an index's times and the engines' integers hold: times are clamped to it
UNIT_NS = {"ms": NS // 1000, "s": NS, "m": 60 * NS, "h": 3600 * NS, "d": 86400 * NS}


class QueryError(ValueError):
    """A query that does not parse: the message points at the word."""

    def __init__(self, query: str, pos: int, message: str, fix: str):
        self.query, self.pos = _excerpt(query, pos)  # what is shown of it, escaped, and where the caret goes
        self.fix = fix
        super().__init__(f"{message}\n  {self.query}\n  {' ' * self.pos}^\n  fix: {fix}")
        self.message = message


SHOWN = 60  # characters of the query shown either side of the word an error points at


def _excerpt(query: str, pos: int) -> tuple[str, int]:
    """The query as an error shows it: printable (anything else escaped as repr() escapes it), cut to SHOWN
    characters either side of `pos` (with '...'), and where `pos` lands in that text."""
    lo, hi = max(0, pos - SHOWN), min(len(query), pos + SHOWN)
    head = ("..." if lo else "") + "".join(_printable(c) for c in query[lo:pos])
    tail = "".join(_printable(c) for c in query[pos:hi]) + ("..." if hi < len(query) else "")
    return head + tail, len(head)


def _printable(c: str) -> str:
    return c if c.isprintable() else repr(c)[1:-1]


@dataclass(frozen=True)
class Node:
    op: str  # and or not host net port proto fam vni time
    args: tuple


@dataclass
class _Tok:
    text: str
    pos: int


def tokenize(query: str) -> list[_Tok]:
    out, pos = [], 0
    while True:
        m = TOKEN.match(query, pos)
        if not m:
            break
        out.append(_Tok(m.group(1), m.start(1)))
        pos = m.end()
    return out


def parse(query: str, now: datetime | None = None) -> Node:
    """The query as a tree; QueryError pointing at the word that does not fit."""
    return _Parser(query, now or datetime.now(timezone.utc)).parse()


class _Parser:
    def __init__(self, query: str, now: datetime):
        self.query, self.now = query, now
        self.toks = tokenize(query)
        self.i = 0

    # -- helpers
    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> _Tok:
        t = self.peek()
        if t is None:
            raise QueryError(self.query, len(self.query), "the query ends where a value was expected",
                             "complete it, e.g. 'host 10.0.0.1 and port 443'")
        self.i += 1
        return t

    def fail(self, tok: _Tok, message: str, fix: str):
        raise QueryError(self.query, tok.pos, message, fix)

    # -- grammar
    def parse(self) -> Node:
        """tcpdump's grammar: `and` and `or` of one precedence, left to right; `not` binds tighter; parentheses.
        Read without recursion (a query of any length or nesting is read, or refused, with a message): each
        open parenthesis is a frame on a list. A chain of one operator becomes one list of operands (they
        associate, also where tcpdump's filter gives up on a cut frame: left to right, short-circuit), balanced
        into a tree at the end; `not not X` is X. A tree deeper than MAX_DEPTH is refused."""
        if not self.toks:
            raise QueryError(self.query, 0, "the query is empty", "give a filter, e.g. 'host 10.0.0.1 and after 1h ago'")
        frames = [_Frame(None)]
        while True:
            f = frames[-1]
            t = self.take()
            if t.text in ("not", "!"):
                f.nots += 1
                continue
            if t.text == "(":
                frames.append(_Frame(t))
                continue
            if t.text == ")":
                self.fail(t, "unexpected ')'", "put a term inside the parentheses, e.g. '(tcp or udp)'")
            self.operand(f, self.term(t), t)
            while True:  # after an operand: an operator, ')' or the end
                t = self.peek()
                if t is None:
                    if len(frames) > 1:
                        self.fail(_Tok("", len(self.query)), "'(' is never closed", "add ')'")
                    node = _balanced(frames[0].acc)
                    if depth(node) > MAX_DEPTH:
                        self.fail(self.toks[0], f"the query is more than {MAX_DEPTH} levels deep", "write it flatter: fewer "
                                  "alternations of 'and' and 'or', fewer nested parentheses")
                    return node
                self.i += 1
                if t.text in ("and", "&&", "or", "||"):
                    frames[-1].op = "and" if t.text in ("and", "&&") else "or"
                    break
                if t.text == ")" and len(frames) > 1:
                    inner = frames.pop()
                    self.operand(frames[-1], inner.acc, inner.open)
                    continue
                self.fail(t, f"unexpected {t.text!r}", "join terms with 'and' or 'or'; close only parentheses you opened")

    def operand(self, f: "_Frame", x, at: _Tok) -> None:
        """Put operand x (after the frame's pending `not`s) into frame f's chain."""
        if f.nots % 2:
            x = _Chain("not", [x])
        f.nots = 0
        if f.acc is None:
            f.acc = x
            return
        if not (isinstance(f.acc, _Chain) and f.acc.op == f.op):
            f.acc = _Chain(f.op, [f.acc])
        for kid in x.kids if isinstance(x, _Chain) and x.op == f.op else [x]:  # (a or b) or (c or d): one chain
            f.acc.add(kid)
        if _depth(f.acc) > MAX_DEPTH:
            self.fail(at, f"the query nests more than {MAX_DEPTH} levels deep here", "write it flatter: fewer "
                      "alternations of 'and' and 'or', fewer nested parentheses (a long 'or' of ports or hosts is fine)")

    def term(self, t: _Tok) -> Node:
        word = t.text
        if word in ("src", "dst"):
            kind = self.take()
            if kind.text not in ("host", "net", "port"):
                self.fail(kind, f"{word!r} must be followed by host, net or port", f"write e.g. '{word} host 10.0.0.1'")
            return self.addressed(kind, word)
        if word in ("host", "net", "port"):
            return self.addressed(t, "any")
        if word in hostquery().PROTOS:
            return Node("proto", (hostquery().PROTOS[word], word))
        if word in hostquery().FAMS:
            return Node("fam", (word,))
        if word == "vni":
            v = self.take()
            n = _number_value(v.text)
            if isinstance(n, str) or not VNI_MIN <= n <= VNI_MAX:
                self.fail(v, f"a VNI is a number from {VNI_MIN} to {VNI_MAX}, not {_shown(v.text)}", "write e.g. 'vni 7'")
            return Node("vni", (n,))
        if word in ("after", "before"):
            at = self.time()
            return Node("time", (at, None) if word == "after" else (None, at))
        if word == "around":
            at = self.time()
            pm = self.take()
            if pm.text == "±":
                d = self.take()
            elif pm.text.startswith("±") or pm.text.startswith("+-"):
                d = _Tok(pm.text.lstrip("±+-"), pm.pos + (1 if pm.text.startswith("±") else 2))
            elif pm.text == "+-":
                d = self.take()
            else:
                self.fail(pm, f"'around TIME' takes '±DURATION' next, not {pm.text!r}", "write e.g. 'around 14:05 ±2m' (or +-2m)")
            span = self.duration(d)
            return Node("time", (_clamp(at - span), _clamp(at + span + 1)))
        if _looks_like_address(word):
            self.fail(t, f"{word!r} is a value without a keyword", f"write 'host {word}' (each address needs its own 'host')")
        self.fail(t, f"unknown word {word!r}", "use host, net, port, src, dst, tcp, udp, icmp, ip, ip6, arp, vni, "
                  "after, before, around, and, or, not, parentheses")

    def addressed(self, kind: _Tok, direction: str) -> Node:
        v = self.take()
        if kind.text == "port":
            n = _number_value(v.text)
            if isinstance(n, str) or n > 65535:
                why = n if isinstance(n, str) else "above 65535"
                self.fail(v, f"a port is a number 0-65535, not {_shown(v.text)} ({why})",
                          "write e.g. 'port 443' (as tcpdump: 010 is octal 8, 0x1bb hex; service names are not read)")
            return Node("port", (direction, n))
        if kind.text == "host":
            try:
                a = ipaddress.ip_address(v.text)
            except ValueError:
                self.fail(v, f"{v.text!r} is not an IPv4 or IPv6 address", "write e.g. 'host 10.0.3.7' (names are not resolved)")
            return Node("host", (direction, a.version, a.packed.hex()))
        try:
            n = ipaddress.ip_network(v.text, strict=True)
        except ValueError as e:
            self.fail(v, f"{v.text!r} is not a network ({e})", "write e.g. 'net 10.0.0.0/16' (host bits zero)")
        return Node("net", (direction, n.version, n.network_address.packed.hex(), n.broadcast_address.packed.hex()))

    def duration(self, tok: _Tok) -> int:
        m = DURATION.fullmatch(tok.text)
        if not m:
            self.fail(tok, f"{tok.text!r} is not a duration", "write a number and a unit: 90s, 15m, 2h, 3d")
        whole, _, frac = m.group(1).partition(".")
        unit = UNIT_NS[m.group(2)]
        return int(whole) * unit + int(frac or "0") * unit // 10 ** len(frac or "0")

    def time(self) -> int:
        return _clamp(self._time())

    def _time(self) -> int:
        tok = self.take()
        if not tok.text.isascii():
            self.fail(tok, f"{_shown(tok.text)} is not a time (only ASCII digits are read)", "write 2026-12-03T14:10Z, 14:05, now, or 15m ago")
        text = tok.text
        if text == "now":
            return _ns(self.now)
        if DURATION.fullmatch(text):
            ago = self.peek()
            if ago is None or ago.text != "ago":
                self.fail(ago or _Tok("", len(self.query)), f"a duration as a time needs 'ago': '{text} ago'", f"write '{text} ago'")
            self.i += 1
            return _ns(self.now) - self.duration(tok)
        if re.fullmatch(r"[0-9]{1,2}:[0-9]{2}(:[0-9]{2})?", text):
            h, mi, *s = (int(x) for x in text.split(":"))
            if h > 23 or mi > 59 or (s and s[0] > 59):
                self.fail(tok, f"{text!r} is not a time of day", "write HH:MM or HH:MM:SS (UTC)")
            day = self.now.astimezone(timezone.utc).replace(hour=h, minute=mi, second=s[0] if s else 0, microsecond=0)
            return _ns(day)
        try:
            at = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            if at.tzinfo is not None:
                return _ns(at)
        except (ValueError, OverflowError):
            self.fail(tok, f"{text!r} is not a time", "write 2026-12-03T14:10Z (with Z or an offset), 14:05 (UTC today), now, or 15m ago")
        self.fail(tok, f"{text!r} has no time zone", f"add Z (UTC) or an offset: {text}Z")


class _Frame:
    """An open parenthesis (the whole query: open None): what it holds so far."""

    def __init__(self, open_: _Tok | None):
        self.open, self.acc, self.op, self.nots = open_, None, None, 0


class _Chain:
    """One operator over operands in order: and/or over two or more, not over one."""

    def __init__(self, op: str, kids: list):
        self.op, self.kids, self.depth = op, [], 1
        for k in kids:
            self.add(k)

    def add(self, kid) -> None:
        self.kids.append(kid)
        self.depth = max(self.depth, 1 + _depth(kid))


def _depth(x) -> int:
    return x.depth if isinstance(x, _Chain) else 1


def _balanced(x) -> Node:
    """The tree of a parsed chain: each and/or chain as a balanced tree of its operands in their order
    (a long 'or' of ports is a few levels deep, not one a port)."""
    if not isinstance(x, _Chain):
        return x
    if x.op == "not":
        node = Node("not", (_balanced(x.kids[0]),))
    else:
        node = _pairs(x.op, [_balanced(k) for k in x.kids])
    return node


def _pairs(op: str, nodes: list[Node]) -> Node:
    while len(nodes) > 1:
        nodes = [Node(op, (nodes[i], nodes[i + 1])) if i + 1 < len(nodes) else nodes[i] for i in range(0, len(nodes), 2)]
    return nodes[0]


def depth(node: Node) -> int:
    """How many levels a tree has (a term: 1)."""
    if node.op in ("and", "or", "not"):
        return 1 + max(depth(x) for x in node.args)
    return 1


NUMBER = re.compile(r"0[xX][0-9A-Fa-f]+|[0-9]+")


def _number_value(text: str) -> int | str:
    """A number as tcpdump reads it (0x.. hex, 0.. octal, else decimal; ASCII digits, 32 bits), or why not."""
    if not NUMBER.fullmatch(text):
        return "not a number tcpdump reads"
    if len(text.lstrip("0xX")) > 11:
        return "it overflows 32 bits"
    if text[:2] in ("0x", "0X"):
        return int(text[2:], 16)
    if len(text) > 1 and text[0] == "0":
        if not set(text) <= set("01234567"):
            return "a number starting with 0 is octal to tcpdump, and this one has a digit 8 or 9"
        return int(text, 8)
    value = int(text)
    return value if value < 1 << 32 else "it overflows 32 bits"


def _ns(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1) * 1000


def _clamp(ns: int) -> int:
    """A time as the engines hold it: a time before or after any 64-bit nanosecond (year 1677 to 2262) is the first
    or last one, which no packet's time passes (`after 0001-01-01T00:00Z` takes every packet)."""
    return min(max(ns, INT64[0]), INT64[1])


def _shown(text: str) -> str:
    """A word of the query as an error quotes it: escaped, and cut when long."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _looks_like_address(word: str) -> bool:
    try:
        ipaddress.ip_address(word)
        return True
    except ValueError:
        return False


def time_bounds(node: Node) -> tuple[int | None, int | None]:
    """[lo, hi) holding every packet the query can take (None: unbounded on that side): which
    files to look at before any index is read. The host's evaluator decides it, as it does on the host."""
    from .hostindex import hostquery
    return tuple(hostquery().time_bounds(tree(node)))


# --- one packet ----------------------------------------------------------------------
def tree(node: Node) -> list:
    """The query as the JSON tree scripts/host/mirrorcap_query.py evaluates (times already absolute)."""
    if node.op in ("and", "or", "not"):
        return [node.op, *(tree(x) for x in node.args)]
    return [node.op, *node.args]


def predicate(node: Node):
    """A function (key, vni, ts_ns) -> bool deciding one packet; key as mirrorcap_index.flow_key gives it.
    The host's evaluator decides it: the same code the host runs under mirrorcap-find."""
    from .hostindex import hostquery
    q = hostquery()
    return q.predicate(q.check(tree(node)))


# --- an index's flow rows --------------------------------------------------------------
def sql(node: Node) -> str:
    """A SQL condition on flow rows (fam, proto, sa, da, sp, dp, vni, first, last): every flow holding a packet the
    query takes passes. Written from the host evaluator's flow_condition, which it decides in Python too: one
    definition of what each term asks of a flow, for DuckDB, Athena and the host."""
    q = hostquery()
    return q.sql(q.flow_condition(tree(node)))


def to_bpf(node: Node) -> str:
    """The same filter in tcpdump's syntax, for a query with no time or VNI term (tests compare against tcpdump with
    it; libpcap decides frames cut short with it): the host's evaluator writes it."""
    return hostquery().bpf(tree(node))
