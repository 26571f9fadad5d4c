"""`mirrorcap window`: the packets around a moment from a capture's archive, every host merged."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import typer

from ..errors import MirrorcapError, Problem
from .common import FINDINGS, InventoryOpt, ProfileOpt, RoleOpt, access, capture_named, fail, load_inventory, reported


def window(
    capture: str = typer.Option(..., "--capture", "-c", help="the capture whose archive to read"),
    at: str = typer.Option(..., "--at", help="the moment, with a time zone (2026-11-25T10:15:00+09:00, ...Z, or now)"),
    out: Path = typer.Option(..., "--out", help="write the merged, cut, filtered packets here (pcap); never overwritten"),
    span: str = typer.Option("5m", "--window", help="either side of --at (default 5m)"),
    before: str = typer.Option(None, "--before", help="before --at (overrides --window)"),
    after: str = typer.Option(None, "--after", help="after --at (overrides --window)"),
    vni: int = typer.Option(None, "--vni", help="only this VNI's pcaps (default: every VNI of the capture)"),
    host: str = typer.Option(None, "--host", help="capture filter: this IP address"),
    port: int = typer.Option(None, "--port", help="capture filter: this TCP/UDP port"),
    bpf: str = typer.Option(None, "--bpf", help="capture filter (tcpdump syntax)"),
    display: str = typer.Option(None, "--filter", help="display filter (Wireshark syntax), e.g. 'http.response.code >= 500'"),
    bucket: str = typer.Option(None, "--bucket", help="the archive bucket (default: found by its tags)"),
    inventory: Path = InventoryOpt,
    profile: str = ProfileOpt,
    role_arn: str = RoleOpt,
) -> None:
    """Find, download and merge the archived pcaps of every host covering a moment, cut to the window and filtered.

    Exit 0: written to --out; 1: no archived pcap covers the window; 2: usage, inventory, --out or the
    tools; 3: could not reach AWS (credentials, network, the bucket denied)."""
    from ..archive.window import TOOLS_FIX, Query, bounds, extract, find, missing_tools, require_archive
    from ..archive.window_args import problems
    q = Query(at=at, window=span, before=before, after=after, vni=vni, host=host, port=port, bpf=bpf, display=display)
    wrong = problems(q, bucket)
    if wrong:
        fail(MirrorcapError(wrong))
    c = capture_named(load_inventory(inventory), capture, inventory)
    with reported():
        aws = access(profile, role_arn)  # (a wrong --role-arn is refused here, before the window's notes)
        require_archive(c, str(inventory))
        if vni is not None and vni not in c.vnis:
            raise MirrorcapError([Problem(str(inventory), "--vni", f"capture {capture} mirrors no VNI {vni}",
                                          "use one of: " + ", ".join(map(str, c.vnis)))])
        window_bounds = bounds(q, c.archive_retention_days, datetime.now(timezone.utc))
        begin, end = window_bounds.begin, window_bounds.end
        for note in window_bounds.notes:
            print(f"mirrorcap: note: {note}", file=sys.stderr)
        missing = missing_tools(q)
        if missing:
            raise MirrorcapError([Problem("PATH", ", ".join(missing), "not found: mirrorcap window merges, cuts and filters "
                                          "the downloaded pcaps with them", TOOLS_FIX)])
        if os.path.lexists(out):
            raise MirrorcapError([Problem("command line", "--out", f"{out} exists", "pick another --out (mirrorcap window never overwrites a file)")])
        if not out.parent.resolve().is_dir():
            raise MirrorcapError([Problem("command line", "--out", f"{out.parent} is not a directory", "create it, or write elsewhere")])
        s3 = aws.s3(c.region)
        found = find(s3, c, begin, end, [vni] if vni is not None else list(c.vnis), bucket)
        if found.ignored:
            print(f"mirrorcap: warning: {len(found.ignored)} key(s) in s3://{found.bucket} are not what a host writes and were "
                  f"not read, e.g. {found.ignored[0]!r} (who else writes to the archive?)", file=sys.stderr)
        print(f"window {begin.astimezone(timezone.utc).isoformat()} .. {end.astimezone(timezone.utc).isoformat()} (UTC), {len(found.pcaps)} pcap(s) in s3://{found.bucket}")
        for f in found.pcaps:
            print(f"  {f['key']}  {f['start']:%H:%M:%S} .. {f['end']:%H:%M:%S}  {f['bytes']} bytes")
        if not found.pcaps:
            days = ", ".join(d.isoformat() for d in found.listed_days)
            print(f"mirrorcap: no archived pcap covers the window (listed {days})", file=sys.stderr)
            raise typer.Exit(FINDINGS)
        extract(s3, c, found, q, out)
    print(f"wrote {out}", file=sys.stderr)
