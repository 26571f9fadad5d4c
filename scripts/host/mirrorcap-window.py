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
