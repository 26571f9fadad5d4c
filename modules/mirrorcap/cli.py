"""`mirrorcap` command line. Commands are thin: parse options, call one function, print."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import typer

from .numbering import lockfile
from .errors import MirrorcapError, Problem
from .inventory.load import DEFAULT_INVENTORY, load
from .numbering.plan import numbers_for
from .numbering.sessions import by_capture

app = typer.Typer(help="Packet capture on AWS with VPC Traffic Mirroring.", no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version
        print(f"mirrorcap {version('mirrorcap')}")
        raise typer.Exit()


@app.callback()
def main(_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version and exit")) -> None:
    """Packet capture on AWS with VPC Traffic Mirroring."""

InventoryOpt = typer.Option(DEFAULT_INVENTORY, "--inventory", "-i", help="inventory file (HCL)", envvar="MIRRORCAP_INVENTORY")


def fail(exc: MirrorcapError, code: int = 1) -> None:
    print(f"mirrorcap: {exc}", file=sys.stderr)
    raise typer.Exit(code)


def _ec2(region: str):
    import boto3
    return boto3.client("ec2", region_name=region)


def aws_problem(exc: Exception) -> Problem:
    """What the account or the way to it said, as a problem: never a traceback, never the wrong cause."""
    from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        fix = ("grant the caller the EC2 Describe*/TrafficMirror* permissions this command needs"
               if "Unauthorized" in err.get("Code", "") or "AccessDenied" in err.get("Code", "") else "check the account and region")
        return Problem("AWS", exc.operation_name, f"{err.get('Code')}: {err.get('Message', '')}", fix)
    if isinstance(exc, NoCredentialsError):
        return Problem("AWS", "credentials", str(exc),
                       "configure AWS credentials (AWS_PROFILE, SSO login, or an instance role) for the capture's account")
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
        return Problem("AWS", "network", str(exc), "check the network path to the AWS endpoint (proxy, VPC endpoint, DNS)")
    return Problem("AWS", type(exc).__name__, str(exc), "check the AWS configuration (profile, region, credentials)")


def aws_errors(fn):
    """No traceback for what the account says: missing credentials, denied calls, no network."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            return fn(*args, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            fail(MirrorcapError([aws_problem(exc)]))
    return wrapper


@app.command()
def validate(
    inventory: Path = InventoryOpt,
    live: bool = typer.Option(False, "--live", help="also ask AWS (credentials needed): instance types, AZs, MTU, packet length"),
    source_mtu: int = typer.Option(9001, "--source-mtu", help="the sources' interface MTU (an OS setting AWS cannot report)"),
    target_mtu: int = typer.Option(9001, "--target-mtu", help="the capture host's mirror ENI MTU"),
) -> None:
    """Check the inventory and its lock file; exit 1 with every problem found."""
    try:
        inv = load(inventory)
        numbering = numbers_for(inv)
    except MirrorcapError as exc:
        fail(exc)
    bandwidth = _validate_live(inventory, inv, source_mtu, target_mtu) if live else {}
    sources = sum(len(c.sources) for c in inv.captures)
    print(f"{inventory}: OK: {len(inv.captures)} capture(s), {sources} source(s)")
    now = datetime.now(timezone.utc)
    for c in inv.captures:
        if c.auto_mirror and c.auto_mirror.ends_at and c.auto_mirror.ends_at <= now:
            print(f'warning: {inventory}: capture "{c.name}" > auto_mirror > ends_at: {c.auto_mirror.ends_at.isoformat()} has passed: '
                  "the campaign is over (its sessions are removed at the next sweep and nothing new is mirrored)", file=sys.stderr)
        if c.storage.expected_mbps:
            estimate = _estimate_for(c, c.storage.expected_mbps, c.host.retention_days, instance_baseline_gbps=bandwidth.get(c.name))
            for problem in estimate.problems:
                print(f'warning: {inventory}: capture "{c.name}" > storage > expected_mbps: {problem}', file=sys.stderr)
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
        # On stderr, always: `make synth` hides the table, never what changed in the lock.
        for (capture, source), old, new in numbering.changes:
            print(f"{numbering.lock_path.name}: {capture} {source}: session number "
                  f"{old if old is not None else '(none)'} -> {new if new is not None else '(removed)'}", file=sys.stderr)
        changed = lockfile.write(numbering.lock_path, numbering.numbers)
        print(f"{'wrote' if changed else 'unchanged'}: {numbering.lock_path}", file=sys.stderr)
    elif check and numbering.changes:
        print(f"mirrorcap: {numbering.lock_path} is out of date: run `mirrorcap sessions --write` and commit it", file=sys.stderr)
        raise typer.Exit(1)


