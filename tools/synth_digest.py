"""Digest of what `make synth` writes for one fixture inventory (JSON, review HCL, manifest, lock)."""
import hashlib, json, os, re, shutil, subprocess, sys, tempfile
from pathlib import Path
ROOT = Path(sys.argv[1]); fixture = Path(sys.argv[2]); lock = sys.argv[3] if len(sys.argv) > 3 else None
bin_ = ROOT / ".venv/bin"
env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "CHECKPOINT_DISABLE": "1", "MIRRORCAP_INVENTORY": "capture.hcl", "MIRRORCAP_REVIEW_HCL": "1"}
ASSET = re.compile(rb"assets/remirror_code/[0-9A-F]{32}/")
with tempfile.TemporaryDirectory() as t:
    t = Path(t); shutil.copy(fixture, t / "capture.hcl")
    if lock: shutil.copy(lock, t / "capture.lock.json")
    subprocess.run([bin_ / "mirrorcap", "sessions", "--write"], cwd=t, env=env, check=True, capture_output=True)
    r = subprocess.run([bin_ / "python", ROOT / "main.py"], cwd=t, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = {}
    for p in sorted(t.rglob("*")):
        if p.is_file() and p.suffix in (".json", ".tf"):
            out[str(p.relative_to(t))] = hashlib.sha256(ASSET.sub(b"assets/remirror_code/HASH/", p.read_bytes())).hexdigest()
    print(json.dumps(out, indent=1, sort_keys=True))
