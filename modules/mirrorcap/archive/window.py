"""`mirrorcap window`: the archived pcaps of every host of a capture covering a moment,
downloaded, then merged, cut and filtered by the host's mirrorcap-window code.

Order: mergecap merges by packet time across every host's file (never by host
or by download order: through an NLB, packets reach the hosts out of order, and
each host stamps what it receives); the cut is a filter on each packet's time,
so a packet out of order inside a file is kept or dropped on its own time.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

from botocore.exceptions import ClientError

from ..errors import MirrorcapError, Problem
from . import hostcode, index, s3 as archive_s3

MAX_LOOKBACK_DAYS = 31  # never further back than this for a pcap still open at the window's start


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


@dataclass
class Found:
    bucket: str
    begin: datetime
    end: datetime
    pcaps: list = field(default_factory=list)  # the host tool's file records (+ key, instance)
    listed_days: list = field(default_factory=list)


def usage(message: str, fix: str = "see mirrorcap window --help") -> MirrorcapError:
    return MirrorcapError([Problem("command line", "", message, fix)])


def bounds(q: Query) -> tuple[datetime, datetime]:
    """The window, parsed by the host tool's own rules (time zone required, 90s/5m/1h)."""
    w = hostcode.window()
    try:
        at = w.parse_time(q.at)
        before = w.parse_span(q.before or q.window, "--before" if q.before else "--window")
        after = w.parse_span(q.after or q.window, "--after" if q.after else "--window")
    except w.Usage as exc:
        raise usage(str(exc))
    return at - before, at + after


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
    try:
        days = index.days(begin, end)
        lookback = min(MAX_LOOKBACK_DAYS, int(capture.archive_retention_days or MAX_LOOKBACK_DAYS) + 1)
        for vni in vnis:
            mine = [p for day in days for p in archive_s3.list_prefix(s3, bucket, capture.name, index.day_prefix(capture.name, vni, day))]
            # The pcap open at `begin` may have started on an earlier day: always look one day
            # back, further only while a host seen so far still has none starting before `begin`.
            day = days[0]
            for n in range(lookback):
                day -= timedelta(days=1)
                if n > 0 and not index.lacking_predecessor(mine, begin):
                    break
                mine += archive_s3.list_prefix(s3, bucket, capture.name, index.day_prefix(capture.name, vni, day))
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
                # Hosts write the same file names: one directory per host and VNI.
                path = archive_s3.download(s3, found.bucket, f["key"], Path(tmp) / f["instance"] / f"vni{f['vni']}" / os.path.basename(f["key"]))
                files.append({**f, "path": str(path)})
        except ClientError as exc:
            raise _aws(capture, found.bucket, exc, "found")
        try:
            w.extract(files, found.begin, found.end, w.bpf_for(SimpleNamespace(host=q.host, port=q.port, bpf=q.bpf)), q.display, str(out))
        except w.Usage as exc:
            raise usage(str(exc), "check the filters (--host, --port, --bpf: tcpdump syntax; --filter: Wireshark display filter syntax)")
