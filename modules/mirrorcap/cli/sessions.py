"""`mirrorcap sessions`: the session numbers, and the lock file that keeps them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from .common import FINDINGS, InventoryOpt, load_numbered, reported


def sessions(
    inventory: Path = InventoryOpt,
    write: bool = typer.Option(False, "--write", help="update the lock file next to the inventory"),
    check: bool = typer.Option(False, "--check", help="exit 1 if the lock file is out of date (for CI)"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Compute mirror session numbers: unique per source ENI, stable across edits.

    Exit 0: done; 1: --check found the lock file out of date; 2: the inventory or its lock is wrong."""
    from ..contract import source_vni
    from ..workflow.markdown import inert  # lock keys are the lock's text, not the inventory's checked IDs
    inv, numbering = load_numbered(inventory)
    rows = []
    for capture in inv.captures:
        for s in capture.sources:
            rows.append({"capture": capture.name, "source": s.id, "session_number": numbering.numbers[(capture.name, s.id)],
                         "vni": source_vni(s.vni, capture.vni), "fixed": s.session_number is not None,
                         "description": s.description})
    if as_json:
        print(json.dumps({"lock_file": str(numbering.lock_path), "up_to_date": not numbering.changes, "sessions": rows}, indent=2))
    else:
        print(f"{'CAPTURE':<16} {'SOURCE':<24} {'SESSION':>7} {'VNI':>8}  NOTE")
        for r in rows:
            note = "fixed in inventory" if r["fixed"] else ""
            print(f"{r['capture']:<16} {r['source']:<24} {r['session_number']:>7} {r['vni']:>8}  {note}")
        for (capture, source), old, new in numbering.changes:
            print(inert(f"change: {capture} {source}: {old if old is not None else '-'} -> {new if new is not None else '-'}"))
    if write:
        write_lock(numbering)
    elif check and numbering.changes:
        print(f"mirrorcap: {numbering.lock_path} is out of date: run `mirrorcap sessions --write` and commit it", file=sys.stderr)
        raise typer.Exit(FINDINGS)


def write_lock(numbering) -> None:
    """The lock file as numbered (`sessions --write`, `synth --write-lock`), each change said on stderr:
    always there, since `make synth` shows no table but never hides what changed in the lock."""
    from ..numbering import lockfile
    from ..workflow.markdown import inert
    for (capture, source), old, new in numbering.changes:
        print(inert(f"{numbering.lock_path.name}: {capture} {source}: session number "
                    f"{old if old is not None else '(none)'} -> {new if new is not None else '(removed)'}"), file=sys.stderr)
    with reported():
        changed = lockfile.write(numbering.lock_path, numbering.numbers)
    through = f" (through the link, to {lockfile.write_target(numbering.lock_path)})" if numbering.lock_path.is_symlink() else ""
    print(f"{'wrote' if changed else 'unchanged'}: {numbering.lock_path}{through}", file=sys.stderr)
