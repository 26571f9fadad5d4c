"""The capture-path benchmark runs (at a tiny size): a benchmark that no longer starts is caught
here, not the next time someone needs its numbers. Its numbers are not judged here."""

from __future__ import annotations

import json
import subprocess
import sys

from bootlab import needs_lab
from helpers import ROOT

pytestmark = needs_lab


def test_capture_path_benchmark_runs_every_variant(tmp_path):
    out = tmp_path / "capture_path.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench/capture_path.py"), "--rounds", "1", "--packets", "2000",
                        "--probes", "1", "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    result = json.loads(out.read_text())
    variants = {"unit", "unit -B64", "bare", "-U", "dumpcap"}
    assert set(result["median_cpu_us_per_packet"]) == variants and all(v > 0 for v in result["median_cpu_us_per_packet"].values())
    assert all(run["captured"] > 0 for runs in result["runs"].values() for run in runs)
    assert set(result["freshness_seconds"]) == variants
