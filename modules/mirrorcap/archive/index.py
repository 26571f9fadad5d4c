"""Which archived pcaps can hold a window's packets: pure, from the S3 keys alone.

A key is contract.ARCHIVE_KEY: <capture>/vni<VNI>/<UTC date>/<instance>/<file>,
the file named by contract.PCAP_PATTERN (its start, UTC). Only a key exactly as
a host writes it is read (parse_key): anyone who may write to the bucket could
plant others, and a key's parts become local file names (local_parts).

A pcap ends where the same host's next pcap of the same VNI starts (tcpdump -G
closes one as it opens the next); the last one's end is not in its name: its
upload time bounds it (a host uploads a pcap only once tcpdump has closed it).
The host's own covering() then decides, with its slack for packets stamped a
little before a file's name.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Iterable, Optional

from .. import aws_limits as L
from ..contract import ARCHIVE_KEY, PCAP_PATTERN
from . import hostcode

# What a host puts in each part of its keys: its instance ID from IMDS, the VNI as a
# decimal number, the UTC day as %Y-%m-%d; the capture name is the inventory's.
_FIELDS = {"vni": r"(?P<vni>[1-9][0-9]{0,7})", "date": r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})",
           "instance": r"(?P<instance>i-(?:[0-9a-f]{8}|[0-9a-f]{17}))", "file": r"(?P<file>[^/]+)"}


@dataclass(frozen=True)
class ArchivedPcap:
    key: str
    instance: str
    vni: int
    start: datetime
    bytes: int
    uploaded: datetime  # S3 LastModified

    @property
    def name(self) -> str:
        """The file name, made again from the validated VNI and start (the same as the key's: parse_key checks)."""
        return self.start.strftime(PCAP_PATTERN.replace("{vni}", str(self.vni)))


def day_prefix(capture: str, vni: int, day: date) -> str:
    """The key prefix of one VNI's pcaps that start on `day` (UTC), every host."""
    return ARCHIVE_KEY.split("{instance}")[0].format(capture=capture, vni=vni, date=day.isoformat())


@functools.lru_cache(maxsize=16)
def _key_pattern(capture: str) -> re.Pattern:
    fields = {**_FIELDS, "capture": re.escape(capture)}
    return re.compile("".join(fields[p[1:-1]] if p.startswith("{") else re.escape(p) for p in re.split(r"(\{\w+\})", ARCHIVE_KEY) if p))


def parse_key(capture: str, key: str, size: int, uploaded: datetime) -> Optional[ArchivedPcap]:
    """The archived pcap a key names when the key is exactly what a host of `capture`
    writes (contract.ARCHIVE_KEY, every part as the host makes it, the file named by
    contract.PCAP_PATTERN and filed under its VNI and day); None for any other key."""
    m = _key_pattern(capture).fullmatch(key)
    if not m or not L.VNI_MIN <= int(m["vni"]) <= L.VNI_MAX:
        return None
    named = hostcode.host().pcap_start(PCAP_PATTERN, m["file"])
    if named is None or named[0] != int(m["vni"]):
        return None
    p = ArchivedPcap(key=key, instance=m["instance"], vni=named[0], start=named[1], bytes=size, uploaded=uploaded)
    # strptime is lenient (single digits, spaces): only a name the pattern writes back identically is a host's
    if p.name != m["file"] or p.start.date().isoformat() != m["date"]:
        return None
    return p


_LOCAL_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def local_parts(p: ArchivedPcap) -> tuple[str, str, str]:
    """Where a downloaded pcap goes under the private download directory: one directory per
    host and VNI (hosts write the same file names), built from the validated parts alone."""
    parts = (p.instance, f"vni{p.vni}", p.name)
    if not all(_LOCAL_PART.fullmatch(x) for x in parts):
        raise ValueError(f"not a local file name: {parts!r}")  # parse_key admits none: a defect, not input
    return parts


def days(begin: datetime, end: datetime) -> list[date]:
    """The UTC days whose pcaps may start inside the window (the host's slack included)."""
    slack = hostcode.window().EARLY_SLACK
    first, last = _utc(begin).date(), _utc(end + slack).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _utc(t: datetime) -> datetime:
    from datetime import timezone
    return t.astimezone(timezone.utc)


def spans(pcaps: Iterable[ArchivedPcap]) -> list[dict]:
    """Each pcap as the host tool's file record: start, and end = the next start of the
    same host and VNI, or the upload time for the newest one."""
    by_host: dict[tuple[str, int], list[ArchivedPcap]] = {}
    for p in pcaps:
        by_host.setdefault((p.instance, p.vni), []).append(p)
    out = []
    for files in by_host.values():
        files.sort(key=lambda p: (p.start, p.key))
        for i, p in enumerate(files):
            end = files[i + 1].start if i + 1 < len(files) else max(p.start, p.uploaded)
            out.append({"key": p.key, "instance": p.instance, "vni": p.vni, "start": p.start, "end": end, "bytes": p.bytes, "pcap": p})
    return sorted(out, key=lambda f: (f["start"], f["instance"], f["key"]))


def covering(pcaps: Iterable[ArchivedPcap], begin: datetime, end: datetime) -> list[dict]:
    """The pcaps whose span can hold a packet of [begin, end]: the host's covering() on spans()."""
    return hostcode.window().covering(spans(pcaps), begin, end)


def lacking_predecessor(pcaps: Iterable[ArchivedPcap], begin: datetime) -> set[tuple[str, int]]:
    """(instance, VNI) of hosts with no known pcap starting at or before `begin`: an
    earlier day may hold the pcap that was open at `begin`."""
    earliest: dict[tuple[str, int], datetime] = {}
    for p in pcaps:
        k = (p.instance, p.vni)
        earliest[k] = min(earliest.get(k, p.start), p.start)
    return {k for k, t in earliest.items() if t > begin}
