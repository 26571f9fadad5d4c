"""Capacity and cost of one capture host, or of a fleet (fleet_estimate): pure functions of rate, retention and the inventory.

Facts used (AWS docs, EBS volume types and EC2 network bandwidth pages):
- st1: baseline 40 MiB/s per TiB, burst 250 MiB/s per TiB, both capped at 500 MiB/s.
- sc1: baseline 12 MiB/s per TiB (cap 192), burst 80 MiB/s per TiB (cap 250).
- gp3: the provisioned throughput (125 MiB/s unless set).
- VXLAN adds 50 bytes to every mirrored packet on the wire; pcap adds a 16-byte
  record header per packet on disk.
Prices are on-demand list prices for us-east-1 and are printed with every
estimate; any of them can be overridden (other regions, discounts).
"""

from __future__ import annotations

import math

from dataclasses import asdict, dataclass, field, replace
from typing import Optional

from . import aws_limits as L

PCAP_RECORD_HEADER = 16
HOURS_PER_MONTH = 730
GIB = 1 << 30
MIB = 1 << 20

# type: (baseline MiB/s per TiB, cap, burst MiB/s per TiB, cap)
HDD_THROUGHPUT = {"st1": (40, 500, 250, 500), "sc1": (12, 192, 80, 250)}
GP3_DEFAULT_MIBPS = 125

# Baseline (not burst) network bandwidth, Gbit/s, for the types a capture host
# commonly uses; others: pass the figure (DescribeInstanceTypes >
# NetworkInfo.NetworkCards[].BaselineBandwidthInGbps).
BASELINE_GBPS = {
    "t3.micro": 0.064, "t3.small": 0.128, "t3.medium": 0.256, "t3.large": 0.512, "t3.xlarge": 1.024, "t3.2xlarge": 2.048,
    "m5.large": 0.75, "m5.xlarge": 1.25, "m5.2xlarge": 2.5, "c5.large": 0.75, "c5.xlarge": 1.25, "c5.2xlarge": 2.5,
    "m6i.large": 0.781, "m6i.xlarge": 1.562, "m6i.2xlarge": 3.125, "c6i.large": 0.781, "c6i.xlarge": 1.562, "c6i.2xlarge": 3.125,
}


# What a command line may ask about: beyond these the answer is no capture host, only arithmetic
# (1e300 Mbit/s once came back as a NaN).
INPUT_BOUNDS = {  # flag: (lowest, highest, what, an example)
    "--rate": (0.001, 1_000_000, "Mbit/s of mirrored traffic (1 Tbit/s at most)", "--rate 50"),
    "--retention": (0.01, 36500, "days of pcaps kept", "--retention 15"),
    "--avg-packet": (64, 9216, "bytes per packet (a 9216-byte jumbo frame at most)", "--avg-packet 500"),
    "--instance-gbps": (0.001, 3200, "Gbit/s of baseline bandwidth (EC2's largest is 3,200)", "--instance-gbps 12.5"),
    "--tag-instances": (0, L.SESSIONS_PER_ACCOUNT, f"instances ({L.SESSIONS_PER_ACCOUNT:,} sessions per account at most)",
                        "--tag-instances 20"),
}


def input_problem(flag: str, value) -> Optional[tuple[str, str]]:
    """(what is wrong, the fix) for a command-line number outside INPUT_BOUNDS[flag], or None."""
    lo, hi, what, example = INPUT_BOUNDS[flag]
    if value is None or (math.isfinite(value) and lo <= value <= hi):
        return None
    return f"{value!r} is out of range: {what}, from {lo:g} to {hi:,}", f"pass a number in that range, e.g. {example}"


@dataclass(frozen=True)
class Prices:
    region: str = "us-east-1"
    instance_hour: dict = field(default_factory=lambda: {
        "t3.micro": 0.0104, "t3.small": 0.0208, "t3.medium": 0.0416, "t3.large": 0.0832, "t3.xlarge": 0.1664,
        "m5.large": 0.096, "c5.large": 0.085, "m6i.large": 0.096, "c6i.large": 0.085})
    volume_gib_month: dict = field(default_factory=lambda: {"st1": 0.045, "sc1": 0.015, "gp3": 0.08})
    gp3_mibps_month: float = 0.04  # above 125 MiB/s
    mirror_session_hour: float = 0.015  # per source ENI with a session
    # A fleet's archive and load balancer, us-east-1 list prices:
    # S3 Standard, first 50 TB: $0.023 per GB-month; PUT/COPY/POST/LIST: $0.005 per 1,000 requests
    # (https://aws.amazon.com/s3/pricing/). NLB: $0.0225 per NLB-hour and $0.006 per NLCU-hour, an NLCU
    # including 1 GB processed per hour (https://aws.amazon.com/elasticloadbalancing/pricing/; the NLCU
    # price as transcribed from that page in api-evangelist/amazon-elastic-load-balancing, 2026-09-20).
    s3_gb_month: float = 0.023
    s3_put_1000: float = 0.005
    nlb_hour: float = 0.0225
    nlcu_hour: float = 0.006

    def with_overrides(self, overrides: dict[str, float]) -> "Prices":
        """Keys: instance_hour, volume_gib_month, gp3_mibps_month, mirror_session_hour."""
        p = self
        for key, value in overrides.items():
            if key == "instance_hour":
                p = replace(p, instance_hour={**p.instance_hour, "*": value})
            elif key == "volume_gib_month":
                p = replace(p, volume_gib_month={**p.volume_gib_month, "*": value})
            elif key in ("gp3_mibps_month", "mirror_session_hour", "s3_gb_month", "s3_put_1000", "nlb_hour", "nlcu_hour"):
                p = replace(p, **{key: value})
            else:
                raise KeyError(key)
        return p


