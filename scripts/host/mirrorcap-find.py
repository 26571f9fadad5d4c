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
