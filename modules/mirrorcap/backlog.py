"""How old the archive's oldest closed, unconfirmed pcap may get before the capture is unhealthy: one
rule, for the env file the render writes (mirrorcap-health checks it on the host) and for the stack's
archive-backlog alarm. Pure: the uploader's waits are the host library's own."""

from __future__ import annotations

from typing import TYPE_CHECKING

import mirrorcap_host

if TYPE_CHECKING:
    from .inventory.model import Capture

ARCHIVE_RUN_SECONDS = 60  # mirrorcap-archive.timer: OnUnitInactiveSec=1min


def archive_backoff_seconds() -> tuple[int, ...]:
    """The uploader's waits after 1, 2, 3, 4+ failed runs (the host's archive script uses these)."""
    return mirrorcap_host.ARCHIVE_BACKOFF_SECONDS


def archive_backlog_seconds(capture: Capture) -> int:
    """Three rotations, plus the uploader's longest back-off and a run."""
    return 3 * capture.host.rotate_seconds + max(archive_backoff_seconds()) + ARCHIVE_RUN_SECONDS
