"""`mirrorcap capacity`: volume, disk throughput, network headroom and cost for a traffic rate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from ..capacity import Prices, estimate_for, fleet_estimate_for, hosts_needed, input_problem
from ..errors import MirrorcapError, Problem
from .common import FINDINGS, USAGE, InventoryOpt, capture_named, fail, load_inventory


def _price_overrides(items: list[str]) -> dict[str, float]:
    names = "instance_hour, volume_gib_month, mirror_session_hour, gp3_mibps_month, s3_gb_month, s3_put_1000, nlb_hour or nlcu_hour"
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
    wrong = [Problem("command line", flag, *bad) for flag, value in (("--rate", rate), ("--retention", retention),
             ("--avg-packet", avg_packet), ("--instance-gbps", instance_gbps), ("--tag-instances", tag_instances))
             if (bad := input_problem(flag, value))]
    if wrong:
        fail(MirrorcapError(wrong), USAGE)
    inv = load_inventory(inventory)
    c = inv.captures[0] if capture is None else capture_named(inv, capture, inventory)
    prices = Prices().with_overrides(_price_overrides(price))
    try:
        e = estimate_for(c, rate, retention if retention is not None else c.host.retention_days, tag_instances, avg_packet_bytes=avg_packet,
                          prices=prices, instance_baseline_gbps=instance_gbps)
    except ValueError as exc:
        fail(MirrorcapError([Problem("command line", "--rate/--retention/--avg-packet", str(exc), "pass positive numbers, e.g. --rate 50")]), USAGE)
    if c.fleet is not None:
        _fleet(c, rate, retention if retention is not None else c.host.retention_days, tag_instances, avg_packet, prices, instance_gbps, as_json)
        return
    if as_json:
        print(json.dumps(e.as_dict(), indent=2))
    else:
        m = e.monthly_usd
        print(f'capture "{c.name}": {e.rate_mbps:g} Mbit/s kept {e.retention_days:g} days, {e.avg_packet_bytes}-byte packets')
        print(f"  disk      writes {e.disk_mib_s} MiB/s; needs {e.needed_gib} GiB; has {e.volume_gib} GiB {e.volume_type} "
              f"(sustains {e.volume_baseline_mib_s} MiB/s, bursts {e.volume_burst_mib_s})")
        bw = f"{e.instance_baseline_mbps:.0f} Mbit/s baseline" if e.instance_baseline_mbps else "baseline unknown"
        print(f"  network   {e.wire_mbps} Mbit/s arrives with VXLAN; {e.instance_type}: {bw}")
        print(f"  monthly   instance {usd(m['instance'])} + volume {usd(m['volume'])} + mirroring {e.sources} source(s) "
              f"{usd(m['mirror_sessions'])} = {usd(m['total'])} (excl. cross-AZ transfer)")
        u = e.prices_used
        print(f"  prices    {u['region']}: instance {u['instance_hour']}/h, volume {u['volume_gib_month']}/GiB-month, "
              f"session {u['mirror_session_hour']}/h, {u['hours_per_month']} h/month (override: --price NAME=USD)")
        needed = hosts_needed(e) if not e.ok else None
        _verdict(e, f"  fleet     a single host no longer fits: {needed} hosts needed at this rate: "
                    "add fleet {} (an NLB target, hosts in every AZ) and archive {} to the capture" if needed and needed > 1 else None)
    if not e.ok:
        raise typer.Exit(FINDINGS)


def _fleet(c, rate, retention, tag_instances, avg_packet, prices, instance_gbps, as_json) -> None:
    try:
        f = fleet_estimate_for(c, rate, retention, tag_instances, avg_packet_bytes=avg_packet, prices=prices, instance_baseline_gbps=instance_gbps)
    except ValueError as exc:
        fail(MirrorcapError([Problem("command line", "--rate/--retention/--avg-packet", str(exc), "pass positive numbers, e.g. --rate 50")]), USAGE)
    if as_json:
        print(json.dumps(f.as_dict(), indent=2))
    else:
        h, m = f.per_host, f.monthly_usd
        top = f"{f.host_max_mbps:g} Mbit/s" if f.host_max_mbps else "unknown"
        print(f'capture "{c.name}" (fleet): {f.rate_mbps:g} Mbit/s over {f.azs} AZ(s), kept {h.retention_days:g} days on the hosts, '
              f"{c.archive_retention_days} days in S3")
        print(f"  hosts     {f.hosts_per_az} per AZ, {f.hosts} in all ({h.instance_type}; one sustains {top})")
        print(f"  per host  {h.rate_mbps:.1f} Mbit/s: writes {h.disk_mib_s} MiB/s; needs {h.needed_gib} GiB; has {h.volume_gib} GiB {h.volume_type}")
        print(f"  archive   {f.s3_gib:,.1f} GiB in S3 (steady state), {f.s3_puts_month:,} uploads a month")
        print(f"  nlb       {f.nlb_gb_hour} GB/hour processed")
        print(f"  monthly   instances {usd(m['instances'])} + volumes {usd(m['volumes'])} + mirroring {usd(m['mirror_sessions'])} + "
              f"S3 {usd(m['s3_storage'])} + S3 requests {usd(m['s3_requests'])} + NLB {usd(m['nlb'])} = {usd(m['total'])} (excl. cross-AZ transfer)")
        u = f.prices_used
        print(f"  prices    {u['region']}: S3 {u['s3_gb_month']}/GB-month, {u['s3_put_1000']}/1,000 PUT, NLB {u['nlb_hour']}/h + "
              f"{u['nlcu_hour']}/NLCU-h (override: --price NAME=USD)")
        _verdict(f)
    if not f.ok:
        raise typer.Exit(FINDINGS)


def usd(amount) -> str:
    return "?" if amount is None else f"${amount:,.2f}"


def _verdict(e, advice: str | None = None) -> None:
    """The notes, the problems, any advice, and whether it fits."""
    for n in e.notes:
        print(f"  note      {n}")
    for p in e.problems:
        print(f"  PROBLEM   {p}")
    if advice:
        print(advice)
    print("  OK" if e.ok else "  does not fit")
