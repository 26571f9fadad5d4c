"""The monthly cost change of a plan, priced with mirrorcap's own cost model
(capacity.py: its prices and its formulas, through estimate() and fleet_estimate()).

Each changed resource is priced as it is before and as it will be after; the
change is the difference. What the model prices: instances (a fleet's at its
desired capacity), EBS volumes (the pcap volume, root volumes, a fleet's launch
template volumes per host), mirror sessions and a fleet's NLB (at its minimum
of one NLCU). What grows with traffic or is outside the model (the archive
bucket's storage, KMS keys) is named, not guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ..capacity import Prices, estimate, fleet_estimate
from .markdown import md_code, md_escape


class PlanValueError(ValueError):
    """A value in the plan the cost model reads is not one Terraform writes for its type
    (a string where a block list is, a size no volume has): the command names the plan and this place."""

    def __init__(self, address: str, attribute: str, what: str):
        self.address, self.attribute, self.what = address, attribute, what
        super().__init__(f"{address}.{attribute}: {what}")


MAX_GIB = 1024 * 1024  # no EBS volume is larger than 64 TiB; a size beyond this is not a plan's
MAX_COUNT = 100_000  # desired capacity, MiB/s: far beyond any Auto Scaling group or volume

# Types the model does not price, and why (shown under the cost line when a plan touches one).
UNPRICED = {
    "aws_s3_bucket": "the archive's storage and uploads grow with the traffic (`mirrorcap capacity --rate` sizes them)",
    "aws_kms_key": "customer-managed keys are billed monthly outside mirrorcap's cost model",
}


@dataclass(frozen=True)
class Item:
    address: str
    what: str  # "t3.small", "300 GiB st1", "1 session"...
    before: float  # USD a month as it is (0: does not exist yet)
    after: float  # USD a month once applied (0: destroyed)

    @property
    def delta(self) -> float:
        return round(self.after - self.before, 2)


@dataclass(frozen=True)
class CostChange:
    items: tuple[Item, ...]
    unpriced: tuple[tuple[str, str], ...]  # (address from the plan, why: mirrorcap's own Markdown)
    region: str

    @property
    def delta(self) -> float:
        return round(sum(i.delta for i in self.items), 2)


def _usd(amount: float) -> str:
    sign = "+" if amount > 0 else "−" if amount < 0 else "±"
    return f"{sign}${abs(amount):,.2f}"


def _blocks(value: Any, where: tuple[str, str]) -> list[Mapping]:
    """A nested block list as Terraform's JSON gives it (a list of objects; null: none)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(b, Mapping) for b in value):
        raise PlanValueError(*where, "expected a list of blocks (objects)")
    return value


def _first(value: Any, where: tuple[str, str]) -> Mapping:
    """A nested block as Terraform's JSON gives it (a list of one object), or {}."""
    blocks = _blocks(value, where)
    return blocks[0] if blocks else {}


