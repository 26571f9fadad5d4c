"""Digest of what `make synth` writes for one inventory: every JSON, .tf and .tfvars
file under cdktf.out (stacks and their variables' values, review HCL, manifest) and the lock, each as sha256.

The golden digests in tests/fixtures/golden/ pin what synth writes; tests/synth/test_golden.py
holds every commit to them (a change of output regenerates them on purpose).
The re-mirroring Lambda's asset directory is named by the zip's hash and the
zip is code, so that one path segment is masked: the code inside it is
tested on its own (tests/aws, tests/unit/test_remirror_plan.py).

usage: python tools/synth_digest.py INVENTORY [LOCK] > digest.json
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ASSET = re.compile(rb"assets/remirror_code/[0-9A-F]{32}/")
# synth's own record (synth/structure.py): it holds the digest of mirrorcap's code, which any commit changes.
RECORD = "mirrorcap-structure.json"


def digest(inventory: Path, lock: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "CHECKPOINT_DISABLE": "1",
           "MIRRORCAP_INVENTORY": "capture.hcl", "MIRRORCAP_REVIEW_HCL": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copy(inventory, work / "capture.hcl")
        if lock:
            shutil.copy(lock, work / "capture.lock.json")
        subprocess.run([str(BIN / "mirrorcap"), "sessions", "--write"], cwd=work, env=env, check=True, capture_output=True)
        r = subprocess.run([sys.executable, str(ROOT / "main.py")], cwd=work, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"synth of {inventory} failed:\n{r.stderr}")
        return {str(p.relative_to(work)): hashlib.sha256(ASSET.sub(b"assets/remirror_code/HASH/", p.read_bytes())).hexdigest()
                for p in sorted(work.rglob("*")) if p.is_file() and p.suffix in (".json", ".tf", ".tfvars") and p.name != RECORD}


if __name__ == "__main__":
    args = [Path(a) for a in sys.argv[1:]]
    print(json.dumps(digest(*args), indent=1, sort_keys=True))
