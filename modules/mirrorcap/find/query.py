"""The query language of `mirrorcap find`: a subset of tcpdump's filter syntax, plus VNI and time.

    expr    := and ("or" | "||") and ...
    and     := unary ("and" | "&&") unary ...
    unary   := ("not" | "!") unary | "(" expr ")" | term
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

NS = 1_000_000_000
TOKEN = re.compile(r"\s*(\(|\)|&&|\|\||!|±|[^\s()!±]+)")
DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
UNIT_NS = {"ms": NS // 1000, "s": NS, "m": 60 * NS, "h": 3600 * NS, "d": 86400 * NS}


class QueryError(ValueError):
    """A query that does not parse: the message points at the word."""

    def __init__(self, query: str, pos: int, message: str, fix: str):
        self.query, self.pos, self.fix = query, pos, fix
        super().__init__(f"{message}\n  {query}\n  {' ' * pos}^\n  fix: {fix}")
        self.message = message


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
        if not self.toks:
            raise QueryError(self.query, 0, "the query is empty", "give a filter, e.g. 'host 10.0.0.1 and after 1h ago'")
        node = self.expr()
        t = self.peek()
        if t is not None:
            self.fail(t, f"unexpected {t.text!r}", "join terms with 'and' or 'or'; close only parentheses you opened")
        return node

    def expr(self) -> Node:
        node = self.conj()
        while (t := self.peek()) is not None and t.text in ("or", "||"):
            self.i += 1
            node = Node("or", (node, self.conj()))
        return node

    def conj(self) -> Node:
        node = self.unary()
        while (t := self.peek()) is not None and t.text in ("and", "&&"):
            self.i += 1
            node = Node("and", (node, self.unary()))
        return node

    def unary(self) -> Node:
        t = self.take()
        if t.text in ("not", "!"):
            return Node("not", (self.unary(),))
        if t.text == "(":
            node = self.expr()
            close = self.peek()
            if close is None or close.text != ")":
                self.fail(close or _Tok("", len(self.query)), "'(' is never closed", "add ')'")
            self.i += 1
            return node
        return self.term(t)

    def term(self, t: _Tok) -> Node:
        word = t.text
        if word in ("src", "dst"):
            kind = self.take()
            if kind.text not in ("host", "net", "port"):
                self.fail(kind, f"{word!r} must be followed by host, net or port", f"write e.g. '{word} host 10.0.0.1'")
            return self.addressed(kind, word)
        if word in ("host", "net", "port"):
            return self.addressed(t, "any")
        if word in ("tcp", "udp", "icmp"):
            return Node("proto", ({"tcp": 6, "udp": 17, "icmp": 1}[word], word))
        if word in ("ip", "ip6", "arp"):
            return Node("fam", (word,))
        if word == "vni":
            v = self.take()
            if not v.text.isdigit() or int(v.text) >= 1 << 24:
                self.fail(v, f"a VNI is a number below 16777216, not {v.text!r}", "write e.g. 'vni 7'")
            return Node("vni", (int(v.text),))
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
            return Node("time", (at - span, at + span + 1))
        if _looks_like_address(word):
            self.fail(t, f"{word!r} is a value without a keyword", f"write 'host {word}' (each address needs its own 'host')")
        self.fail(t, f"unknown word {word!r}", "use host, net, port, src, dst, tcp, udp, icmp, ip, ip6, arp, vni, "
                  "after, before, around, and, or, not, parentheses")

    def addressed(self, kind: _Tok, direction: str) -> Node:
        v = self.take()
        if kind.text == "port":
            if not v.text.isdigit() or int(v.text) > 65535:
                self.fail(v, f"a port is a number 0-65535, not {v.text!r}", "write e.g. 'port 443' (service names are not read)")
            return Node("port", (direction, int(v.text)))
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
        return int(float(m.group(1)) * UNIT_NS[m.group(2)])

    def time(self) -> int:
        tok = self.take()
        text = tok.text
        if text == "now":
            return _ns(self.now)
        if DURATION.fullmatch(text):
            ago = self.peek()
            if ago is None or ago.text != "ago":
                self.fail(ago or _Tok("", len(self.query)), f"a duration as a time needs 'ago': '{text} ago'", f"write '{text} ago'")
            self.i += 1
            return _ns(self.now) - self.duration(tok)
        if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", text):
            h, mi, *s = (int(x) for x in text.split(":"))
            if h > 23 or mi > 59 or (s and s[0] > 59):
                self.fail(tok, f"{text!r} is not a time of day", "write HH:MM or HH:MM:SS (UTC)")
            day = self.now.astimezone(timezone.utc).replace(hour=h, minute=mi, second=s[0] if s else 0, microsecond=0)
            return _ns(day)
        try:
            at = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            self.fail(tok, f"{text!r} is not a time", "write 2026-12-03T14:10Z (with Z or an offset), 14:05 (UTC today), now, or 15m ago")
        if at.tzinfo is None:
            self.fail(tok, f"{text!r} has no time zone", f"add Z (UTC) or an offset: {text}Z")
        return _ns(at)


def _ns(t: datetime) -> int:
    return int((t - datetime(1970, 1, 1, tzinfo=timezone.utc)) / timedelta(microseconds=1)) * 1000


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
def sql(node: Node, negate: bool = False) -> str:
    """A SQL condition on flow rows (fam, proto, sa, da, sp, dp, vni, first, last): every flow
    holding a packet the query takes passes. Negations are pushed down to the terms, where
    all but time are exact per flow; a time term asks only that the flow's span may hold one."""
    op, a = node.op, node.args
    if op == "not":
        return sql(a[0], not negate)
    if op in ("and", "or"):
        joiner = {("and", False): "AND", ("and", True): "OR", ("or", False): "OR", ("or", True): "AND"}[(op, negate)]
        return f"({sql(a[0], negate)} {joiner} {sql(a[1], negate)})"
    if op == "time":
        # "first"/"last" quoted: keywords in Athena's SQL (DuckDB reads them quoted alike)
        lo, hi = a
        if not negate:
            parts = ([f'"last" >= {int(lo)}'] if lo is not None else []) + ([f'"first" < {int(hi)}'] if hi is not None else [])
            return "(" + " AND ".join(parts) + ")"
        parts = ([f'"first" < {int(lo)}'] if lo is not None else []) + ([f'"last" >= {int(hi)}'] if hi is not None else [])
        return "(" + " OR ".join(parts) + ")"
    cond = _exact(op, a)
    return f"(NOT coalesce({cond}, false))" if negate else f"coalesce({cond}, false)"


