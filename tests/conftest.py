"""Fixtures for every kind of test (helpers to import live in helpers.py), and the order in which
`make test` hands the test files out when it runs them side by side (pytest-xdist, --dist loadfile).

Each file runs whole on one process, so what its tests share (a booted host, a synthesized stack)
is made once there. The boot lab's files mostly wait (boots, rotations, outages of minutes) while
the other kinds compute; the files that wait longest are handed out first, so none starts last.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# Handed out first, in this order: the files that wait longest (minutes of outage, retries, many boots).
LONG_FIRST = (
    "tests/synth/test_ci_roles.py",  # plan, apply, refresh, change and destroy of two stacks in moto (8-10 minutes)
    "tests/host/test_host_waits.py",  # one boot waiting more than 320 s
    "tests/host/test_archive_boot.py",  # an outage, then a retry after the uploader's back-off; a fleet of two
    "tests/host/test_host_faults.py",
    "tests/host/test_volume_faults.py",  # six boots, each a volume fault
    "tests/host/test_health_alarms.py",  # a stopped capture until the alarm fires
    "tests/synth/test_removed_capture.py",  # two captures deployed into moto, one destroyed (about 6 minutes)
    "tests/synth/test_reviewed_apply.py",
    "tests/synth/test_terraform.py",
    "tests/host/",
    "tests/synth/",
)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def _rank(nodeid: str) -> int:
    return next((i for i, prefix in enumerate(LONG_FIRST) if nodeid.startswith(prefix)), len(LONG_FIRST))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: _rank(item.nodeid))  # stable: each file's own order is kept
