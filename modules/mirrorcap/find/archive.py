"""`mirrorcap find --capture`: the same query over a capture's S3 archive, fetching only byte ranges.

The pcaps whose span can hold a packet of the query's time range are found as
`mirrorcap window` finds them (every host, every VNI, the day before included);
each one's index is read from the index prefix (contract.ARCHIVE_INDEX_KEY), and only the
byte ranges of the flows the query picks are fetched (S3 ranged GETs). A pcap with
no index in the archive (its index failed on the host) is still found by its time:
it is downloaded whole and indexed here.
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

from botocore.exceptions import ClientError

from ..archive import localfile
from ..archive.index import local_parts
from ..archive.window import find as find_pcaps
from ..contract import INDEX_SUFFIX, archive_index_key
from .hostindex import indexer
from .query import NS, Node, time_bounds
from .search import Source

MAX_DAYS = 15  # how far back a query without 'after' looks: each day is a listing per VNI


def window_of(node: Node, retention_days, now: datetime) -> tuple[datetime, datetime]:
    """The time range whose archived pcaps the query reads: its own, or the last MAX_DAYS
    (the archive's retention when shorter) when it says no start."""
    lo, hi = time_bounds(node)
    days = min(int(retention_days), MAX_DAYS) if retention_days else MAX_DAYS
    begin = datetime.fromtimestamp(lo / NS, timezone.utc) if lo is not None else now - timedelta(days=days)
    end = datetime.fromtimestamp(hi / NS, timezone.utc) if hi is not None else now
    return begin, min(end, now + timedelta(minutes=5))


class Fetcher:
    """Ranged GETs of one archived pcap, counted."""

    def __init__(self, s3, bucket: str, key: str):
        self.s3, self.bucket, self.key, self.requests = s3, bucket, key, 0

    def __call__(self, a: int, b: int) -> bytes:
        self.requests += 1
        return self.s3.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={a}-{b - 1}")["Body"].read()


PARALLEL = 16  # index GETs in flight: S3's latency, not its bandwidth, is what a listing of days costs


def archive_sources(s3, capture, node: Node, bucket: str | None, cache: Path, now: datetime, progress=None):
    """(Sources for every archived pcap that may hold a matching packet, the listing, pcaps fetched whole)."""
    ix = indexer()
    begin, end = window_of(node, capture.archive_retention_days, now)
    found = find_pcaps(s3, capture, begin, end, list(capture.vnis), bucket)
    srcs, whole, said = [], [], 0.0

    def index_of(f):
        try:
            return s3.get_object(Bucket=found.bucket, Key=archive_index_key(f["pcap"].key))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                raise
            return None

    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        for n, (f, body) in enumerate(zip(found.pcaps, pool.map(index_of, found.pcaps))):
            p = f["pcap"]
            parts = local_parts(p)
            if progress and (n + 1 == len(found.pcaps) or time.monotonic() - said > 1):
                progress(f"indexes {n + 1}/{len(found.pcaps)}: {p.key}")
                said = time.monotonic()
            meta = None
            if body is not None:
                with open(localfile.create(cache, [*parts[:-1], parts[-1] + INDEX_SUFFIX]), "wb") as out:
                    out.write(body)
                index = cache.joinpath(*parts[:-1], parts[-1] + INDEX_SUFFIX)
                try:
                    meta = ix.read_meta(str(index))
                except (OSError, EOFError, ValueError, ix.IndexError_):
                    meta = None  # not an index this reads (another version): the pcap is read whole
            if meta is not None:
                srcs.append(Source(None, index, meta, fetch=Fetcher(s3, found.bucket, p.key), name=p.key))
                continue
            # No index archived (it failed on the host, or an older host wrote another version or put it beside
            # the pcap): found by its time, read whole.
            with open(localfile.create(cache, parts), "wb") as out:
                s3.download_fileobj(found.bucket, p.key, out)
            local = cache.joinpath(*parts)
            meta, _ = ix.write(str(local))
            whole.append(p.key)
            srcs.append(Source(local, Path(ix.index_path(str(local))), meta, name=p.key))
    return srcs, found, whole


def cache_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="mirrorcap-find-")
