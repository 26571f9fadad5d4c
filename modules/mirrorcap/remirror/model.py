"""What the reconciler sees of the account and how it is configured. Plain data."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional

from ..contract import CREATED_KEY, RUNTIME_OWNER_KEY



@dataclass(frozen=True)
class Selector:
    """Instances carrying all these tags are mirrored (their primary ENI)."""

    tags: tuple[tuple[str, str], ...]
    packet_length: Optional[int] = None
    vni: Optional[int] = None

    def matches(self, instance_tags: dict[str, str]) -> bool:
        return all(instance_tags.get(k) == v for k, v in self.tags)


@dataclass(frozen=True)
class Settings:
    capture: str
    target_id: str
    filter_id: str
    vni: int
    max_sources: int
    vpc_id: str
    selectors: tuple[Selector, ...] = ()
    ends_at: Optional[datetime] = None  # campaign end, timezone-aware

    def to_env(self) -> dict[str, str]:
        """The Lambda's environment (Terraform fills in target and filter IDs)."""
        return {
            "MIRRORCAP_CAPTURE": self.capture, "MIRRORCAP_TARGET_ID": self.target_id, "MIRRORCAP_FILTER_ID": self.filter_id,
            "MIRRORCAP_VNI": str(self.vni), "MIRRORCAP_MAX_SOURCES": str(self.max_sources), "MIRRORCAP_VPC_ID": self.vpc_id,
            "MIRRORCAP_SELECTORS": json.dumps([{"tags": dict(s.tags), "packet_length": s.packet_length, "vni": s.vni}
                                               for s in self.selectors], sort_keys=True, separators=(",", ":")),
            "MIRRORCAP_ENDS_AT": self.ends_at.isoformat() if self.ends_at else "",
        }

    @classmethod
    def from_env(cls, env: dict[str, str]) -> "Settings":
        ends = env.get("MIRRORCAP_ENDS_AT", "")
        return cls(
            capture=env["MIRRORCAP_CAPTURE"], target_id=env["MIRRORCAP_TARGET_ID"], filter_id=env["MIRRORCAP_FILTER_ID"],
            vni=int(env["MIRRORCAP_VNI"]), max_sources=int(env["MIRRORCAP_MAX_SOURCES"]), vpc_id=env["MIRRORCAP_VPC_ID"],
            selectors=tuple(Selector(tags=tuple(sorted(s["tags"].items())), packet_length=s.get("packet_length"), vni=s.get("vni"))
                            for s in json.loads(env.get("MIRRORCAP_SELECTORS") or "[]")),
            ends_at=datetime.fromisoformat(ends) if ends else None,
        )


@dataclass(frozen=True)
class Instance:
    id: str
    state: str  # pending | running | stopping | stopped | shutting-down | terminated
    primary_eni: Optional[str]
    tags: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Session:
    id: str
    eni_id: str
    target_id: str
    filter_id: str
    number: int
    vni: int
    tags: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    def owned_by(self, capture: str) -> bool:
        return self.tags.get(RUNTIME_OWNER_KEY) == capture

    @property
    def order(self) -> tuple:
        # Who wins when two writers raced: earliest creation, then ID. Every
        # writer computes the same answer from the same listing.
        return (self.tags.get(CREATED_KEY, ""), self.id)


@dataclass(frozen=True)
class Observed:
    instances: tuple[Instance, ...]  # instances in the VPC matching any selector
    sessions: tuple[Session, ...]  # every session on the target, and every session of the candidates' ENIs
    live_enis: frozenset[str]  # which of the sessions' source ENIs still exist
