"""Benchmark: a large inventory read, checked and synthesized: an 8,000-source fleet (about 824 KB).

Run: .venv/bin/python bench/inventory_scale.py [--sources 8000] [--repeat 3] [--baseline DIR]

Each command runs in a fresh process, as a user runs it, in a fresh directory per round:
`mirrorcap validate` (no lock yet), `mirrorcap sessions --write` (every source numbered),
then `make synth` (sessions, render, cdktn synth with the review HCL; the lock written).
--baseline DIR: another checkout of mirrorcap with its own `make setup` (e.g. main, from
`git worktree add DIR main`): its commands run in the same rounds, interleaved with this
checkout's, so both see the same machine; the report gives each median and their ratio.
The parse alone is timed in this process too: hclfile.parse_hcl (what the commands use)
against parse_general (python-hcl2 whatever the text).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "inventory"


def fleet_inventory(n_sources: int) -> str:
    """One fleet capture (an NLB target takes any number of sources) with n explicit sources, each
    with a description: 8,000 of them are about 824 KB, under the 1 MiB input limit."""
    sources = "".join(f'  source {{\n    eni_id      = "eni-{i:017x}"\n    description = "service-{i % 97:02d} replica {i:05d}"\n  }}\n'
                      for i in range(n_sources))
    return f'''# {n_sources:,} sources behind one fleet (bench/inventory_scale.py)
capture "fleet" {{
  region        = "eu-west-1"
  vpc_id        = "vpc-0123456789abcdef0"
  instance_type = "c6in.large"
  ami           = "ami-0123456789abcdef0"
  vni           = 4242
  fleet {{
    subnet_ids = ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0bbbbbbbbbbbbbbb2", "subnet-0ccccccccccccccc3"]
  }}
  archive {{}}
  network {{
    mirror_source_cidrs = ["10.0.0.0/16"]
  }}
{sources}  backend "local" {{
    path = "fleet.tfstate"
  }}
}}
'''


def timed(args: list[str], cwd: Path, env: dict) -> float:
    t = time.perf_counter()
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)} in {cwd}: exit {r.returncode}\n{r.stderr[-2000:]}")
    return took


def commands(tree: Path, work: Path) -> dict[str, float]:
    """validate, sessions --write and make synth of work/capture.hcl with `tree`'s venv and Makefile."""
    bin_dir = tree / ".venv" / "bin"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CHECKPOINT_DISABLE": "1"}
    for name in ("MIRRORCAP_INVENTORY", "MIRRORCAP_REVIEW_HCL"):
        env.pop(name, None)
    mirrorcap = str(bin_dir / "mirrorcap")
    return {
        "validate": timed([mirrorcap, "validate"], work, env),
        "sessions --write": timed([mirrorcap, "sessions", "--write"], work, env),
        "make synth": timed(["make", "--no-print-directory", "-C", str(tree), "synth", f"INVENTORY={work / 'capture.hcl'}",
                             f"RENDERED={work / 'rendered'}", f"OUT={work / 'cdktf.out'}"], work, env),
    }


def parse_alone(text: str, repeat: int) -> dict[str, float]:
    sys.path.insert(0, str(ROOT / "modules"))
    from mirrorcap.inventory.hclfile import parse_general, parse_hcl
    runs: dict[str, list[float]] = {"parse_hcl": [], "parse_general": []}
    for _ in range(repeat):
        for name, fn in (("parse_hcl", parse_hcl), ("parse_general", parse_general)):
            t = time.perf_counter()
            fn(text, "capture.hcl")
            runs[name].append(time.perf_counter() - t)
    assert json.dumps(parse_hcl(text, "x")) == json.dumps(parse_general(text, "x"))
    return {name: statistics.median(r) for name, r in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sources", type=int, default=8000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline", type=Path, help="another mirrorcap checkout (with make setup done) to run in the same rounds")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    text = fleet_inventory(args.sources)
    trees = {"this": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    shutil.rmtree(args.out, ignore_errors=True)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for r in range(args.repeat):
        for name, tree in trees.items():
            work = args.out / f"{name}-{r}"
            work.mkdir(parents=True)
            (work / "capture.hcl").write_text(text)
            runs[name].append(commands(tree, work))
            print(f"round {r} {name}: " + ", ".join(f"{k} {v:.2f} s" for k, v in runs[name][-1].items()), flush=True)
    print(f"\n{args.sources:,} sources, {len(text.encode()):,} bytes; medians of {args.repeat} rounds (seconds):")
    result = {"sources": args.sources, "bytes": len(text.encode()), "rounds": args.repeat, "medians_s": {}}
    for what in runs["this"][0]:
        medians = {name: statistics.median(run[what] for run in got) for name, got in runs.items()}
        result["medians_s"][what] = {k: round(v, 2) for k, v in medians.items()}
        line = f"  {what:<17} " + "  ".join(f"{name} {m:6.2f}" for name, m in medians.items())
        if "baseline" in medians:
            # Paired by round: a shared machine's load drifts over minutes, both checkouts of a round saw the same.
            paired = statistics.median(b[what] / t[what] for t, b in zip(runs["this"], runs["baseline"]))
            result["medians_s"][what]["paired_ratio"] = round(paired, 2)
            line += f"  (baseline / this, median of the rounds' ratios: {paired:.1f}x)"
        print(line)
    alone = parse_alone(text, args.repeat)
    result["parse_alone_s"] = {k: round(v, 3) for k, v in alone.items()}
    print(f"  parse alone, in process: parse_hcl {alone['parse_hcl']:.3f}, python-hcl2 (parse_general) {alone['parse_general']:.2f}")
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
