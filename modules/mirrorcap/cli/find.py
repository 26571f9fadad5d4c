"""`mirrorcap find QUERY`: the packets a query takes, read through the packet indexes, never whole files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import typer

FOUND, NOTHING, FAILED = 0, 1, 2


def find(
    query: str = typer.Argument(..., help="tcpdump-like: host/net/port (src|dst), tcp/udp/icmp, ip/ip6/arp, vni N, "
                                "and/or/not, ( ), after 15m ago, before 2026-12-03T14:10Z, around 14:05 ±2m"),
    directory: Path = typer.Option(..., "--dir", help="a directory of pcap/pcapng files (any names); missing indexes are built"),
    out: Path = typer.Option(None, "--out", help="write the matching packets here, one time-ordered pcap; never overwritten"),
    flows: bool = typer.Option(False, "--flows", help="list the matching flows (no packet is read)"),
    as_json: bool = typer.Option(False, "--json", help="with --flows: one JSON object per flow"),
    open_: bool = typer.Option(False, "--open", help="open --out in Wireshark (or termshark) when written"),
    index_dir: Path = typer.Option(None, "--index-dir", help="where to build indexes when --dir is not writable (default: a temp dir)"),
) -> None:
    """Find the packets a query takes, reading only the byte ranges its indexes name.

    Exit 0: found (written to --out, or listed); 1: nothing matches; 2: could not (query, files, --out)."""
    from ..errors import MirrorcapError, Problem
    from ..find.query import QueryError, parse
    from ..find.search import collect, flow_view, note, search, write_pcap
    try:
        try:
            node = parse(query)
        except QueryError as e:
            raise MirrorcapError([Problem("command line", "QUERY", e.message, f"{e.fix}\n  {e.query}\n  {' ' * e.pos}^")])
        if not flows and out is None:
            raise MirrorcapError([Problem("command line", "--out", "nowhere to put the packets", "give --out FILE, or --flows to list the flows")])
        if as_json and not flows:
            raise MirrorcapError([Problem("command line", "--json", "--json lists flows", "add --flows")])
        if out is not None:
            if os.path.lexists(out):
                raise MirrorcapError([Problem("command line", "--out", f"{out} exists", "pick another --out (find never overwrites a file)")])
            if not out.parent.resolve().is_dir():
                raise MirrorcapError([Problem("command line", "--out", f"{out.parent} is not a directory", "create it, or write elsewhere")])
        progress = (lambda m: print(f"mirrorcap: {m}", file=sys.stderr)) if not as_json else None
        found = search(directory, node, index_dir, progress)
        for name, why in found.skipped:
            note(f"skipped {name}: {why}")
        if flows:
            views = [flow_view(f) for f in found.flows]
            if as_json:
                for v in views:
                    print(json.dumps(v))
            else:
                for v in views:
                    ports = f":{v['sport']} > {v['dst']}:{v['dport']}" if v["sport"] is not None else f" > {v['dst']}"
                    print(f"{v['first']}  {v['last']}  {v['fam']:4} {str(v['proto']):5} {v['src']}{ports}  "
                          f"vni={v['vni']}  {v['packets']} pkts {v['bytes']} B  {v['file']}")
            if out is None:
                raise typer.Exit(FOUND if views else NOTHING)
        pkts = collect(found, node, progress)
        if not pkts:
            note(f"no packet matches (read {found.index_bytes} B of indexes)")
            raise typer.Exit(NOTHING)
        write_pcap(out, pkts)
        note(f"wrote {out}: {len(pkts)} packet(s); read {found.index_bytes} B of indexes and {found.fetched_bytes} B of pcaps")
    except MirrorcapError as exc:
        print(f"mirrorcap: {exc}", file=sys.stderr)
        raise typer.Exit(FAILED)
    if open_:
        viewer = shutil.which("wireshark") or shutil.which("termshark")
        if viewer is None:
            note("--open: neither wireshark nor termshark is on PATH; open the file yourself")
        else:
            subprocess.run([viewer, "-r", str(out)], check=False)
