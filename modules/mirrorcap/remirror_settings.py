"""An inventory capture as the re-mirroring reconciler's `Settings`: built at synth (the Lambda's
environment) and by `mirrorcap check --fix`; never in the Lambda's zip (it reads the inventory)."""

from __future__ import annotations

from .inventory.model import Capture
from .remirror.model import Selector, Settings


def settings_for(capture: Capture, *, target_id: str, filter_id: str) -> Settings:
    am = capture.auto_mirror
    return Settings(
        capture=capture.name, target_id=target_id, filter_id=filter_id, vni=capture.vni,
        max_sources=capture.max_sources_per_target, vpc_id=capture.vpc_id,
        selectors=tuple(Selector(tags=t.tags, packet_length=t.packet_length, vni=t.vni) for t in capture.tag_sources),
        ends_at=am.ends_at if am else None,
    )
