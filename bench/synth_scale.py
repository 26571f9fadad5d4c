"""Benchmark: synth wall time and peak memory for 1, 100 and 1,000 mirror sources.

Run: make bench  (or .venv/bin/python bench/synth_scale.py [--repeat N])
Each run is `python -O main.py` exactly as `cdktn synth` starts it (cdktf.json
"app"; -O drops jsii's runtime type checks, which the test suite keeps), JSON
output, no review HCL (as `cdktn deploy` runs it; --review-hcl adds the
formatted cdk.tf that `make synth` writes), in a fresh process; peak RSS is the largest single process
(Python or the jsii Node child). Two layouts, since an ENI target takes at most
10 sources (100 on the largest instance types): t3.small hosts of 10 sources,
and m5.24xlarge hosts of 100.
Targets: 1,000 sources < 8 s; 1,000-source run <= 1.5x the 1-source run.

--plain also runs synth.pipeline.synth_file (the same steps with no overlap of
the provider load) in the same rounds, paired with main.py (synth.overlap): the
overlap stays only while it earns its place.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
BIN = Path(sys.executable).parent


def inventory(n_sources: int, per_host: int) -> str:
    blocks = []
    for h in range(0, max(n_sources, 1), per_host):
        srcs = "\n".join(f'  source {{\n    eni_id = "eni-{i:017x}"\n  }}' for i in range(h, min(h + per_host, n_sources)))
        itype = "m5.24xlarge" if per_host > 10 else "t3.small"
        blocks.append(f'''capture "c{h // per_host:04d}" {{
  region = "eu-west-1"
  vpc_id = "vpc-0123456789abcdef0"
  subnet_id = "subnet-0123456789abcdef0"
  ami = "ami-0123456789abcdef0"
  instance_type = "{itype}"
  vni = 100
  network {{
    mirror_source_cidrs = ["10.0.0.0/16"]
  }}
{srcs}
  backend "local" {{
    path = "state-{h}.tfstate"
  }}
}}''')
    return "\n".join(blocks) + "\n"


PLAIN = "from mirrorcap.synth.pipeline import synth_file; import os; synth_file('capture.hcl', os.environ.get('MIRRORCAP_REVIEW_HCL') == '1')"


def measure(workdir: Path, review_hcl: bool = False, plain: bool = False) -> tuple[float, int]:
    """One synth in a fresh process: main.py (overlapped), or with plain=True the plain pipeline."""
    run = "[sys.executable,'-O','-c',sys.argv[2]]" if plain else "[sys.executable,'-O',sys.argv[1]]"
    probe = ("import resource,subprocess,sys,time;t=time.perf_counter();"
             f"r=subprocess.run({run});"
             "print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "MIRRORCAP_INVENTORY": "capture.hcl", "CHECKPOINT_DISABLE": "1"}
    env.pop("MIRRORCAP_REVIEW_HCL", None)
    if review_hcl:
        env["MIRRORCAP_REVIEW_HCL"] = "1"
    out = subprocess.run([sys.executable, "-c", probe, str(ROOT / "main.py"), PLAIN], cwd=workdir, env=env, capture_output=True, text=True, check=True)
    seconds, rss_kib, rc = out.stdout.split()
    assert rc == "0", out.stderr
    return float(seconds), int(rss_kib)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--review-hcl", action="store_true", help="also write and format cdk.tf, as `make synth` does")
    ap.add_argument("--plain", action="store_true", help="also time the plain pipeline (no overlap), paired per round")
    ap.add_argument("--sources", default="1,100,1000", help="source counts, comma-separated (the first and last are compared)")
    ap.add_argument("--out", type=Path, default=OUT, help="where the inventories, their synth and results.json go")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sources.split(",")]
    small, large = sizes[0], sizes[-1]
    cases = [(n, per_host) for per_host in (10, 100) for n in sizes]
    work = {(n, per_host): args.out / f"n{n}-per{per_host}" for n, per_host in cases}
    for (n, per_host), d in work.items():
        d.mkdir(parents=True, exist_ok=True)
        (d / "capture.hcl").write_text(inventory(n, per_host))
        subprocess.run([str(BIN / "mirrorcap"), "sessions", "--write"], cwd=d, check=True, capture_output=True)
    # Round-robin, not case after case: a shared machine's speed drifts over
    # minutes, and the ratio compares cases measured under the same drift.
    runs: dict[tuple[int, int], list[tuple[float, int]]] = {c: [] for c in cases}
    plain: dict[tuple[int, int], list[tuple[float, int]]] = {c: [] for c in cases}
    for _ in range(args.repeat):
        for case in cases:
            runs[case].append(measure(work[case], args.review_hcl))
            if args.plain:
                plain[case].append(measure(work[case], args.review_hcl, plain=True))
    rows = []
    for (n, per_host), got in runs.items():
        secs = statistics.median(r[0] for r in got)
        rss = max(r[1] for r in got)
        stacks = len(list((work[(n, per_host)] / "cdktf.out" / "stacks").iterdir()))
        rows.append({"sources": n, "per_host": per_host, "stacks": stacks, "median_s": round(secs, 2),
                     "runs_s": [round(r[0], 2) for r in got], "peak_rss_mib": round(rss / 1024)})
        print(f"sources={n:5d} per_host={per_host:3d} stacks={stacks:4d}  median {secs:6.2f} s  "
              f"runs {[round(r[0], 2) for r in got]}  peak RSS {rss / 1024:6.0f} MiB", flush=True)
    for per_host in (10, 100):
        one, big = runs[(small, per_host)], runs[(large, per_host)]
        median = statistics.median(r[0] for r in big)
        # Paired by round: each largest run against the smallest run of the same round.
        ratio = statistics.median(b[0] / o[0] for o, b in zip(one, big))
        print(f"per_host={per_host}: {large:,} sources median {median:.2f} s, fastest {min(r[0] for r in big):.2f} s "
              f"(target < 8 s: {'OK' if median < 8 else 'MISSED'}); ratio to {small} source(s) {ratio:.2f}x, median of "
              f"{len(big)} paired rounds (target <= 1.5x: {'OK' if ratio <= 1.5 else 'MISSED'})")
        rows.append({"per_host": per_host, f"median_s_{large}": round(median, 2), "paired_ratio": round(ratio, 3)})
    if args.plain:
        for case, got in plain.items():
            saved = statistics.median(p[0] - o[0] for o, p in zip(runs[case], got))
            print(f"sources={case[0]:5d} per_host={case[1]:3d}: plain pipeline median {statistics.median(p[0] for p in got):6.2f} s; "
                  f"the overlap saves {saved:+.2f} s (median of {len(got)} paired rounds)")
            rows.append({"sources": case[0], "per_host": case[1], "plain_median_s": round(statistics.median(p[0] for p in got), 2),
                         "overlap_saves_s": round(saved, 2)})
    (args.out / ("results-review-hcl.json" if args.review_hcl else "results.json")).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