def _number(value: Any, where: tuple[str, str], top: int) -> Optional[int]:
    """A whole number from the plan (a size, a count): None when absent or unknown, refused when no plan has it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= top:
        raise PlanValueError(*where, f"{str(value)[:40]} is not a number from 0 to {top}")
    return int(value)


def _monthly(prices: Prices, *, instance_type: Optional[str] = None, volume: Optional[tuple[str, int, Optional[int]]] = None,
             sessions: int = 0) -> Optional[float]:
    """One priced thing, by the model's own arithmetic: estimate()'s monthly_usd.
    The rate and retention it needs do not enter the monthly figures (1 and 1 here)."""
    vtype, vgib, throughput = volume if volume else ("gp3", 0, None)
    if vtype not in prices.volume_gib_month and "*" not in prices.volume_gib_month:
        return None
    if vtype not in ("st1", "sc1", "gp3"):
        return None  # the model's throughput table knows these three
    e = estimate(1.0, 1.0, volume_type=vtype, volume_gib=int(vgib or 0), gp3_mibps=throughput,
                 instance_type=instance_type or "t3.small", sources=sessions, prices=prices)
    m = e.monthly_usd
    if instance_type is not None:
        return m["instance"]
    if volume is not None:
        return m["volume"]
    return m["mirror_sessions"]


def _volume(v: Mapping, size_key: str, type_key: str, address: str) -> Optional[tuple[str, int, Optional[int]]]:
    size = _number(v.get(size_key), (address, size_key), MAX_GIB)
    vtype = v.get(type_key)
    tp = _number(v.get("throughput"), (address, "throughput"), MAX_COUNT)
    if size is None or not isinstance(vtype, str):
        return None
    return vtype, size, tp or None


def _template_host(values: Mapping, prices: Prices, address: str = "aws_launch_template") -> tuple[Optional[float], str]:
    """One fleet host from its launch template: instance + every EBS volume it launches with."""
    itype = values.get("instance_type")
    total = _monthly(prices, instance_type=itype) if isinstance(itype, str) else None
    if total is None:
        return None, f"{itype}"
    vols = []
    for bdm in _blocks(values.get("block_device_mappings"), (address, "block_device_mappings")):
        vol = _volume(_first(bdm.get("ebs"), (address, "block_device_mappings.ebs")), "volume_size", "volume_type", address)
        price = _monthly(prices, volume=vol) if vol else None
        if price is None:
            return None, f"{itype}"
        total += price
        vols.append(f"{vol[1]} GiB {vol[0]}")
    return round(total, 2), f"{itype}" + (f" + {' + '.join(vols)}" if vols else "")


def _price(rtype: str, values: Mapping, prices: Prices, template: Mapping, address: str = "?") -> Optional[tuple[float, str]]:
    """(USD a month, what) of one resource's values; None when the model does not price it."""
    if not values:
        return 0.0, ""
    if rtype == "aws_instance":
        itype = values.get("instance_type")
        inst = _monthly(prices, instance_type=itype) if isinstance(itype, str) else None
        if inst is None:
            return None
        root = _volume(_first(values.get("root_block_device"), (address, "root_block_device")), "volume_size", "volume_type", address)
        root_price = (_monthly(prices, volume=root) or 0.0) if root else 0.0
        return round(inst + root_price, 2), f"{itype}" + (f" + {root[1]} GiB {root[0]} root" if root else "")
    if rtype == "aws_ebs_volume":
        vol = _volume(values, "size", "type", address)
        price = _monthly(prices, volume=vol) if vol else None
        return (price, f"{vol[1]} GiB {vol[0]}") if price is not None else None
    if rtype == "aws_ec2_traffic_mirror_session":
        return _monthly(prices, sessions=1), "1 mirrored source"
    if rtype == "aws_autoscaling_group":
        desired = _number(values.get("desired_capacity"), (address, "desired_capacity"), MAX_COUNT)
        host, what = _template_host(template, prices) if template else (None, "")
        if desired is None or host is None:
            return None
        return round(desired * host, 2), f"{desired} × ({what})"
    if rtype == "aws_lb" and values.get("load_balancer_type") == "network":
        # The model's NLB figure at its floor (one NLCU): rate-independent like the rest here.
        f = fleet_estimate(0.001, 1.0, azs=1, archive_days=1.0, prices=prices)
        return f.monthly_usd["nlb"], "NLB at 1 NLCU (traffic adds more)"
    return None


def plan_cost(plan: Mapping[str, Any], prices: Prices = Prices()) -> CostChange:
    """The monthly cost change of a `terraform show -json` plan."""
    changes = [rc for rc in plan.get("resource_changes") or [] if rc.get("mode", "managed") == "managed"]
    # A fleet's hosts are priced from its launch template, changed or not (one per stack).
    templates = [rc for rc in changes if rc.get("type") == "aws_launch_template"]
    items: list[Item] = []
    unpriced: list[str] = []
    for rc in changes:
        ch = rc.get("change") or {}
        actions = tuple(ch.get("actions") or ())
        if actions in (("no-op",), ("read",)) or not actions:
            continue
        rtype, address = rc.get("type", "?"), rc.get("address", "?")
        before = ch.get("before") if "delete" in actions or "update" in actions else None
        after = ch.get("after") if "create" in actions or "update" in actions else None
        tch = (templates[0].get("change") or {}) if templates else {}
        b = _price(rtype, before or {}, prices, tch.get("before") or tch.get("after") or {}, address)
        a = _price(rtype, after or {}, prices, tch.get("after") or tch.get("before") or {}, address)
        if b is None or a is None:
            if rtype in UNPRICED:
                unpriced.append((address, UNPRICED[rtype]))
            continue
        if a[0] == b[0] and "update" in actions:
            continue  # an in-place change that costs the same (tags, descriptions...)
        what = a[1] if after else b[1]
        if before and after and a[1] != b[1]:
            what = f"{b[1]} → {a[1]}"
        items.append(Item(address, what, b[0] or 0.0, a[0] or 0.0))
    return CostChange(tuple(items), tuple(unpriced), prices.region)


def cost_lines(cost: CostChange, limit: int = 20) -> list[str]:
    """Markdown for the pull-request comment: the total, each priced change, what is not priced."""
    if not cost.items and not cost.unpriced:
        return []
    head = (f"**Monthly cost: {_usd(cost.delta)}** (mirrorcap's cost model, {cost.region} list prices, "
            "on-demand, data transfer excluded)")
    rows = [f"- {md_code(i.address)} ({md_escape(i.what)}): {_usd(i.delta)}" for i in cost.items if i.delta][:limit]
    if len([i for i in cost.items if i.delta]) > limit:
        rows.append(f"- … and {len([i for i in cost.items if i.delta]) - limit} more")
    rows += [f"- not priced: {md_code(address)}: {why}" for address, why in cost.unpriced[:limit]]
    return [head, *rows]