class Verdict:
    """An estimate fits when it names no problem."""

    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Estimate(Verdict):
    rate_mbps: float
    retention_days: float
    avg_packet_bytes: int
    disk_mib_s: float
    needed_gib: int
    volume_type: str
    volume_gib: int
    volume_baseline_mib_s: float
    volume_burst_mib_s: float
    wire_mbps: float
    instance_type: str
    instance_baseline_mbps: Optional[float]
    sources: int
    monthly_usd: dict
    prices_used: dict
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def volume_throughput(volume_type: str, size_gib: int, gp3_mibps: Optional[int] = None) -> tuple[float, float]:
    """(baseline, burst) MiB/s."""
    if volume_type == "gp3":
        t = float(gp3_mibps or GP3_DEFAULT_MIBPS)
        return t, t
    base, base_cap, burst, burst_cap = HDD_THROUGHPUT[volume_type]
    tib = size_gib / 1024
    return min(base * tib, base_cap), min(burst * tib, burst_cap)


def estimate(rate_mbps: float, retention_days: float, *, volume_type: str = "st1", volume_gib: int = 300,
             gp3_mibps: Optional[int] = None, instance_type: str = "t3.small", sources: int = 1, min_free_percent: int = 10,
             avg_packet_bytes: int = 500, prices: Prices = Prices(), instance_baseline_gbps: Optional[float] = None,
             unpriced_selectors: int = 0) -> Estimate:
    """unpriced_selectors: tag selectors whose instance count is unknown (their sessions are not in the cost)."""
    if not (math.isfinite(rate_mbps) and math.isfinite(retention_days)) or rate_mbps <= 0 or retention_days <= 0 or avg_packet_bytes < 64:
        raise ValueError("rate and retention must be positive finite numbers, packets at least 64 bytes")
    packets_s = rate_mbps * 1e6 / 8 / avg_packet_bytes
    disk_bytes_s = rate_mbps * 1e6 / 8 + packets_s * PCAP_RECORD_HEADER
    usable = 1 - min_free_percent / 100  # retention deletes above the free-space floor
    needed_gib = int(-(-disk_bytes_s * retention_days * 86400 / usable // GIB))
    base, burst = volume_throughput(volume_type, volume_gib, gp3_mibps)
    disk_mib_s = disk_bytes_s / MIB
    wire_mbps = rate_mbps * (1 + L.VXLAN_OVERHEAD_BYTES / avg_packet_bytes)
    gbps = instance_baseline_gbps if instance_baseline_gbps is not None else BASELINE_GBPS.get(instance_type)
    baseline_mbps = gbps * 1000 if gbps is not None else None

    problems = []
    largest = L.VOLUME_SIZE_GIB[volume_type][1]
    if needed_gib > volume_gib:
        days = retention_days * volume_gib / needed_gib
        fix = (f"needs {needed_gib} GiB (size_gib), or fewer retention_days" if needed_gib <= largest else
               f"needs {needed_gib} GiB, more than one {volume_type} volume holds ({largest} GiB): keep at most "
               f"{retention_days * largest / needed_gib:.1f} days, capture less, or split the sources over several hosts")
        problems.append(f"volume: {volume_gib} GiB holds {days:.1f} of {retention_days:g} days at {rate_mbps:g} Mbit/s; {fix}")
    if disk_mib_s > base:
        what = "only while burst credits last" if disk_mib_s <= burst else "not even bursting"
        problems.append(f"throughput: writing {disk_mib_s:.1f} MiB/s; {volume_type} {volume_gib} GiB sustains {base:.1f} MiB/s ({what}); "
                        + ("grow the volume" if volume_type != "gp3" else "raise throughput_mibps"))
    if baseline_mbps is not None and wire_mbps > baseline_mbps:
        problems.append(f"network: {wire_mbps:.0f} Mbit/s arrives with VXLAN; {instance_type} sustains {baseline_mbps:.0f} Mbit/s "
                        "(above that it runs on burst credits, then drops): pick a larger instance_type")

    instance_price = prices.instance_hour.get("*", prices.instance_hour.get(instance_type))
    volume_price = prices.volume_gib_month.get("*", prices.volume_gib_month[volume_type])
    monthly = {
        "instance": round(instance_price * HOURS_PER_MONTH, 2) if instance_price is not None else None,
        "volume": round(volume_gib * volume_price + (max(0, (gp3_mibps or GP3_DEFAULT_MIBPS) - GP3_DEFAULT_MIBPS) * prices.gp3_mibps_month
                                                     if volume_type == "gp3" else 0), 2),
        "mirror_sessions": round(sources * prices.mirror_session_hour * HOURS_PER_MONTH, 2),
    }
    monthly["total"] = round(sum(v for v in monthly.values() if v is not None), 2)
    used = {"region": prices.region, "instance_hour": instance_price, "volume_gib_month": volume_price,
            "mirror_session_hour": prices.mirror_session_hour, "hours_per_month": HOURS_PER_MONTH}
    notes = []
    if instance_price is None:
        notes.append(f"no built-in hourly price for {instance_type}: pass --price instance_hour=<USD>")
    if baseline_mbps is None:
        notes.append(f"no built-in baseline bandwidth for {instance_type}: pass --instance-gbps (DescribeInstanceTypes)")
    if unpriced_selectors:
        notes.append(f"mirroring covers {sources} explicit source(s) only: the instances {unpriced_selectors} tag selector(s) "
                     "match are unknown here; pass --tag-instances N to cost them")
    return Estimate(rate_mbps=rate_mbps, retention_days=retention_days, avg_packet_bytes=avg_packet_bytes, disk_mib_s=round(disk_mib_s, 2),
                    needed_gib=needed_gib, volume_type=volume_type, volume_gib=volume_gib, volume_baseline_mib_s=round(base, 2),
                    volume_burst_mib_s=round(burst, 2), wire_mbps=round(wire_mbps, 1), instance_type=instance_type,
                    instance_baseline_mbps=baseline_mbps, sources=sources, monthly_usd=monthly, prices_used=used,
                    problems=tuple(problems), notes=tuple(notes))


def estimate_for(capture, rate: float, retention: float, tag_instances: int | None = None, **kw) -> Estimate:
    """estimate() for an inventory capture: its volume, instance type and sources (tag selectors
    priced only when told how many instances they match)."""
    c = capture
    sources = len(c.sources) + (tag_instances or 0)
    return estimate(rate, retention, volume_type=c.storage.type, volume_gib=c.storage.size_gib, gp3_mibps=c.storage.throughput_mibps,
                    instance_type=c.instance_type, sources=sources, min_free_percent=c.host.min_free_percent,
                    unpriced_selectors=len(c.tag_sources) if tag_instances is None else 0, **kw)


# --- A fleet ------------------------------------------------------------------

NLCU_GB_PER_HOUR = 1.0  # an NLCU's processed bytes (mirrored traffic is a few long UDP flows: bytes decide)


def host_max_mbps(e: Estimate) -> Optional[float]:
    """The mirrored rate (Mbit/s, before VXLAN) one host of this estimate's kind sustains:
    the lower of its baseline bandwidth (VXLAN included) and its volume's baseline throughput
    (pcap record headers included). None when neither is known."""
    limits = []
    if e.instance_baseline_mbps:
        limits.append(e.instance_baseline_mbps / (1 + L.VXLAN_OVERHEAD_BYTES / e.avg_packet_bytes))
    if e.volume_baseline_mib_s:
        limits.append(e.volume_baseline_mib_s * MIB * 8 / 1e6 / (1 + PCAP_RECORD_HEADER / e.avg_packet_bytes))
    return min(limits) if limits else None


def hosts_needed(e: Estimate) -> Optional[int]:
    """How many hosts the estimate's rate needs (1 = a single host fits its network and disk)."""
    top = host_max_mbps(e)
    return max(1, math.ceil(e.rate_mbps / top)) if top else None


@dataclass(frozen=True)
class FleetEstimate(Verdict):
    rate_mbps: float
    azs: int
    hosts_per_az: int
    hosts: int
    host_max_mbps: Optional[float]
    per_host: Estimate  # one host at its share of the rate (even spread over the AZs)
    s3_gib: float  # steady state: the archive's retention of pcaps
    s3_puts_month: int
    nlb_gb_hour: float
    monthly_usd: dict
    prices_used: dict
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {**asdict(self), "per_host": self.per_host.as_dict(), "ok": self.ok}


def fleet_estimate(rate_mbps: float, retention_days: float, *, azs: int, min_per_az: int = 1, desired_per_az: int = 1,
                   max_per_az: int = 2, archive_days: float, rotate_seconds: int = 600, vnis: int = 1, sources: int = 0,
                   prices: Prices = Prices(), **host) -> FleetEstimate:
    """A fleet for `rate_mbps` spread evenly over `azs` AZs (with cross-zone off, the
    busiest AZ decides: size it with its own rate). `host`: estimate()'s per-host arguments."""
    if azs < 1:
        raise ValueError("a fleet has at least one AZ")
    one = estimate(rate_mbps, retention_days, sources=0, prices=prices, **host)
    top = host_max_mbps(one)
    per_az = max(desired_per_az, min_per_az, math.ceil(rate_mbps / azs / top) if top else desired_per_az)
    hosts = per_az * azs
    per_host = estimate(rate_mbps / hosts, retention_days, sources=0, prices=prices, **host)
    problems = list(per_host.problems)
    if per_az > L.MAX_HOSTS_PER_AZ:
        problems.append(f"fleet: {rate_mbps:g} Mbit/s needs {per_az} host(s) per AZ (one sustains {top:.0f} Mbit/s), more than a "
                        f"fleet takes ({L.MAX_HOSTS_PER_AZ} per AZ, fleet > max_per_az): pick a larger instance_type or storage, "
                        "add AZs (fleet > subnet_ids), or split the sources over several captures")
    elif per_az > max_per_az:
        problems.append(f"fleet: {rate_mbps:g} Mbit/s needs {per_az} host(s) per AZ (one sustains {top:.0f} Mbit/s); "
                        f"max_per_az is {max_per_az}: raise fleet > max_per_az to {per_az}, or pick a larger instance_type")
    disk_bytes_s = per_host.disk_mib_s * MIB * hosts
    s3_gib = round(disk_bytes_s * archive_days * 86400 / GIB, 1)
    puts = int(hosts * vnis * HOURS_PER_MONTH * 3600 / rotate_seconds)
    nlb_gb_hour = round(rate_mbps * (1 + L.VXLAN_OVERHEAD_BYTES / one.avg_packet_bytes) * 1e6 / 8 * 3600 / 1e9, 2)
    h = per_host.monthly_usd
    monthly = {
        "instances": (round(per_host.prices_used["instance_hour"] * HOURS_PER_MONTH * hosts, 2)
                      if per_host.prices_used["instance_hour"] is not None else None),
        "volumes": round(h["volume"] * hosts, 2),
        "mirror_sessions": round(sources * prices.mirror_session_hour * HOURS_PER_MONTH, 2),
        "s3_storage": round(s3_gib * GIB / 1e9 * prices.s3_gb_month, 2),
        "s3_requests": round(puts / 1000 * prices.s3_put_1000, 2),
        "nlb": round((prices.nlb_hour + max(1.0, nlb_gb_hour / NLCU_GB_PER_HOUR) * prices.nlcu_hour) * HOURS_PER_MONTH, 2),
    }
    monthly["total"] = round(sum(v for v in monthly.values() if v is not None), 2)
    used = {**per_host.prices_used, "s3_gb_month": prices.s3_gb_month, "s3_put_1000": prices.s3_put_1000,
            "nlb_hour": prices.nlb_hour, "nlcu_hour": prices.nlcu_hour}
    notes = list(per_host.notes) + [f"the rate is assumed spread evenly over {azs} AZ(s); with cross-zone off, size for the busiest AZ's rate"]
    return FleetEstimate(rate_mbps=rate_mbps, azs=azs, hosts_per_az=per_az, hosts=hosts, host_max_mbps=round(top, 1) if top else None,
                         per_host=per_host, s3_gib=s3_gib, s3_puts_month=puts, nlb_gb_hour=nlb_gb_hour, monthly_usd=monthly,
                         prices_used=used, problems=tuple(problems), notes=tuple(notes))


def fleet_estimate_for(capture, rate: float, retention: float, tag_instances: int | None = None, **kw) -> FleetEstimate:
    c, f = capture, capture.fleet
    return fleet_estimate(rate, retention, azs=len(f.subnet_ids), min_per_az=f.min_per_az, desired_per_az=f.desired_per_az,
                          max_per_az=f.max_per_az, archive_days=c.archive_retention_days or retention, rotate_seconds=c.host.rotate_seconds,
                          vnis=len(c.vnis), sources=len(c.sources) + (tag_instances or 0), volume_type=c.storage.type,
                          volume_gib=c.storage.size_gib, gp3_mibps=c.storage.throughput_mibps, instance_type=c.instance_type,
                          min_free_percent=c.host.min_free_percent, **kw)
