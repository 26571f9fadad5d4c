"""`mirrorcap window`: the archived pcaps of every host of a capture covering a moment,
downloaded, then merged, cut and filtered by the host's mirrorcap-window code.

Order: mergecap merges by packet time across every host's file (never by host
or by download order: through an NLB, packets reach the hosts out of order, and
each host stamps what it receives); the cut is a filter on each packet's time,
so a packet out of order inside a file is kept or dropped on its own time.

The window is cut to what the archive can hold (bounds): S3 expires pcaps after
the archive's retention and nothing is uploaded after now, so a span of years
lists at most the retention's days, never one S3 listing per day asked for.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

from botocore.exceptions import ClientError

from ..errors import MirrorcapError, Problem
from . import hostcode, index, s3 as archive_s3

MAX_LOOKBACK_DAYS = 31  # never further back than this for a pcap still open at the window's start
# Past the archive's retention S3 has deleted the pcaps; a day more for a pcap that began
# before its day and the lifecycle rule's own lag.
EXPIRY_SLACK = timedelta(days=1)
# Longer than any span the archive can hold: refused before any date arithmetic overflows.
MAX_SPAN_DAYS = 36500 + 1


@dataclass(frozen=True)
class Query:
    at: str
    window: str = "5m"
    before: Optional[str] = None
    after: Optional[str] = None
    vni: Optional[int] = None
    host: Optional[str] = None
    port: Optional[int] = None
    bpf: Optional[str] = None
    display: Optional[str] = None


@dataclass(frozen=True)
class Bounds:
    begin: datetime
    end: datetime
    notes: tuple[str, ...] = ()  # how the window asked for was cut to what the archive can hold


@dataclass
class Found:
    bucket: str
    begin: datetime
    end: datetime
    pcaps: list = field(default_factory=list)  # the host tool's file records (+ key, instance, the ArchivedPcap)
    listed_days: list = field(default_factory=list)
    ignored: list = field(default_factory=list)  # keys under the listed prefixes that no host writes: never read


def usage(message: str, fix: str = "see mirrorcap window --help") -> MirrorcapError:
    return MirrorcapError([Problem("command line", "", message, fix)])


def _span(w, text: str, flag: str) -> timedelta:
    try:
        span = w.parse_span(text, flag)
    except w.Usage as exc:
        raise usage(str(exc))
    except OverflowError:
        span = timedelta.max
    if span > timedelta(days=MAX_SPAN_DAYS):
        raise usage(f"{flag} {text!r} is longer than any archive keeps (at most {MAX_SPAN_DAYS - 1} days)",
                    f"write a span the archive can hold, e.g. {flag} 5m or {flag} 2h")
    return span


def bounds(q: Query, retention_days: int, now: datetime) -> Bounds:
    """The window, parsed by the host tool's own rules (time zone required, 90s/5m/1h), cut to
    [now - retention - a day, now]: what the archive can still hold. Refused when nothing of it is left."""
    w = hostcode.window()
    try:
        at = now if q.at == "now" else w.parse_time(q.at)
    except w.Usage as exc:
        raise usage(str(exc))
    before = _span(w, q.before or q.window, "--before" if q.before else "--window")
    after = _span(w, q.after or q.window, "--after" if q.after else "--window")
    earliest, latest = now - timedelta(days=retention_days) - EXPIRY_SLACK, now
    # Compared before subtracting: --at in year 1 or 9999 never overflows a datetime.
    begin = at - before if before <= at - earliest else earliest
    end = at + after if after <= latest - at else latest
    held = f"{earliest.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%SZ} .. {latest.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%SZ}"
    if begin > end:
        raise usage(f"--at {q.at} with its window is outside what the archive can hold ({held}: pcaps expire after "
                    f"{retention_days} days, archive > retention_days)", f"pick --at within the last {retention_days} days")
    notes = []
    if begin == earliest and before > at - earliest:
        notes.append(f"the window starts at {earliest.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%SZ}, not earlier: "
                     f"the archive keeps {retention_days} days (archive > retention_days)")
    if end == latest and after > latest - at:
        notes.append(f"the window ends now ({latest.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%SZ}): nothing later is archived")
    return Bounds(begin, end, tuple(notes))


# The host's extract() runs these; --host/--port/--bpf add tcpdump.
TOOLS = ("mergecap", "tshark")
TOOLS_FIX = ("install Wireshark's command-line tools and tcpdump (Debian/Ubuntu: apt install tshark wireshark-common tcpdump; "
             "Fedora: dnf install wireshark-cli tcpdump; macOS: brew install wireshark tcpdump), then run mirrorcap window again")


def missing_tools(q: Query, which=shutil.which) -> list[str]:
    """The programs the extract needs that are not on PATH (checked before anything is downloaded)."""
    needed = TOOLS + (("tcpdump",) if q.host or q.port or q.bpf else ())
    return [t for t in needed if which(t) is None]


def require_archive(capture, inventory: str) -> None:
    if capture.archive is None:
        raise MirrorcapError([Problem(inventory, f'capture "{capture.name}" > archive',
                                      "this capture has no archive: its pcaps stay on the host",
                                      f"read them on the host with mirrorcap-window, or add archive {{}} to the capture and make deploy STACK={capture.name}")])


def _aws(capture, bucket: str, exc: ClientError, what: str) -> MirrorcapError:
    code = archive_s3._code(exc)
    if code in ("NoSuchBucket", "404"):
        return MirrorcapError([Problem("AWS", "--bucket" if what == "given" else "archive bucket",
                                       f"bucket {bucket} does not exist (or not in {capture.region})",
                                       f"check the name (the stack's archive bucket), or leave --bucket out to find it by tags; deploy with make deploy STACK={capture.name}")])
    if code in archive_s3.DENIED:
        return MirrorcapError([archive_s3.denied_problem(capture, f"s3://{bucket}", exc)])
    raise exc


def find(s3, capture, begin: datetime, end: datetime, vnis, bucket: Optional[str] = None) -> Found:
    """The archived pcaps (every host, the given VNIs) whose span can hold a packet of [begin, end]."""
    given = "given" if bucket else "found"
    bucket = bucket or archive_s3.find_bucket(s3, capture)
    found = Found(bucket=bucket, begin=begin, end=end)
    pcaps = []

    def listed(day) -> list:
        got, others = archive_s3.list_prefix(s3, bucket, capture.name, index.day_prefix(capture.name, vni, day))
        found.ignored += others
        return got

    try:
        days = index.days(begin, end)
        lookback = min(MAX_LOOKBACK_DAYS, int(capture.archive_retention_days or MAX_LOOKBACK_DAYS) + 1)
        for vni in vnis:
            mine = [p for day in days for p in listed(day)]
            # The pcap open at `begin` may have started on an earlier day: always look one day
            # back, further only while a host seen so far still has none starting before `begin`.
            day = days[0]
            for n in range(lookback):
                day -= timedelta(days=1)
                if n > 0 and not index.lacking_predecessor(mine, begin):
                    break
                mine += listed(day)
                found.listed_days.append(day)
            pcaps += mine
    except ClientError as exc:
        raise _aws(capture, bucket, exc, given)
    found.listed_days = sorted(set(found.listed_days) | set(days))
    found.pcaps = index.covering(pcaps, begin, end)
    return found


def extract(s3, capture, found: Found, q: Query, out: Path) -> None:
    """Download the covering pcaps into a private temporary directory, then the host's
    extract(): mergecap (time order) -> BPF (tcpdump) -> window + display filter (tshark) -> out."""
    w = hostcode.window()
    with tempfile.TemporaryDirectory(prefix="mirrorcap-window-") as tmp:  # 0700: the pcaps are evidence
        files = []
        try:
            for f in found.pcaps:
                files.append({**f, "path": str(archive_s3.download(s3, found.bucket, f["pcap"], Path(tmp)))})
        except ClientError as exc:
            raise _aws(capture, found.bucket, exc, "found")
        except OSError as exc:
            raise MirrorcapError([Problem(tmp, "", f"cannot create a downloaded pcap there: {exc.strerror or exc}",
                                          "something else writes into mirrorcap's private temporary directory: "
                                          "check $TMPDIR, then run mirrorcap window again")])
        try:
            w.extract(files, found.begin, found.end, w.bpf_for(SimpleNamespace(host=q.host, port=q.port, bpf=q.bpf)), q.display, str(out))
        except w.Usage as exc:
            raise usage(str(exc), "check the filters (--host, --port, --bpf: tcpdump syntax; --filter: Wireshark display filter syntax)")
