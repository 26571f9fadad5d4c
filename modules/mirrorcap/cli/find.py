"""`mirrorcap find QUERY`: the packets a query takes, read through the packet indexes, never whole files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import typer

from .common import FINDINGS, OK, InventoryOpt, ProfileOpt, RoleOpt, reported
from .flows import print_flows


def find(
    query: str = typer.Argument(..., help="tcpdump-like: host/net/port (src|dst), tcp/udp/icmp, ip/ip6/arp, vni N, "
                                "and/or/not, ( ), after 15m ago, before 2026-12-03T14:10Z, around 14:05 ±2m"),
    directory: Path = typer.Option(None, "--dir", help="a directory of pcap/pcapng files (any names); missing indexes are built"),
    capture: str = typer.Option(None, "--capture", "-c", help="instead of --dir: this capture's S3 archive (ranged GETs); "
                                "without an archive, its host, through Systems Manager"),
    instance: str = typer.Option(None, "--instance", help="with --capture: run the query on this host through Systems Manager "
                                 "(e.g. a fleet host's pcaps not yet archived)"),
    max_size: int = typer.Option(64, "--max-size", min=1, help="through Systems Manager: the largest result fetched, MiB"),
    bucket: str = typer.Option(None, "--bucket", help="with --capture: the archive bucket (default: found by its tags)"),
    engine: str = typer.Option("duckdb", "--engine", help="with --capture: duckdb (indexes read here) or athena (the stack's "
                               "workgroup runs the same SQL over the archive's Glue table)"),
    inventory: Path = InventoryOpt,
    profile: str = ProfileOpt,
    role_arn: str = RoleOpt,
    out: Path = typer.Option(None, "--out", help="write the matching packets here, one time-ordered pcap; never overwritten"),
    flows: bool = typer.Option(False, "--flows", help="list the matching flows (no packet is read)"),
    as_json: bool = typer.Option(False, "--json", help="with --flows: one JSON object per flow"),
    open_: bool = typer.Option(False, "--open", help="open --out in Wireshark (or termshark) when written"),
    index_dir: Path = typer.Option(None, "--index-dir", help="where to build indexes when --dir is not writable (default: a temp dir)"),
) -> None:
    """Find the packets a query takes, reading only the byte ranges its indexes name.

    Exit 0: found (written to --out, or listed); 1: nothing matches; 2: could not (query, files, --out, too big);
    3: could not read the archive or reach the host (AWS)."""
    from ..errors import MirrorcapError
    from ..find.options import option_problem, query_problem, source
    from ..find.query import QueryError, parse
    from ..find.search import note, search
    cache = None  # an archive's indexes, while they are read
    try:
        with reported():  # input problems exit 2, AWS's 3
            try:
                node = parse(query)
            except QueryError as e:
                raise MirrorcapError([query_problem(e)])
            wrong = option_problem(flows=flows, as_json=as_json, out=out,
                                   out_exists=out is not None and os.path.lexists(out),
                                   out_dir_exists=out is not None and out.parent.resolve().is_dir(),
                                   directory=directory, capture=capture, instance=instance, engine=engine, bucket=bucket)
            if wrong is not None:
                raise MirrorcapError([wrong])
            progress = (lambda m: print(f"mirrorcap: {m}", file=sys.stderr)) if not as_json else None
            where = source(capture=capture, instance=instance, engine=engine, archived=lambda: _archived(capture, inventory))
            if where == "ssm":
                from .find_ssm import find_on_host
                find_on_host(node, capture, instance, inventory, profile, role_arn, out, flows, as_json, max_size << 20, progress)
            else:
                if where == "athena":
                    found, cache = _athena(node, capture, inventory, profile, role_arn, progress)
                elif where == "archive":
                    found, cache = _archive(node, capture, bucket, inventory, profile, role_arn, progress)
                else:
                    found, cache = search(directory, node, index_dir, progress), None
                _answer(found, node, out, flows, as_json, capture, progress, "Athena scanned" if engine == "athena" else "read")
    finally:
        if cache is not None:
            cache.cleanup()
    if open_:
        viewer = shutil.which("wireshark") or shutil.which("termshark")
        if viewer is None:
            note("--open: neither wireshark nor termshark is on PATH; open the file yourself")
        else:
            subprocess.run([viewer, "-r", str(out)], check=False)


def _answer(found, node, out, flows, as_json, capture, progress, read="read"):
    """What the indexes found, listed and/or written to --out (exit 1 when nothing matches)."""
    from ..find.search import collect, flow_view, note, write_pcap
    for name, why in found.skipped:
        note(f"skipped {name}: {why}")
    if flows:
        views = [flow_view(f) for f in found.flows]
        print_flows(views, as_json)
        if out is None:
            raise typer.Exit(OK if views else FINDINGS)
    pkts = collect(found, node, progress)
    if not pkts:
        note(f"no packet matches ({read} {found.index_bytes} B of indexes)")
        raise typer.Exit(FINDINGS)
    write_pcap(out, pkts)
    remote = f" ({found.remote_bytes} B of them fetched from S3 by range)" if capture else ""
    note(f"wrote {out}: {len(pkts)} packet(s); {read} {found.index_bytes} B of indexes and {found.fetched_bytes} B of pcaps{remote}")


def _archived(capture: str, inventory: Path) -> bool:
    """The capture has an archive (`archive {}` in its block)."""
    from .common import capture_named, load_inventory
    return capture_named(load_inventory(inventory), capture, inventory).archive is not None


def _archive(node, capture, bucket, inventory, profile, role_arn, progress):
    """Found flows over a capture's archive, and the temporary directory holding its indexes."""
    from datetime import datetime, timezone

    from ..archive.window import require_archive
    from ..find.archive import archive_sources, cache_dir
    from ..find.search import note, search_sources
    from .common import access, capture_named, load_inventory
    c = capture_named(load_inventory(inventory), capture, inventory)
    require_archive(c, str(inventory))
    cache = cache_dir()
    try:
        s3 = access(profile, role_arn).s3(c.region)
        srcs, listing, whole = archive_sources(s3, c, node, bucket, Path(cache.name), datetime.now(timezone.utc), progress)
        if whole:
            note(f"{len(whole)} archived pcap(s) have no index (it failed on the host): read whole, e.g. {whole[0]}")
        found = search_sources(srcs, node)
    except BaseException:  # AWS's errors too: reported() turns them into exit 3
        cache.cleanup()
        raise
    return found, cache


def _athena(node, capture, inventory, profile, role_arn, progress):
    """Found flows of Athena's query over the capture's Glue table, and the temporary directory holding their indexes."""
    from ..archive.window import require_archive
    from ..find.archive import cache_dir
    from ..account_checks.clients import client
    from ..find.athena import athena_found, athena_sql, run
    from .common import AWS_UNREACHABLE, access, capture_named, load_inventory, reported
    c = capture_named(load_inventory(inventory), capture, inventory)
    require_archive(c, str(inventory))
    cache = cache_dir()
    try:
        with reported(AWS_UNREACHABLE):  # the workgroup missing, a failed query: exit 3 like AWS's own errors
            session = access(profile, role_arn).session(c.region)  # one session (one AssumeRole) for both clients
            rows, stats = run(client(session, "athena", c.region), c, athena_sql(c.name, node), progress=progress)
            found = athena_found(client(session, "s3", c.region), rows, Path(cache.name), int(stats.get("DataScannedInBytes") or 0),
                                 progress)
    except BaseException:
        cache.cleanup()
        raise
    return found, cache
