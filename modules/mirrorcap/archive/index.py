"""Which archived pcaps can hold a window's packets: pure, from the S3 keys alone.

A key is contract.ARCHIVE_KEY: <capture>/vni<VNI>/<UTC date>/<instance>/<file>,
the file named by contract.PCAP_PATTERN (its start, UTC). A pcap ends where the
same host's next pcap of the same VNI starts (tcpdump -G closes one as it opens
the next); the last one's end is not in its name: its upload time bounds it (a
host uploads a pcap only once tcpdump has closed it). The host's own covering()
then decides, with its slack for packets stamped a little before a file's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Iterable, Optional

from ..contract import ARCHIVE_KEY, PCAP_PATTERN
from . import hostcode


@dataclass(frozen=True)
class ArchivedPcap:
    key: str
    instance: str
    vni: int
    start: datetime
    bytes: int
    uploaded: datetime  # S3 LastModified


def day_prefix(capture: str, vni: int, day: date) -> str:
    """The key prefix of one VNI's pcaps that start on `day` (UTC), every host."""
    return ARCHIVE_KEY.split("{instance}")[0].format(capture=capture, vni=vni, date=day.isoformat())


def parse_key(capture: str, key: str, size: int, uploaded: datetime) -> Optional[ArchivedPcap]:
    """The archived pcap a key names, None for any other key (never guessed)."""
    parts = key.split("/")
    if len(parts) != 5 or parts[0] != capture or not parts[1].startswith("vni") or not parts[1][3:].isdigit():
        return None
    named = hostcode.host().pcap_start(PCAP_PATTERN, parts[4])
    if named is None or named[0] != int(parts[1][3:]) or named[1].date().isoformat() != parts[2] or not parts[3]:
        return None
    return ArchivedPcap(key=key, instance=parts[3], vni=named[0], start=named[1], bytes=size, uploaded=uploaded)


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
            out.append({"key": p.key, "instance": p.instance, "vni": p.vni, "start": p.start, "end": end, "bytes": p.bytes})
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
