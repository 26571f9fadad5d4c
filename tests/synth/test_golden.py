"""`make synth` output and the lock are byte-identical to the golden digests, for the example and
every fixture inventory (tests/fixtures/golden/, taken with tools/synth_digest.py). A change of
output is made on purpose: the digests are taken again in the same commit, which says what changed."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from helpers import EXAMPLE, FIXTURES, ROOT

CASES = {"example": [EXAMPLE, ROOT / "capture.lock.json"], "edge": [FIXTURES / "edge.hcl"],
         "many": [FIXTURES / "many.hcl"], "odd": [FIXTURES / "odd.hcl"]}


def run_digest(args) -> dict:
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "synth_digest.py"), *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_synth_output_and_lock_are_byte_identical_to_the_golden_digests():
    with ThreadPoolExecutor(max_workers=len(CASES)) as pool:
        got = dict(zip(CASES, pool.map(run_digest, CASES.values())))
    for name, digest in got.items():
        golden = json.loads((FIXTURES / "golden" / f"{name}.json").read_text())
        assert digest == golden, f"{name}: {sorted(k for k in golden.keys() | digest.keys() if golden.get(k) != digest.get(k))}"
