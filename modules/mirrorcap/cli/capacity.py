"""`mirrorcap capacity`: volume, disk throughput, network headroom and cost for a traffic rate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from ..capacity import Prices, estimate_for
from ..errors import MirrorcapError, Problem
from ..inventory import load
from .common import InventoryOpt, fail

USAGE = 2  # capacity: 1 means "does not fit", so a bad command line is 2


def _price_overrides(items: list[str]) -> dict[str, float]:
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
    try:
        inv = load(inventory)
    except MirrorcapError as exc:
        fail(exc, USAGE)
    c = next((x for x in inv.captures if capture in (None, x.name)), None)
    if c is None:
        fail(MirrorcapError([Problem(str(inventory), "--capture", f"no capture named {capture}", "use one of: " + ", ".join(x.name for x in inv.captures))]), USAGE)
    prices = Prices().with_overrides(_price_overrides(price))
    try:
        e = estimate_for(c, rate, retention if retention is not None else c.host.retention_days, tag_instances, avg_packet_bytes=avg_packet,
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
