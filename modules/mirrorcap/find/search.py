"""`mirrorcap find` over a directory: index what has none, pick flows with DuckDB, read only their ranges.

The SQL runs on the index files as they are (gzip'd JSON lines); the ranges it
names are read from the pcaps, every packet in them decided by the query's
predicate (the index narrows, the packet decides), merged in time order.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import sys
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MirrorcapError, Problem
from .hostindex import hostquery, indexer
from .prune import may_take
from .query import Node, tree
from .select import flows_sql

DUCKDB_TYPES = {"text": "VARCHAR", "int": "INTEGER", "bigint": "BIGINT"}
FLOW_COLUMNS = "{" + ", ".join(f"{name}: '{DUCKDB_TYPES[kind]}'" for name, kind in indexer().FLOW_SCHEMA) + "}"


@dataclass
class Source:
    pcap: Path | None  # a local file; None when fetch reads it (an archived pcap)
    index: Path
    meta: dict  # the index's file line
    fetch: object = None  # (start, end) -> those bytes of the pcap, for one not on this machine
    name: str = ""  # what to call it in progress and --flows (default: the local file's name)

    def label(self) -> str:
        return self.name or (self.pcap.name if self.pcap else self.index.name)


@dataclass
class Found:
    flows: list[dict]
    sources: dict[str, Source]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why) not a pcap we read
    index_bytes: int = 0
    fetched_bytes: int = 0  # of pcaps, read for the answer
    remote_bytes: int = 0  # of those, fetched from S3 (ranged GETs)


def sources(directory: Path, index_dir: Path | None = None, progress=None) -> tuple[list[Source], list[tuple[str, str]]]:
    """Every pcap/pcapng file in `directory` and its subdirectories, each with a current index (built when
    missing, unreadable or not of the pcap as it is now: beside it when its directory is writable, else
    under index_dir). Symbolic links and what is not a regular file are skipped and said so; a file or
    directory that cannot be read ends the search (exit 2): an answer without it would be wrong."""
    ix = indexer()
    if not directory.is_dir():
        raise MirrorcapError([Problem("command line", "--dir", f"{directory} is not a directory", "give the directory holding the pcaps")])
    found, skipped = [], []
    for p, why in _files(directory):
        if why is not None:
            skipped.append((_shown(p), why))
            continue
        try:
            fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError as e:
            raise _unreadable(p, e) from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            magic = f.read(4)
            if magic not in ix.PCAP_MAGIC and magic != ix.PCAPNG_SHB:
                skipped.append((_shown(p), "not a pcap or pcapng file"))
                continue
            out = _index_path(p, index_dir)
            meta = _current_meta(ix, out, fd, st, shared=out.parent != p.parent)
        if meta is None:
            if progress:
                progress(f"indexing {p.relative_to(directory)}")
            try:
                out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                meta, _ = ix.write(str(p), str(out))
            except ix.LinkTypeError as e:
                raise MirrorcapError([Problem("command line", "--dir", f"{_shown(p)}: {e}", "search it with tcpdump -r, "
                                              "or move it out of --dir (find answers only what it reads as tcpdump does)")]) from None
            except (OSError, ValueError, struct.error, ix.IndexError_) as e:
                skipped.append((_shown(p), _shown(f"cannot index: {e}")))
                continue
        found.append(Source(p, out, meta))
    return found, skipped


def _files(directory: Path):
    """(path, None) of every regular file under `directory` (subdirectories too, in name order), and
    (path, why) of what is skipped: symbolic links (not followed: a link may lead out of the directory, back
    into it, or to a file read twice) and what is not a regular file."""
    ix = indexer()

    def unreadable(e: OSError):
        raise _unreadable(Path(e.filename or directory), e)
    for root, dirs, files in os.walk(directory, onerror=unreadable):
        root_p = Path(root)
        for d in sorted(dirs):
            if (root_p / d).is_symlink():
                yield root_p / d, "a symbolic link to a directory: not followed (give its target as --dir)"
        dirs[:] = sorted(d for d in dirs if not (root_p / d).is_symlink())
        for name in sorted(files):
            p = root_p / name
            if name.endswith((ix.SUFFIX, ix.FAILED_SUFFIX, ".tmp")):
                continue
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                yield p, "a symbolic link: not followed (give the directory of its target as --dir)"
            elif not stat.S_ISREG(st.st_mode):
                yield p, "not a regular file (a pipe, socket or device)"
            else:
                yield p, None


def _unreadable(p: Path, e: OSError) -> MirrorcapError:
    return MirrorcapError([Problem("command line", "--dir", f"{_shown(p)} cannot be read ({e.strerror or e})",
                                   "make it readable (or run as a user who can read it), or move it out of --dir")])


def _shown(p) -> str:
    """A path as a message shows it: anything unprintable escaped."""
    text = str(p)
    return text if text.isprintable() else repr(text)[1:-1]


def _index_path(p: Path, index_dir: Path | None) -> Path:
    """Where `p`'s index goes: beside it when its directory is writable, else under index_dir (default: a directory
    of this user's under the temporary directory), in a directory named for the pcap's own (a hash of its absolute
    path: two directories' same-named pcaps get two indexes)."""
    ix = indexer()
    if os.access(p.parent, os.W_OK):
        return Path(ix.index_path(str(p)))
    base = index_dir or Path(tempfile.gettempdir()) / f"mirrorcap-index-{os.getuid() if hasattr(os, 'getuid') else 0}"
    where = hashlib.sha256(str(p.parent.resolve()).encode()).hexdigest()[:16]
    return base / where / (p.name + ix.SUFFIX)


def _current_meta(ix, out: Path, fd: int, st: os.stat_result, shared: bool) -> dict | None:
    """The file line of index `out` when it is of the pcap open as `fd` as it is now: the same size, first and
    last bytes (mirrorcap_index.current) and not changed since the index was written; else None (built again).
    An index under a shared temporary directory is trusted only when this user owns it."""
    try:
        ist = out.stat()
        if hasattr(os, "getuid") and ist.st_uid != os.getuid() and shared:
            return None
        meta = ix.read_meta(str(out))
    except (OSError, ValueError, EOFError, zlib.error, ix.IndexError_):
        return None
    if st.st_mtime_ns > ist.st_mtime_ns:
        return None  # changed since the index was written
    return meta if ix.current(meta, st.st_size, lambda o, n: os.pread(fd, n, o)) else None


def select_flows(srcs: list[Source], node: Node) -> list[dict]:
    """The flow rows of `srcs` that may hold a packet of the query, each with its pcap's name, oldest first.
    An index DuckDB cannot read (a cut gzip, a malformed line) is built again when its pcap is here
    (--dir), else refused by name (exit 2), never a traceback."""
    import duckdb
    try:
        return _select(srcs, node)
    except duckdb.Error as e:
        failure = str(e).splitlines()[0] if str(e) else type(e).__name__
    broken = [s for s in srcs if not _index_ok(s.index)]
    if not broken:
        raise MirrorcapError([Problem("command line", "QUERY", f"DuckDB could not run the query over the indexes: {failure}",
                                      "report it with the query and the index files")])
    ix = indexer()
    for s in broken:
        if s.pcap is None or s.fetch is not None:
            raise MirrorcapError([Problem(str(s.index), "", f"the index of {s.label()} cannot be read (cut or malformed)",
                                          "delete it; --dir builds it again from its pcap")])
        note(f"{_shown(s.index)}: cut or malformed: built again from its pcap")
        s.meta, _ = ix.write(str(s.pcap), str(s.index))
    return _select(srcs, node)


def _index_ok(path: Path) -> bool:
    """Whether an index file is whole: gzip to its end, every line a JSON object whose flow columns have their types."""
    ix = indexer()
    types = {name: str if kind == "text" else int for name, kind in ix.FLOW_SCHEMA}
    try:
        _line, rows = ix.read(str(path))
    except (OSError, ValueError, EOFError, zlib.error, ix.IndexError_):
        return False
    return all(isinstance(r, dict) and r.get("kind") == "flow"
               and all(r.get(k) is None or (type(r[k]) is t) for k, t in types.items()) for r in rows)


def _select(srcs: list[Source], node: Node) -> list[dict]:
    import duckdb
    if not srcs:
        return []
    files = [str(s.index) for s in srcs]
    con = duckdb.connect()
    try:
        relation = (f"read_json(?, format='newline_delimited', columns={FLOW_COLUMNS}, filename=true, compression='gzip', "
                    "auto_detect=false)")
        rel = con.execute(flows_sql(node, relation, "filename"), [files])
        names = [d[0] for d in rel.description]
        return [dict(zip(names, row)) for row in rel.fetchall()]
    finally:
        con.close()


FETCH_GAP = 256 << 10  # fetched ranges closer than this are one request: fewer GETs, a little more data


def packets(src: Source, flows: list[dict], node: Node, counter: list | None = None):
    """(ts_ns, linktype, tsres, frame bytes, original length, offset) of every packet of `src` that the
    query takes, reading only the ranges of `flows`."""
    ix = indexer()
    q = hostquery()
    decide = q.packet_predicate(tree(node), ix)

    def keep(*frame):
        try:
            return decide(*frame)
        except q.NoLibpcap as e:
            raise MirrorcapError([Problem(src.label(), "", f"frames cut short: {e}", "install libpcap (tcpdump's library), "
                                          "e.g. apt-get install libpcap0.8 or dnf install libpcap")]) from None
    vni = src.meta.get("vni")
    wanted = ix.flow_ranges(flows, FETCH_GAP if src.fetch else 0)
    meta = ix.reader_meta(src.meta)
    with (open(src.pcap, "rb") if src.pcap is not None else _Nothing()) as fh:
        for a, b in wanted:
            if src.fetch is not None:
                data = src.fetch(a, b)
            else:
                fh.seek(a)
                data = fh.read(b - a)
            if counter is not None:
                counter[0] += len(data)
                if src.fetch is not None:
                    counter[1] += len(data)
            for o, ts, linktype, caplen, length, frame in ix.records(data, meta, 0, len(data), origin=a):
                if keep(data, linktype, frame, caplen, length, meta["endian"], vni, ts):
                    tsres = meta["ifaces"][0][1] if meta["format"] == "pcap" else 9
                    yield ts, linktype, tsres, data[frame:frame + caplen], length, a + o


class _Nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def search(directory: Path, node: Node, index_dir: Path | None = None, progress=None) -> Found:
    srcs, skipped = sources(directory, index_dir, progress)
    return search_sources(srcs, node, skipped)


def in_time(srcs: list[Source], node: Node) -> list[Source]:
    """The sources whose packets' time range meets the query's (a file without packets has none)."""
    in_range, t = hostquery().file_in_time, tree(node)
    return [s for s in srcs if in_range(t, s.meta)]


def search_sources(srcs: list[Source], node: Node, skipped=()) -> Found:
    srcs = [s for s in in_time(srcs, node) if may_take(node, s.meta)]
    flows = select_flows(srcs, node)
    by_name = {str(s.index): s for s in srcs}
    for f in flows:
        if by_name[f["filename"]].name:
            f["source"] = by_name[f["filename"]].name
    return Found(flows, by_name, list(skipped), index_bytes=sum(s.index.stat().st_size for s in srcs))


def collect(found: Found, node: Node, progress=None) -> list[tuple]:
    """Every matching packet of the found flows, in time order (ties: file, then place in it)."""
    per_file: dict[str, list[dict]] = {}
    for f in found.flows:
        per_file.setdefault(f["filename"], []).append(f)
    out, counter = [], [0, 0]
    for n, (name, flows) in enumerate(sorted(per_file.items())):
        if progress:
            progress(f"reading {n + 1}/{len(per_file)}: {found.sources[name].label()}")
        for p in packets(found.sources[name], flows, node, counter):
            out.append((p[0], n, p[5], p))
    found.fetched_bytes, found.remote_bytes = counter
    out.sort(key=lambda x: x[:3])
    return [x[3] for x in out]


def write_pcap(path: Path, pkts: list[tuple]) -> None:
    """One pcap of `pkts` (nanosecond when any input was); never overwrites."""
    linktypes = {p[1] for p in pkts} or {1}
    if len(linktypes) > 1:
        raise MirrorcapError([Problem("command line", "QUERY", f"the matching packets have link types {sorted(linktypes)}: "
                                      "one pcap holds one", "narrow the query or --dir to files of one link type")])
    nano = any(p[2] != 6 for p in pkts)
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    unit = 1 if nano else 1000
    snap = max([len(p[3]) for p in pkts] + [262144])
    with open(path, "xb") as f:
        f.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snap, linktypes.pop()))
        per = 10 ** 9 // unit
        for ts, _lt, _res, frame, length, _o in pkts:
            t = ts // unit
            f.write(struct.pack("<IIII", t // per, t % per, len(frame), length))
            f.write(frame)


def flow_view(f: dict, ix=None) -> dict:
    """A flow row for people: addresses as text, times as ISO UTC."""
    import ipaddress
    from datetime import datetime, timezone

    def addr(h):
        return str(ipaddress.ip_address(bytes.fromhex(h))) if h and len(h) in (8, 32) else None

    def iso(ns):
        return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")

    proto = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6", 132: "sctp"}.get(f["proto"], f["proto"])
    return dict(file=f.get("source") or Path(f["filename"]).name[:-len(indexer().SUFFIX)], fam=f["fam"], proto=proto, src=addr(f["sa"]),
                dst=addr(f["da"]), sport=f["sp"], dport=f["dp"], vni=f["vni"], first=iso(f["first"]), last=iso(f["last"]),
                packets=f["packets"], bytes=f["bytes"])


def note(message: str) -> None:
    print(f"mirrorcap: {message}", file=sys.stderr)