@app.command()
def render(
    inventory: Path = InventoryOpt,
    out: Path = typer.Option(Path("rendered"), "--out",
                             help="output directory, replaced whole; refused unless missing, empty or an earlier render"),
    check: bool = typer.Option(False, "--check", help="write nothing; exit 1 if OUT differs from a fresh render"),
) -> None:
    """Render the host bootstrap (bake.sh, user data, scripts, units) for each capture."""
    from .host.render import rendered_tree
    from .host.tree import diff_tree, write_tree
    try:
        inv = load(inventory)
        numbers_for(inv)  # the session-number checks validate runs: render refuses what validate refuses
        tree = rendered_tree(inv)
    except MirrorcapError as exc:
        fail(exc)
    if check:
        stale = diff_tree(tree, out)
        if stale:
            print(f"mirrorcap: {out} is stale ({len(stale)} file(s), e.g. {stale[0]}): run `mirrorcap render` and commit it", file=sys.stderr)
            raise typer.Exit(1)
        print(f"{out}: up to date ({len(tree)} files)")
        return
    try:
        write_tree(tree, out)
    except MirrorcapError as exc:
        fail(exc)
    print(f"wrote {len(tree)} files to {out}")


@aws_errors
def _validate_live(inventory: Path, inv, source_mtu: int, target_mtu: int) -> dict[str, float]:
    """Print what the account says; return each capture's baseline bandwidth (Gbit/s) from the API."""
    from .account.drift import locate
    from .account.preflight import baseline_gbps, preflight
    errors, bandwidth = 0, {}
    for c in inv.captures:
        ec2 = _ec2(c.region)
        gbps = baseline_gbps(ec2, c.instance_type)
        if gbps is not None:
            bandwidth[c.name] = gbps
        target_id, filter_id = locate(ec2, c)
        for f in preflight(ec2, c, source_mtu=source_mtu, target_mtu=target_mtu, target_id=target_id, filter_id=filter_id):
            errors += f.severity == "error"
            print(f'{f.severity}: {inventory}: capture "{f.capture}" > {f.field}: {f.message}\n  fix: {f.fix}', file=sys.stderr)
    if errors:
        raise typer.Exit(1)
    return bandwidth


def _estimate_for(c, rate: float, retention: float, tag_instances: int | None = None, **kw):
    from .capacity import estimate
    sources = len(c.sources) + (tag_instances or 0)
    return estimate(rate, retention, volume_type=c.storage.type, volume_gib=c.storage.size_gib, gp3_mibps=c.storage.throughput_mibps,
                    instance_type=c.instance_type, sources=sources, min_free_percent=c.host.min_free_percent,
                    unpriced_selectors=len(c.tag_sources) if tag_instances is None else 0, **kw)


USAGE = 2  # capacity: 1 means "does not fit", so a bad command line is 2


def _price_overrides(items: list[str]) -> dict[str, float]:
    import math
    from .capacity import Prices
    names = "instance_hour, volume_gib_month, mirror_session_hour or gp3_mibps_month"
    overrides = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            Prices().with_overrides({key: 0.0})
        except KeyError:
            fail(MirrorcapError([Problem("command line", "--price", f"{key!r} is not a price name", f"use {names}, e.g. instance_hour=0.05")]), USAGE)
        try:
            amount = float(value)
        except ValueError:
            amount = math.nan
        if not math.isfinite(amount) or amount < 0:
            fail(MirrorcapError([Problem("command line", "--price", f"{value!r} is not a price in USD for {key}",
                                         f"write a number, e.g. {key}=0.05")]), USAGE)
        overrides[key] = amount
    return overrides


