"""`mirrorcap check`: the inventory against the live account (drift), optionally fixing runtime sessions."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import typer

from ..errors import MirrorcapError, Problem
from .common import FINDINGS, InventoryOpt, ProfileOpt, RoleOpt, access, is_aws_error, missing_inventory, problems_of


def check(
    inventory: Path = InventoryOpt,
    capture: list[str] = typer.Option([], "--capture", "-c", help="only these captures (default: all)"),
    fix: bool = typer.Option(False, "--fix", help="create missing runtime sessions, remove owned ones whose source is gone"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output: one JSON object, also on errors"),
    profile: str = ProfileOpt,
    role_arn: str = RoleOpt,
) -> None:
    """Compare the inventory with the live account (AWS credentials needed).

    Exit 0: no drift; 1: drift; 2: could not check the inventory (missing, invalid, --capture) or a wrong --role-arn;
    3: could not reach AWS (credentials, network, permissions): cron can tell them apart."""
    try:
        findings, fixed = _check(inventory, capture, fix, access(profile, role_arn))
    except Exception as exc:
        if not (isinstance(exc, MirrorcapError) or is_aws_error(exc)):
            raise
        problems, code = problems_of(exc)
        if as_json:
            print(json.dumps({"drift": None, "error": [vars(p) for p in problems], "findings": [], "fixed": {}}, indent=2))
        print(f"mirrorcap: could not check: {MirrorcapError(problems)}", file=sys.stderr)
        raise typer.Exit(code)
    if as_json:  # (json.dumps writes every control and non-ASCII character as an escape)
        print(json.dumps({"drift": bool(findings), "findings": [f.as_dict() for f in findings], "fixed": fixed}, indent=2))
    else:
        for line in table(findings, fixed):
            print(line)
    if findings:
        raise typer.Exit(FINDINGS)


def table(findings: list, fixed: dict) -> list[str]:
    """The findings as text lines. Details hold what the account returned (tag values, names, AWS's own
    messages): shown inert, an escape sequence or U+202E as its code point, never sent to the terminal."""
    from ..workflow.markdown import inert
    lines = [f"{name}: fixed: created {len(done['created'])} session(s), deleted {len(done['deleted'])}" for name, done in fixed.items()]
    if findings:
        lines.append(f"{'CAPTURE':<12} {'KIND':<17} {'SUBJECT':<26} DETAIL / FIX")
        lines += [f"{f.capture:<12} {f.kind:<17} {f.subject:<26} {f.detail}\n{'':<57} fix: {f.fix}" for f in findings]
    else:
        lines.append("no drift")
    return [inert(line) for line in lines]


def _check(inventory: Path, capture: list[str], fix: bool, aws) -> tuple[list, dict]:
    from ..account_checks.drift import check_capture, locate
    from ..inventory import load
    from ..numbering.plan import numbers_for
    from ..numbering.sessions import by_capture
    from ..remirror.ec2 import reconcile
    from ..remirror_settings import settings_for
    if not inventory.exists():
        raise MirrorcapError([missing_inventory(inventory)])
    inv = load(inventory)
    numbers = numbers_for(inv).numbers
    unknown = sorted(set(capture) - {c.name for c in inv.captures})
    if unknown:
        raise MirrorcapError([Problem(str(inventory), "--capture", f"no capture named {', '.join(unknown)}",
                                      "use one of: " + ", ".join(c.name for c in inv.captures))])
    findings, fixed = [], {}
    grouped = by_capture(numbers)
    for c in inv.captures:
        if capture and c.name not in capture:
            continue
        fleet = aws.fleet(c.region) if c.fleet else None
        ec2 = fleet.ec2 if fleet else aws.ec2(c.region)
        per_source = grouped.get(c.name, {})
        found = check_capture(ec2, c, per_source, datetime.now(timezone.utc), fleet)
        if fix and any(f.fixable for f in found):
            target_id, filter_id = locate(ec2, c)
            fixed[c.name] = reconcile(ec2, settings_for(c, target_id=target_id, filter_id=filter_id))
            found = check_capture(ec2, c, per_source, datetime.now(timezone.utc), fleet)
        findings.extend(found)
    return findings, fixed
