"""Observed account + settings -> the session changes to make. A pure function.

Shared by the re-mirroring Lambda and `mirrorcap check --fix`, so both follow
one set of rules:

- Only sessions carrying this capture's runtime-owner tag are ever deleted.
- A matching running instance whose primary ENI has no session on the target
  gets one, numbered by `mirrorcap.sessions.assign` (lowest number free on that
  ENI) -- unless the ENI already has 3 sessions or the target is full: then a
  note says which limit stopped it.
- After a campaign's end, every owned session goes and nothing is created.

Races: two writers may both see "no session" and both create one. Nothing
here locks; instead, running the plan again converges: for an ENI mirrored
twice the earliest-created owned session stays (or the Terraform-managed one,
if any), and a target over its source limit sheds its newest owned sessions.
Every writer computes the same answer from the same listing, so racing
deletions agree on which session goes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Optional

from .. import aws_limits as L
from ..numbering.sessions import NumberingError, Request, assign
from ..contract import SOURCE_KEY, source_vni
from .model import Observed, Selector, Session, Settings

MIRRORABLE_STATES = ("pending", "running")


@dataclass(frozen=True)
class Create:
    instance_id: str
    eni_id: str
    number: int
    vni: int
    packet_length: Optional[int]


@dataclass(frozen=True)
class Delete:
    session_id: str
    eni_id: str
    reason: str


@dataclass(frozen=True)
class Changes:
    creates: tuple[Create, ...] = ()
    deletes: tuple[Delete, ...] = ()
    notes: tuple[str, ...] = ()  # why something was not done (limits), for the log

    def __bool__(self) -> bool:
        return bool(self.creates or self.deletes)


def selector_for(settings: Settings, tags: dict[str, str]) -> Optional[Selector]:
    return next((s for s in settings.selectors if s.matches(tags)), None)


def plan(settings: Settings, observed: Observed, now: datetime) -> Changes:
    on_target = sorted((s for s in observed.sessions if s.target_id == settings.target_id), key=lambda s: s.order)
    owned = [s for s in on_target if s.owned_by(settings.capture)]
    deletes: dict[str, Delete] = {}
    notes: list[str] = []

    def delete(s: Session, reason: str) -> None:
        deletes.setdefault(s.id, Delete(s.id, s.eni_id, reason))

    if settings.ends_at is not None and now >= settings.ends_at:
        for s in owned:
            delete(s, f"campaign ended at {settings.ends_at.isoformat()}")
        return Changes(deletes=tuple(deletes.values()))

    matching = {i.id: i for i in observed.instances if selector_for(settings, i.tags)}
    for s in owned:
        source = s.tags.get(SOURCE_KEY, "")
        if s.eni_id not in observed.live_enis:
            delete(s, "source ENI no longer exists")
        elif source not in matching:
            delete(s, f"{source or 'source'} no longer matches the tag selectors")
        else:
            sel = selector_for(settings, matching[source].tags)
            want_vni = source_vni(sel.vni, settings.vni)
            if s.filter_id != settings.filter_id or s.vni != want_vni:
                delete(s, "filter or VNI changed in the inventory")

    # One session per ENI on this target: Terraform's if present, else the first created.
    by_eni: dict[str, list[Session]] = defaultdict(list)
    for s in on_target:
        if s.id not in deletes:
            by_eni[s.eni_id].append(s)
    for eni, group in by_eni.items():
        managed = [s for s in group if not s.owned_by(settings.capture)]
        keep = managed[0] if managed else group[0]
        for s in group:
            if s is not keep and s.owned_by(settings.capture):
                delete(s, "duplicate session for this ENI (a concurrent writer created it too)")

    # Target limit: unowned sessions are not ours to drop; shed the newest owned ones.
    kept = [s for s in on_target if s.id not in deletes]
    enis_on_target = list(dict.fromkeys(s.eni_id for s in kept))
    excess = len(enis_on_target) - settings.max_sources
    for s in reversed(kept):
        if excess <= 0:
            break
        if s.owned_by(settings.capture):
            delete(s, f"target over its limit of {settings.max_sources} sources (a concurrent writer took the slot)")
            excess -= 1

    mirrored = {s.eni_id for s in on_target if s.id not in deletes}
    per_eni: dict[str, list[Session]] = defaultdict(list)
    for s in observed.sessions:
        if s.id not in deletes:
            per_eni[s.eni_id].append(s)
    creates = []
    for inst in sorted(matching.values(), key=lambda i: i.id):
        if inst.state not in MIRRORABLE_STATES or not inst.primary_eni or inst.primary_eni in mirrored:
            continue
        eni = inst.primary_eni
        if len(mirrored) >= settings.max_sources:
            notes.append(f"limit: target {settings.target_id} already has {len(mirrored)} sources "
                         f"(max {settings.max_sources}); {inst.id} ({eni}) is not mirrored")
            continue
        existing = per_eni[eni]
        requests = [Request(f"~{s.id}", eni, s.number) for s in existing] + [Request(settings.capture, eni)]
        try:
            number = assign(requests, {})[(settings.capture, eni)]
        except NumberingError:
            notes.append(f"limit: {eni} of {inst.id} already has {len(existing)} sessions "
                         f"(AWS allows {L.SESSIONS_PER_SOURCE_ENI} per source ENI); not mirrored")
            continue
        sel = selector_for(settings, inst.tags)
        creates.append(Create(inst.id, eni, number, source_vni(sel.vni, settings.vni), sel.packet_length))
        mirrored.add(eni)
        per_eni[eni].append(Session(f"~new-{inst.id}", eni, settings.target_id, settings.filter_id, number, settings.vni))
    return Changes(creates=tuple(creates), deletes=tuple(deletes.values()), notes=tuple(notes))
