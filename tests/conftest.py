"""Fixtures for every kind of test (helpers to import live in helpers.py), and how the suite is
spread over processes when `make test` runs it side by side (pytest-xdist, --dist loadgroup).

The boot lab's tests mostly wait (boots, rotations, outages of minutes) while the other kinds
compute, so they run together. What may move between processes is decided here, from what each
test shares: the tests of a file that use the same module- or session-scoped fixtures of ours (a
booted host, a synthesized stack) stay on one process, so it is made once there; every other test is a
unit of its own. Units that wait longest are handed out first, so none starts last.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

# Handed out first, in this order: the units that wait longest (minutes of outage, retries, many boots).
LONG_FIRST = (
    "tests/host/test_host_faults.py::test_imds_outage",  # with late_volume: one boot waiting > 320 s
    "tests/host/test_archive_boot.py::test_closed_pcaps",  # with the outage: a retry after the back-off
    "tests/host/test_health_alarms.py",  # a stopped capture until the alarm fires
    "tests/host/test_host_faults.py::test_vni_change",
    "tests/host/test_host_faults.py::test_kill_storm",
    "tests/host/test_archive_boot.py::test_two_fleet_hosts",
    "tests/host/test_host_boot.py",
    "tests/host/",
)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def _shared_fixtures(item: pytest.Item) -> list[str]:
    """The module- or session-scoped fixtures of this suite the test uses (directly or through others)."""
    info = getattr(item, "_fixtureinfo", None)
    return sorted({d.argname for defs in (info.name2fixturedefs.values() if info else ()) for d in defs
                   if d.scope in ("module", "session", "package")
                   and Path(d.func.__code__.co_filename).resolve().is_relative_to(TESTS)})


def _rank(nodeid: str) -> int:
    return next((i for i, prefix in enumerate(LONG_FIRST) if nodeid.startswith(prefix)), len(LONG_FIRST))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("dist", "no") != "loadgroup":
        return
    for item in items:
        if shared := _shared_fixtures(item):  # one unit per file and set of shared fixtures
            item.add_marker(pytest.mark.xdist_group(f"{item.nodeid.split('::')[0]}[{','.join(shared)}]"))
    items.sort(key=lambda item: _rank(item.nodeid))  # stable: a file's own order is kept
