"""`mirrorcap validate`: the inventory and its lock, and with --live what the account says."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import typer

from ..errors import MirrorcapError, Problem
from .common import FINDINGS, USAGE, InventoryOpt, ProfileOpt, RoleOpt, access, fail, load_numbered, reported


def validate(
    inventory: Path = InventoryOpt,
    live: bool = typer.Option(False, "--live", help="also ask AWS (credentials needed): instance types, AZs, MTU, packet length"),
    source_mtu: int = typer.Option(9001, "--source-mtu", help="the sources' interface MTU (an OS setting AWS cannot report)"),
    target_mtu: int = typer.Option(9001, "--target-mtu", help="the capture host's mirror ENI MTU"),
    profile: str = ProfileOpt,
    role_arn: str = RoleOpt,
) -> None:
    """Check the inventory and its lock file.

    Exit 0: valid; 1: every problem found (in the file, or what the account says with --live);
    2: the command line is wrong (an MTU, --role-arn) or the inventory file does not exist;
    3: could not reach AWS (--live)."""
    from .. import aws_limits as L
    from ..capacity import estimate_for
    from ..inventory import unbaked
    wrong = [Problem("command line", flag, f"{mtu} is out of range ({L.MTU_MIN} to {L.MIRROR_TARGET_MTU})",
                     "pass the interface's MTU in bytes: 9001 (EC2 jumbo frames, the default), 1500 (Ethernet)...")
             for flag, mtu in (("--source-mtu", source_mtu), ("--target-mtu", target_mtu)) if not L.MTU_MIN <= mtu <= L.MIRROR_TARGET_MTU]
    if wrong:
        fail(MirrorcapError(wrong), USAGE)
    inv, numbering = load_numbered(inventory, FINDINGS)
    if unbaked(inv):  # what synth refuses, validate refuses
        fail(MirrorcapError(unbaked(inv)), FINDINGS)
    bandwidth = {}
    if live:
        with reported():  # a wrong --role-arn is the command line's (2); what the account says is a finding (1)
            aws = access(profile, role_arn)
        with reported(FINDINGS):
            bandwidth = _validate_live(inventory, inv, source_mtu, target_mtu, aws)
    sources = sum(len(c.sources) for c in inv.captures)
    print(f"{inventory}: OK: {len(inv.captures)} capture(s), {sources} source(s)")
    now = datetime.now(timezone.utc)
    for c in inv.captures:
        if c.auto_mirror and c.auto_mirror.ends_at and c.auto_mirror.ends_at <= now:
            print(f'warning: {inventory}: capture "{c.name}" > auto_mirror > ends_at: {c.auto_mirror.ends_at.isoformat()} has passed: '
                  "the campaign is over (its sessions are removed at the next sweep and nothing new is mirrored)", file=sys.stderr)
        if c.storage.expected_mbps:
            estimate = estimate_for(c, c.storage.expected_mbps, c.host.retention_days, instance_baseline_gbps=bandwidth.get(c.name))
            for problem in estimate.problems:
                print(f'warning: {inventory}: capture "{c.name}" > storage > expected_mbps: {problem}', file=sys.stderr)
    if numbering.changes:
        print(f"note: {numbering.lock_path.name} needs updating: run `mirrorcap sessions --write`")


def live_lines(inventory: Path, findings: list) -> list[str]:
    """What the account says, as text: instance types, zones and AWS's own refusal of a session are the
    account's text, shown inert (a control character or U+202E as its code point, never sent to the terminal)."""
    from ..workflow.markdown import inert
    return [inert(f'{f.severity}: {inventory}: capture "{f.capture}" > {f.field}: {f.message}\n  fix: {f.fix}') for f in findings]


def _validate_live(inventory: Path, inv, source_mtu: int, target_mtu: int, aws) -> dict[str, float]:
    """Print what the account says; return each capture's baseline bandwidth (Gbit/s) from the API."""
    from ..account_checks.clients import baseline_gbps
    from ..account_checks.drift import locate
    from ..account_checks.preflight import preflight
    errors, bandwidth = 0, {}
    for c in inv.captures:
        ec2 = aws.ec2(c.region)
        gbps = baseline_gbps(ec2, c.instance_type)
        if gbps is not None:
            bandwidth[c.name] = gbps
        target_id, filter_id = locate(ec2, c)
        found = preflight(ec2, c, source_mtu=source_mtu, target_mtu=target_mtu, target_id=target_id, filter_id=filter_id)
        errors += sum(f.severity == "error" for f in found)
        for line in live_lines(inventory, found):
            print(line, file=sys.stderr)
    if errors:
        raise typer.Exit(FINDINGS)
    return bandwidth
