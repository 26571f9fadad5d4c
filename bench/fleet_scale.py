"""Benchmark (issue 14): inventory edit -> synthesized -> planned, for a fleet of N sources.

Run: .venv/bin/python bench/fleet_scale.py [--sources 1000] [--repeat 3]
One fleet capture (3 AZs, an NLB target: no source limit) with N explicit ENI
sources is ONE stack. Each round times, as a user would run them after editing
the inventory: `mirrorcap sessions --write`, the synth (`python -O main.py`, as
cdktn runs it) and `terraform plan` with the real hashicorp/aws provider from
the local mirror against moto in server mode on 127.0.0.1 (tests/tf_emulator.py);
`terraform init` is timed apart (once per working copy, not per edit).
The issue's baseline: 1,000 sources as 100 single-host stacks took 926 s
(synth + plan); one hand-written root module with the same 2,400 resources
planned in 58 s. Goal: no slower than the hand-written module.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]
BIN = Path(sys.executable).parent

import tf_emulator as T  # noqa: E402

REGION = "eu-west-1"


def inventory(n: int, subnets: list[str], vpc: str, ami: str) -> str:
    sources = "\n".join(f'  source {{\n    eni_id = "eni-{i:017x}"\n  }}' for i in range(n))
    return f'''capture "fleet" {{
  region = "{REGION}"
  vpc_id = "{vpc}"
  ami    = "{ami}"
  vni    = 4242
  fleet {{
    subnet_ids = [{", ".join(f'"{s}"' for s in subnets)}]
  }}
  archive {{}}
  network {{
    mirror_source_cidrs = ["10.0.0.0/16"]
  }}
{sources}
  backend "local" {{
    path = "fleet.tfstate"
  }}
}}
'''


def timed(cmd: list[str], cwd: Path, env: dict | None = None, timeout: float = 1800) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sources", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    terraform, why = T.find_terraform()
    mirror, no_mirror = T.find_aws_mirror()
    if terraform is None or mirror is None:
        raise SystemExit(f"needs terraform ({why}) and the hashicorp/aws mirror ({no_mirror})")
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "CHECKPOINT_DISABLE": "1",
           "MIRRORCAP_INVENTORY": "capture.hcl"}
    env.pop("MIRRORCAP_REVIEW_HCL", None)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mirrorcap-fleet-bench-") as tmp, T.emulator() as em:
        work = Path(tmp)
        tf = T.Terraform(terraform, mirror, work / "tf-home")
        ec2 = em.client("ec2", REGION)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        ami = em.client("ssm", REGION).get_parameter(  # an image moto knows: the stack reads its root device
            Name="/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")["Parameter"]["Value"]
        subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{16 * (n + 1)}.0/20", AvailabilityZone=f"{REGION}{az}")
                   ["Subnet"]["SubnetId"] for n, az in enumerate("abc")]
        inv = work / "inventory"
        inv.mkdir()
        override = T.emulator_override(mirror, em.url)
        override["provider"]["aws"]["endpoints"][0].update({"elbv2": em.url, "autoscaling": em.url})
        for r in range(args.repeat):
            # The edit: the inventory as the user saves it (a fresh lock each round: all N sessions are new).
            (inv / "capture.hcl").write_text(inventory(args.sources, subnets, vpc, ami))
            (inv / "capture.lock.json").unlink(missing_ok=True)
            number = timed([str(BIN / "mirrorcap"), "sessions", "--write"], inv, env)
            synth = timed([sys.executable, "-O", str(ROOT / "main.py")], inv, env)
            stack = inv / "cdktf.out" / "stacks" / "fleet"
            wc = T.working_copy(stack, work / f"wc-{r}", override)
            init = timed([terraform, "init", "-input=false", "-no-color"], wc, tf.env())
            plan = timed([terraform, "plan", "-input=false", "-no-color", "-out=p.tfplan"], wc, tf.env())
            shown = json.loads(subprocess.run([terraform, "show", "-json", "p.tfplan"], cwd=wc, env=tf.env(),
                                              capture_output=True, text=True, check=True).stdout)
            creates = sum(1 for c in shown["resource_changes"] if c["mode"] == "managed" and c["change"]["actions"] == ["create"])
            row = {"round": r, "sources": args.sources, "stacks": len(list((inv / "cdktf.out" / "stacks").iterdir())),
                   "number_s": round(number, 2), "synth_s": round(synth, 2), "init_s": round(init, 2), "plan_s": round(plan, 2),
                   "edit_to_plan_s": round(number + synth + plan, 2), "resources_to_create": creates}
            rows.append(row)
            print(json.dumps(row), flush=True)
    med = statistics.median(r["edit_to_plan_s"] for r in rows)
    print(f"{args.sources} sources, 1 stack, {rows[0]['resources_to_create']} resources to create: edit -> planned median "
          f"{med:.1f} s over {len(rows)} rounds (init apart: {statistics.median(r['init_s'] for r in rows):.1f} s); "
          f"baseline hand-written module 58 s: {'OK' if med <= 58 else 'MISSED'}")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "fleet_scale.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