@app.command()
def capacity(
    rate: float = typer.Option(..., "--rate", help="average mirrored traffic, Mbit/s"),
    retention: float = typer.Option(None, "--retention", help="days of pcaps to keep (default: the capture's retention_days)"),
    inventory: Path = InventoryOpt,
    capture: str = typer.Option(None, "--capture", "-c", help="capture block to size (default: the first)"),
    avg_packet: int = typer.Option(500, "--avg-packet", help="average packet size in bytes (VXLAN and pcap overhead are per packet)"),
    instance_gbps: float = typer.Option(None, "--instance-gbps", help="the instance's baseline bandwidth, if not built in"),
    tag_instances: int = typer.Option(None, "--tag-instances", min=0, help="how many instances the tag selectors match (their sessions cost too)"),
    price: list[str] = typer.Option([], "--price", help="override a price: instance_hour=, volume_gib_month=, mirror_session_hour=, gp3_mibps_month="),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Volume size, disk throughput, network headroom and monthly cost for a traffic rate.

    Exit 0: it fits; 1: it does not fit; 2: the command line or the inventory is wrong."""
    from .capacity import Prices
    try:
        inv = load(inventory)
    except MirrorcapError as exc:
        fail(exc, USAGE)
    c = next((x for x in inv.captures if capture in (None, x.name)), None)
    if c is None:
        fail(MirrorcapError([Problem(str(inventory), "--capture", f"no capture named {capture}", "use one of: " + ", ".join(x.name for x in inv.captures))]), USAGE)
    prices = Prices().with_overrides(_price_overrides(price))
    try:
        e = _estimate_for(c, rate, retention if retention is not None else c.host.retention_days, tag_instances, avg_packet_bytes=avg_packet,
                          prices=prices, instance_baseline_gbps=instance_gbps)
    except ValueError as exc:
        fail(MirrorcapError([Problem("command line", "--rate/--retention/--avg-packet", str(exc), "pass positive numbers, e.g. --rate 50")]), USAGE)
    if as_json:
        print(json.dumps(e.as_dict(), indent=2))
    else:
        m = e.monthly_usd
        print(f'capture "{c.name}": {e.rate_mbps:g} Mbit/s kept {e.retention_days:g} days, {e.avg_packet_bytes}-byte packets')
        print(f"  disk      writes {e.disk_mib_s} MiB/s; needs {e.needed_gib} GiB; has {e.volume_gib} GiB {e.volume_type} "
              f"(sustains {e.volume_baseline_mib_s} MiB/s, bursts {e.volume_burst_mib_s})")
        bw = f"{e.instance_baseline_mbps:.0f} Mbit/s baseline" if e.instance_baseline_mbps else "baseline unknown"
        print(f"  network   {e.wire_mbps} Mbit/s arrives with VXLAN; {e.instance_type}: {bw}")
        fmt = lambda v: "?" if v is None else f"${v:,.2f}"
        print(f"  monthly   instance {fmt(m['instance'])} + volume {fmt(m['volume'])} + mirroring {e.sources} source(s) "
              f"{fmt(m['mirror_sessions'])} = {fmt(m['total'])} (excl. cross-AZ transfer)")
        u = e.prices_used
        print(f"  prices    {u['region']}: instance {u['instance_hour']}/h, volume {u['volume_gib_month']}/GiB-month, "
              f"session {u['mirror_session_hour']}/h, {u['hours_per_month']} h/month (override: --price NAME=USD)")
        for n in e.notes:
            print(f"  note      {n}")
        for p in e.problems:
            print(f"  PROBLEM   {p}")
        print("  OK" if e.ok else "  does not fit")
    if not e.ok:
        raise typer.Exit(1)


CHECK_DRIFT, CHECK_FAILED = 1, 2


@app.command()
def check(
    inventory: Path = InventoryOpt,
    capture: list[str] = typer.Option([], "--capture", "-c", help="only these captures (default: all)"),
    fix: bool = typer.Option(False, "--fix", help="create missing runtime sessions, remove owned ones whose source is gone"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output: one JSON object, also on errors"),
) -> None:
    """Compare the inventory with the live account (AWS credentials needed).

    Exit 0: no drift; 1: drift; 2: could not check (inventory, credentials, network, permissions): cron can tell them apart."""
    from botocore.exceptions import BotoCoreError, ClientError
    try:
        findings, fixed = _check(inventory, capture, fix)
    except (MirrorcapError, ClientError, BotoCoreError) as exc:
        problems = exc.problems if isinstance(exc, MirrorcapError) else [aws_problem(exc)]
        if as_json:
            print(json.dumps({"drift": None, "error": [vars(p) for p in problems], "findings": [], "fixed": {}}, indent=2))
        print(f"mirrorcap: could not check: {MirrorcapError(problems)}", file=sys.stderr)
        raise typer.Exit(CHECK_FAILED)
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
        raise typer.Exit(CHECK_DRIFT)


def _check(inventory: Path, capture: list[str], fix: bool) -> tuple[list, dict]:
    from .account.drift import check_capture, locate
    from .live.ec2 import reconcile
    from .runtime_settings import settings_for
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
        ec2 = _ec2(c.region)
        per_source = grouped.get(c.name, {})
        found = check_capture(ec2, c, per_source, datetime.now(timezone.utc))
        if fix and any(f.fixable for f in found):
            target_id, filter_id = locate(ec2, c)
            fixed[c.name] = reconcile(ec2, settings_for(c, target_id=target_id, filter_id=filter_id))
            found = check_capture(ec2, c, per_source, datetime.now(timezone.utc))
        findings.extend(found)
    return findings, fixed


if __name__ == "__main__":
    app()
