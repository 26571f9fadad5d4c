"""`mirrorcap index FILE...`: the packet index a host writes at rotation, for any pcap or pcapng."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import typer


def index(files: list[Path] = typer.Argument(..., help="pcap or pcapng files; each gets FILE.idx.json.gz beside it")) -> None:
    """Write each file's packet index beside it (exactly what the host writes). Exit 2 if one could not be indexed."""
    from ..find.hostindex import indexer
    ix = indexer()
    failed = 0
    for f in files:
        try:
            line, _rows = ix.write(str(f))
        except (OSError, ValueError, struct.error, ix.IndexError_) as e:
            print(f"mirrorcap: {f}: {e}\n  fix: give a pcap or pcapng file you can read, in a directory you can write",
                  file=sys.stderr)
            failed += 1
            continue
        print(f"{ix.index_path(str(f))}: {line['packets']} packets, {line['flows']} flows")
    if failed:
        raise typer.Exit(2)
