"""bench/fleet_scale.py runs: a tiny smoke run (3 sources, one round, every shape but the slow inline
one) so the benchmark cannot rot between the times someone runs it at 1,000 sources. It checks what
the benchmark's numbers rest on, not the numbers (speed targets live in the benchmark itself):
every shape plans the same resources, and the table and the paired ratios are printed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import tf_emulator as T
from helpers import ROOT, env

TERRAFORM, TERRAFORM_VERSION = T.find_terraform()
MIRROR, NO_MIRROR = T.find_aws_mirror()

pytestmark = [
    pytest.mark.skipif(TERRAFORM is None, reason=f"the benchmark needs terraform: {TERRAFORM_VERSION}"),
    pytest.mark.skipif(MIRROR is None, reason=f"the benchmark needs the hashicorp/aws provider: {NO_MIRROR}"),
]


def test_the_fleet_benchmark_runs_every_shape_on_the_same_resources(tmp_path):
    out = tmp_path / "fleet_scale.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "fleet_scale.py"), "--sources", "3", "--repeat", "1",
                        "--shapes", "mirrorcap,shards16,hand-var,hand-local", "--out", str(out)],
                       env=env(), capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    creates = {shape: row[shape]["creates"] for shape in ("mirrorcap", "shards16", "hand-var", "hand-local")}
    # The fleet's 25 resources, its alarms' 8 (the hosts' metrics policy, the topic, its key and alias, 4 alarms),
    # the archive's Athena 10 (Glue database and table, workgroup, result bucket and its 6 settings and policy)
    # and one session per source, in every shape (the hand-written module has the same resources)
    assert set(creates.values()) == {25 + 8 + 10 + 3}, creates
    assert row["synth_s"] > 0 and all(row[s]["plan_s"] > 0 and row[s]["init_s"] > 0 for s in creates)
    assert row["mirrorcap"]["edit_to_plan_s"] == pytest.approx(row["synth_s"] + row["mirrorcap"]["plan_s"], abs=0.02)
    assert "paired ratio, mirrorcap edit -> planned / hand-var plan: median" in r.stdout
    assert "| mirrorcap   |" in r.stdout and "| hand-local  |" in r.stdout
