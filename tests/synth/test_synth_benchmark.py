"""The synth benchmark runs (at a tiny size): it cannot rot unseen. Its numbers are not judged here."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import ROOT


def test_synth_scale_benchmark_runs(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench/synth_scale.py"), "--repeat", "1", "--sources", "1,12",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = json.loads((tmp_path / "results.json").read_text())
    assert {row["sources"] for row in rows if "sources" in row} == {1, 12}
    assert [row["paired_ratio"] > 0 for row in rows if "paired_ratio" in row] == [True, True]
