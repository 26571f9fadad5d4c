"""bench/fleet_scale.py runs: a tiny smoke run (3 sources, one round, every edit and shape) so the
benchmark cannot rot between the times someone runs it at 1,000 sources. It checks what the
benchmark's numbers rest on, not the numbers (speed targets live in the benchmark itself): every
shape plans the same resources for each edit, the source edits skip cdktn and write what cdktn's own
synth writes, and the tables and the paired ratios are printed."""

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


def test_the_fleet_benchmark_runs_every_edit_and_shape_on_the_same_resources(tmp_path):
    out = tmp_path / "fleet_scale.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "fleet_scale.py"), "--sources", "3", "--repeat", "1", "--out", str(out)],
                       env=env(), capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    # The fleet's 25 resources, its alarms' 8 (the hosts' metrics policy, the topic, its key and alias, 4 alarms),
    # the archive's Athena 10 (Glue database and table, workgroup, result bucket and its 6 settings and policy)
    # and one session per source, in every shape (the hand-written module has the same resources); a VNI of
    # its own adds an alarm pair.
    expected = {"add": 25 + 8 + 10 + 3, "remove": 25 + 8 + 10 + 1, "vni": 25 + 8 + 10 + 2 + 2}
    for edit, creates in expected.items():
        got = {shape: row[edit][shape]["creates"] for shape in ("mirrorcap", "hand-var", "hand-local")}
        assert set(got.values()) == {creates}, (edit, got)
        # the bench stops unless make synth skipped cdktn; the first round compares with cdktn's own synth
        assert row[edit]["same_as_cdktn_synth"] is True
        assert row[edit]["mirrorcap"]["edit_to_plan_s"] == pytest.approx(row[edit]["synth_s"] + row[edit]["mirrorcap"]["plan_s"], abs=0.02)
        assert f"paired ratio ({edit}), mirrorcap edit -> planned / hand-var plan: median" in r.stdout
    assert row["synth_unchanged_s"] > 0 and row["synth_structural_s"] > 0
    assert "| mirrorcap   |" in r.stdout and "| hand-local  |" in r.stdout
