"""mirrorcap-health pieces that need no root: Python 3.9 syntax, systemd unit states, disk floor.

The data-path checks (tcpdump, pcaps, drops, unmatched VNIs) run for real in
test_host_datapath.py. systemd cannot run as PID 1 here, so the unit-state
check talks to a stand-in `systemctl is-active` that prints given states.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from hostenv import HEALTH, write_env


def test_health_is_python_39_syntax():
    # Amazon Linux 2023's system Python is 3.9; newer syntax would fail only on the host.
    ast.parse(HEALTH.read_text(), feature_version=(3, 9))
    assert HEALTH.read_text().startswith("#!/usr/bin/python3\n")


def run_health(tmp_path: Path, systemctl_states: list[str] | None = None, **env_values) -> tuple[int, dict]:
    pcaps = tmp_path / "pcaps"
    pcaps.mkdir(exist_ok=True)
    old = pcaps / "vni7_2026-01-01T00-00-00Z.pcap"
    old.write_bytes(b"\xd4\xc3\xb2\xa1" + b"\0" * 40)
    os.utime(old, (time.time() - 86400, time.time() - 86400))
    env_file = write_env(tmp_path / "mirrorcap.env", vnis='"7 8"', capture_dir=pcaps, **env_values)
    env = {"PATH": "/usr/bin:/bin", "MIRRORCAP_ENV_FILE": str(env_file), "MIRRORCAP_RUN_DIR": str(tmp_path / "run"),
           "MIRRORCAP_SKIP_MOUNT_CHECK": "1"}
    if systemctl_states is not None:
        fake = tmp_path / "systemctl"
        fake.write_text("#!/bin/sh\n[ \"$1\" = is-active ] || exit 64\nprintf '%s\\n' " + " ".join(systemctl_states) + "\nexit 3\n")
        fake.chmod(0o755)
        env["MIRRORCAP_SYSTEMCTL"] = str(fake)
    r = subprocess.run([sys.executable, str(HEALTH), "--json", "--sample-seconds", "0"], env=env, capture_output=True, text=True)
    return r.returncode, json.loads(r.stdout)


def check(report: dict, name: str) -> dict:
    return next(c for c in report["checks"] if c["name"] == name)


def test_inactive_units_are_named(tmp_path):
    code, report = run_health(tmp_path, ["active", "active", "active", "failed", "inactive"])
    services = check(report, "services")
    assert code == 1 and services["status"] == "fail"
    assert services["units"] == {"mirrorcap-storage.service": "active", "mirrorcap-decap.service": "active",
                                 "mirrorcap-capture@7.service": "active", "mirrorcap-capture@8.service": "failed",
                                 "mirrorcap-retention.timer": "inactive"}
    assert "mirrorcap-capture@8.service (failed)" in services["detail"] and "mirrorcap-retention.timer (inactive)" in services["detail"]


def test_all_units_active(tmp_path):
    _, report = run_health(tmp_path, ["active"] * 5)
    assert check(report, "services")["status"] == "ok"


def test_missing_pcaps_and_disk_floor_fail(tmp_path):
    code, report = run_health(tmp_path, None, min_free_gib=10**6)
    assert code == 1
    assert check(report, "disk")["status"] == "fail" and "under the floor" in check(report, "disk")["detail"]
    newest = [c for c in report["checks"] if c["name"] == "newest-pcap"]
    assert [c["status"] for c in newest] == ["fail", "fail"]  # VNI 7's file is a day old, VNI 8 has none
    assert "no pcap" in newest[1]["detail"] and newest[0]["size_bytes"] == 44


def test_unreadable_config_exits_2(tmp_path):
    r = subprocess.run([sys.executable, str(HEALTH)], env={"MIRRORCAP_ENV_FILE": str(tmp_path / "missing.env")},
                       capture_output=True, text=True)
    assert r.returncode == 2 and "missing.env" in r.stderr