def _exact(op: str, a: tuple) -> str:
    if op in ("host", "net"):
        direction, version = a[0], a[1]
        fams = "('ip', 'arp', 'rarp')" if version == 4 else "('ip6')"
        test = (lambda col: f"{col} = '{a[2]}'") if op == "host" else (
            lambda col: f"({col} BETWEEN '{a[2]}' AND '{a[3]}' AND length({col}) = {len(a[2])})")
        cols = {"src": ["sa"], "dst": ["da"], "any": ["sa", "da"]}[direction]
        return f"(fam IN {fams} AND ({' OR '.join(test(c) for c in cols)}))"
    if op == "port":
        direction, port = a
        cols = {"src": ["sp"], "dst": ["dp"], "any": ["sp", "dp"]}[direction]
        return "(" + " OR ".join(f"{c} = {int(port)}" for c in cols) + ")"
    if op == "proto":
        fams = "('ip')" if a[1] == "icmp" else "('ip', 'ip6')"
        return f"(fam IN {fams} AND proto = {int(a[0])})"
    if op == "fam":
        return f"(fam = '{a[0]}')"
    if op == "vni":
        return f"(vni = {int(a[0])})"
    raise AssertionError(op)


def to_bpf(node: Node) -> str:
    """The same filter in tcpdump's syntax, for a query with no time or VNI term (tests compare
    against tcpdump with it)."""
    op, a = node.op, node.args
    if op in ("and", "or"):
        return f"({to_bpf(a[0])} {op} {to_bpf(a[1])})"
    if op == "not":
        return f"(not {to_bpf(a[0])})"
    d = "" if op not in ("host", "net", "port") or a[0] == "any" else a[0] + " "
    if op == "host":
        return d + "host " + str(ipaddress.ip_address(bytes.fromhex(a[2])))
    if op == "net":
        lo, hi = (int(x, 16) for x in a[2:4])
        plen = (len(a[2]) * 4) - (hi - lo).bit_length()
        return d + f"net {ipaddress.ip_address(bytes.fromhex(a[2]))}/{plen}"
    if op == "port":
        return d + f"port {a[1]}"
    if op == "proto":
        return a[1]
    if op == "fam":
        return a[0]
    raise ValueError(f"{op} has no tcpdump equivalent")
