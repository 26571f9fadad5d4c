"""`mirrorcap` command line. Commands are thin: parse options, call one function, print."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from . import lockfile
from .errors import MirrorcapError, Problem
from .inventory import DEFAULT_INVENTORY, load
from .plan import numbers_for

app = typer.Typer(help="Packet capture on AWS with VPC Traffic Mirroring.", no_args_is_help=True, add_completion=False)

InventoryOpt = typer.Option(DEFAULT_INVENTORY, "--inventory", "-i", help="inventory file (HCL)", envvar="MIRRORCAP_INVENTORY")


def fail(exc: MirrorcapError) -> None:
    print(f"mirrorcap: {exc}", file=sys.stderr)
    raise typer.Exit(1)


@app.command()
def validate(inventory: Path = InventoryOpt) -> None:
    """Check the inventory and its lock file; exit 1 with every problem found."""
    try:
        inv = load(inventory)
        numbering = numbers_for(inv)
    except MirrorcapError as exc:
        fail(exc)
    sources = sum(len(c.sources) for c in inv.captures)
    print(f"{inventory}: OK: {len(inv.captures)} capture(s), {sources} source(s)")
    if numbering.changes:
        print(f"note: {numbering.lock_path.name} needs updating: run `mirrorcap sessions --write`")


@app.command()
def sessions(
    inventory: Path = InventoryOpt,
    write: bool = typer.Option(False, "--write", help="update the lock file next to the inventory"),
    check: bool = typer.Option(False, "--check", help="exit 1 if the lock file is out of date (for CI)"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Compute mirror session numbers: unique per source ENI, stable across edits."""
    try:
        inv = load(inventory)
        numbering = numbers_for(inv)
    except MirrorcapError as exc:
        fail(exc)
    rows = []
    for capture in inv.captures:
        for s in capture.sources:
            rows.append({"capture": capture.name, "source": s.id, "session_number": numbering.numbers[(capture.name, s.id)],
                         "vni": s.vni if s.vni is not None else capture.vni, "fixed": s.session_number is not None,
                         "description": s.description})
    if as_json:
        print(json.dumps({"lock_file": str(numbering.lock_path), "up_to_date": not numbering.changes, "sessions": rows}, indent=2))
    else:
        print(f"{'CAPTURE':<16} {'SOURCE':<24} {'SESSION':>7} {'VNI':>8}  NOTE")
        for r in rows:
            note = "fixed in inventory" if r["fixed"] else ""
            print(f"{r['capture']:<16} {r['source']:<24} {r['session_number']:>7} {r['vni']:>8}  {note}")
        for (capture, source), old, new in numbering.changes:
            print(f"change: {capture} {source}: {old if old is not None else '-'} -> {new if new is not None else '-'}")
    if write:
        changed = lockfile.write(numbering.lock_path, numbering.numbers)
        print(f"{'wrote' if changed else 'unchanged'}: {numbering.lock_path}", file=sys.stderr)
    elif check and numbering.changes:
        print(f"mirrorcap: {numbering.lock_path} is out of date: run `mirrorcap sessions --write` and commit it", file=sys.stderr)
        raise typer.Exit(1)


@app.command()
def render(
    inventory: Path = InventoryOpt,
    out: Path = typer.Option(Path("rendered"), "--out", help="output directory (replaced whole)"),
    check: bool = typer.Option(False, "--check", help="write nothing; exit 1 if OUT differs from a fresh render"),
) -> None:
    """Render the host bootstrap (bake.sh, user data, scripts, units) for each capture."""
    from .render import diff_tree, rendered_tree, write_tree
    try:
        tree = rendered_tree(load(inventory))
    except MirrorcapError as exc:
        fail(exc)
    if check:
        stale = diff_tree(tree, out)
        if stale:
            print(f"mirrorcap: {out} is stale ({len(stale)} file(s), e.g. {stale[0]}): run `mirrorcap render` and commit it", file=sys.stderr)
            raise typer.Exit(1)
        print(f"{out}: up to date ({len(tree)} files)")
        return
    write_tree(tree, out)
    print(f"wrote {len(tree)} files to {out}")


def _ec2(region: str):
    import boto3
    return boto3.client("ec2", region_name=region)


@app.command()
def check(
    inventory: Path = InventoryOpt,
    capture: list[str] = typer.Option([], "--capture", "-c", help="only these captures (default: all)"),
    fix: bool = typer.Option(False, "--fix", help="create missing runtime sessions, remove owned ones whose source is gone"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Compare the inventory with the live account (AWS credentials needed); exit 1 on drift."""
    from datetime import datetime, timezone
    from .live.drift import check_capture, locate
    from .live.ec2 import reconcile
    from .live.settings import settings_for
    try:
        inv = load(inventory)
        numbers = numbers_for(inv).numbers
    except MirrorcapError as exc:
        fail(exc)
    unknown = sorted(set(capture) - {c.name for c in inv.captures})
    if unknown:
        fail(MirrorcapError([Problem(str(inventory), "--capture", f"no capture named {', '.join(unknown)}",
                                     "use one of: " + ", ".join(c.name for c in inv.captures))]))
    findings, fixed = [], {}
    for c in inv.captures:
        if capture and c.name not in capture:
            continue
        ec2 = _ec2(c.region)
        now = datetime.now(timezone.utc)
        per_source = {s: n for (name, s), n in numbers.items() if name == c.name}
        found = check_capture(ec2, c, per_source, now)
        if fix and any(f.fixable for f in found):
            target_id, filter_id = locate(ec2, c)
            fixed[c.name] = reconcile(ec2, settings_for(c, target_id=target_id, filter_id=filter_id))
            found = check_capture(ec2, c, per_source, datetime.now(timezone.utc))
        findings.extend(found)
    if as_json:
        print(json.dumps({"drift": bool(findings), "findings": [f.as_dict() for f in findings], "fixed": fixed}, indent=2))
    else:
        for name, done in fixed.items():
            print(f"{name}: fixed: created {len(done['created'])} session(s), deleted {len(done['deleted'])}")
        if not findings:
            print("no drift")
        else:
            print(f"{'CAPTURE':<12} {'KIND':<17} {'SUBJECT':<26} DETAIL / FIX")
            for f in findings:
                print(f"{f.capture:<12} {f.kind:<17} {f.subject:<26} {f.detail}\n{'':<57} fix: {f.fix}")
    if findings:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
