"""Benchmark: edit -> planned, for a fleet of N sources, mirrorcap against a hand-written module, in one run.

Run: .venv/bin/python bench/fleet_scale.py [--sources 1000] [--repeat 3] [--shapes mirrorcap,shards16,hand-var,hand-local]

One fleet capture (3 AZs, an NLB target: no source limit, an archive) with N explicit ENI
sources is one stack. Every round times, against the same moto account (server mode on
127.0.0.1, tests/tf_emulator.py) and the real hashicorp/aws provider from the local mirror:

- mirrorcap: the edit (one source added to an inventory of N - 1 whose lock exists), then
  `make synth` exactly as a user runs it (sessions --write, render, cdktn synth with the
  review HCL), then `terraform plan`. edit -> planned = synth + plan;
- the same synthesized stack with its sessions in other shapes, planned (synth time is the
  same): "shards16" (16 resources, each with its map inline in for_each: what mirrorcap
  synthesized before), "inline" (one resource, the map inline: slow, opt in);
- a hand-written root module with the same resources (bench/handwritten/main.tf, written as a
  user would), its sources either a variable fed by terraform.tfvars.json ("hand-var") or a
  local in a .tf file ("hand-local"). Its edit -> planned is the plan alone.

`terraform init` is its own column (once per working copy, not per edit). Every plan must create
the same resources as mirrorcap's (checked). The rounds rotate the order of the shapes; the
ratio is taken within each round (mirrorcap's edit -> planned over each hand-written plan), and
its median is reported, not a ratio of medians, nor a number typed in from another run.
Goal: mirrorcap's edit -> planned no slower than the faster hand-written module.
`--sources 3 --repeat 1` is the smoke run the test suite makes (tests/synth/test_fleet_bench.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
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
VNI = 4242
HANDWRITTEN = ROOT / "bench" / "handwritten"
SHAPES = ("mirrorcap", "shards16", "inline", "hand-var", "hand-local")
DEFAULT_SHAPES = ("mirrorcap", "shards16", "hand-var", "hand-local")


def eni(i: int) -> str:
    return f"eni-{i:017x}"


def inventory(n: int, subnets: list[str], vpc: str, ami: str) -> str:
    sources = "\n".join(f'  source {{\n    eni_id = "{eni(i)}"\n  }}' for i in range(n))
    return f'''capture "fleet" {{
  region = "{REGION}"
  vpc_id = "{vpc}"
  ami    = "{ami}"
  vni    = {VNI}
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


def timed(cmd: list[str], cwd: Path, env: dict, timeout: float = 3600) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and its children: Terraform and its provider) of `cmd`.
    CPU time hardly moves when others load the machine; wall time is what a user waits.
    A failure stops the benchmark with its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed in {cwd}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run(cmd: list[str], cwd: Path, env: dict, timeout: float = 3600) -> float:
    return timed(cmd, cwd, env, timeout)[0]


# --- The other shapes of the synthesized sessions -------------------------------------------------

def _shard(source_id: str) -> str:
    """The stable hash mirrorcap sharded fleet sessions by (stack/mirroring.py before one resource)."""
    return f"_{int(hashlib.sha256(source_id.encode()).hexdigest(), 16) % 16:02d}"


def reshaped(doc: dict, shape: str) -> dict:
    """The synthesized stack with its session map inline: in one resource, or split over 16 by source."""
    doc = json.loads(json.dumps(doc))
    sessions = doc["locals"].pop("sessions")
    session = doc["resource"]["aws_ec2_traffic_mirror_session"].pop("source")
    if shape == "inline":
        doc["resource"]["aws_ec2_traffic_mirror_session"]["source"] = {**session, "for_each": sessions}
        return doc
    groups: dict[str, dict] = {}
    for source, values in sessions.items():
        groups.setdefault(_shard(source), {})[source] = values
    for suffix, group in sorted(groups.items()):
        doc["resource"]["aws_ec2_traffic_mirror_session"][f"source{suffix}"] = {**session, "for_each": group}
    ids = [f"{{for source, session in aws_ec2_traffic_mirror_session.source{s} : source => session.id}}" for s in sorted(groups)]
    doc["output"]["session_ids"]["value"] = "${merge(" + ", ".join(ids) + ")}"
    return doc


# --- The hand-written module's sources, two ways ----------------------------------------------------

def hand_sources(shape: str, numbers: dict[str, int]) -> dict[str, str]:
    """The files holding the sources: a variable and terraform.tfvars.json, or a local in sources.tf."""
    if shape == "hand-var":
        return {"sources.tf": 'variable "sources" {\n  type = map(object({ session_number = number, vni = number }))\n}\n\n'
                              "locals {\n  sources = var.sources\n}\n",
                "sources.auto.tfvars.json": json.dumps({"sources": {s: {"session_number": n, "vni": VNI} for s, n in numbers.items()}},
                                                       indent=1)}
    rows = "".join(f'    "{s}" = {{ session_number = {n}, vni = {VNI} }}\n' for s, n in numbers.items())
    return {"sources.tf": f"locals {{\n  sources = {{\n{rows}  }}\n}}\n"}


def hand_module(dest: Path, shape: str, numbers: dict[str, int], account: dict, user_data: Path, override: dict) -> Path:
    dest.mkdir(parents=True)
    shutil.copy(HANDWRITTEN / "main.tf", dest / "main.tf")
    shutil.copy(user_data, dest / "user-data.sh.tftpl")  # the bootstrap mirrorcap rendered: the same launch template
    for name, text in hand_sources(shape, numbers).items():
        (dest / name).write_text(text)
    (dest / "terraform.tfvars.json").write_text(json.dumps({"region": REGION, **account, "mirror_source_cidrs": ["10.0.0.0/16"]}))
    (dest / "override.tf.json").write_text(json.dumps(override, indent=1))
    return dest


# --- One round ----------------------------------------------------------------------------

def planned_creates(tf: T.Terraform, wc: Path) -> int:
    shown = tf.show_json(wc, "p.tfplan")
    return sum(1 for c in shown["resource_changes"] if c["mode"] == "managed" and c["change"]["actions"] == ["create"])


def plan(tf: T.Terraform, wc: Path) -> dict:
    init = run([tf.binary, "init", "-input=false", "-no-color"], wc, tf.env())
    wall, cpu = timed([tf.binary, "plan", "-input=false", "-no-color", "-out=p.tfplan"], wc, tf.env())
    return {"init_s": round(init, 2), "plan_s": round(wall, 2), "plan_cpu_s": round(cpu, 2), "creates": planned_creates(tf, wc)}


def make_synth(work: Path) -> tuple[float, float]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "CHECKPOINT_DISABLE": "1"}
    env.pop("MIRRORCAP_REVIEW_HCL", None)
    return timed(["make", "--no-print-directory", "-C", str(ROOT), "synth", f"INVENTORY={work / 'capture.hcl'}",
                f"RENDERED={work / 'rendered'}", f"OUT={work / 'cdktf.out'}"], work, env)


def one_round(r: int, n: int, shapes: list[str], tf: T.Terraform, base: Path, account: dict, override: dict) -> dict:
    work = base / f"round-{r}"
    work.mkdir()
    subnets, vpc, ami = account["subnet_ids"], account["vpc_id"], account["ami"]
    # Before the edit: N - 1 sources, their lock written (not timed)
    (work / "capture.hcl").write_text(inventory(n - 1, subnets, vpc, ami))
    subprocess.run([str(BIN / "mirrorcap"), "sessions", "--write"], cwd=work, check=True, capture_output=True)
    # The edit, then make synth
    (work / "capture.hcl").write_text(inventory(n, subnets, vpc, ami))
    wall, cpu = make_synth(work)
    row = {"round": r, "sources": n, "synth_s": round(wall, 2), "synth_cpu_s": round(cpu, 2)}
    stack = work / "cdktf.out" / "stacks" / "fleet"
    doc = json.loads((stack / "cdk.tf.json").read_text())
    numbers = json.loads((work / "capture.lock.json").read_text())["captures"]["fleet"]
    order = shapes[r % len(shapes):] + shapes[:r % len(shapes)]  # rotated: drift in the machine's speed spreads over the shapes
    for shape in order:
        wc = base / f"round-{r}-{shape}"
        if shape.startswith("hand-"):
            hand_module(wc, shape, numbers, account, stack / "user-data.sh.tftpl", override)
        else:
            T.working_copy(stack, wc, override)
            if shape != "mirrorcap":
                (wc / "cdk.tf.json").write_text(json.dumps(reshaped(doc, shape)))
        row[shape] = plan(tf, wc)
        shutil.rmtree(wc / ".terraform", ignore_errors=True)
    creates = {shape: row[shape]["creates"] for shape in shapes}
    if len(set(creates.values())) != 1:
        raise SystemExit(f"round {r}: the shapes do not plan the same resources: {creates}")
    if "mirrorcap" in shapes:
        row["mirrorcap"]["edit_to_plan_s"] = round(row["synth_s"] + row["mirrorcap"]["plan_s"], 2)
        for shape in shapes:
            if shape.startswith("hand-"):
                row[f"ratio_vs_{shape}"] = round(row["mirrorcap"]["edit_to_plan_s"] / row[shape]["plan_s"], 3)
    return row


def summary(rows: list[dict], shapes: list[str]) -> list[str]:
    med = statistics.median
    lines = [f"{rows[0]['sources']} sources, one stack, {rows[0][shapes[0]]['creates']} resources to create; {len(rows)} round(s); "
             "seconds, median (edit -> planned of each round in brackets)", "",
             f"| {'shape':<11} | {'synth':>6} | {'init':>5} | {'plan':>6} | {'plan CPU':>8} | {'edit -> planned':>15} |",
             f"| {'-' * 11} | {'-' * 5}:| {'-' * 4}:| {'-' * 5}:| {'-' * 7}:| {'-' * 14}:|"]
    for shape in shapes:
        hand = shape.startswith("hand-")
        synth = 0.0 if hand else med(r["synth_s"] for r in rows)
        edit = [r[shape]["plan_s"] + (0 if hand else r["synth_s"]) for r in rows]
        lines.append(f"| {shape:<11} | {synth:6.1f} | {med(r[shape]['init_s'] for r in rows):5.1f} | "
                     f"{med(r[shape]['plan_s'] for r in rows):6.1f} | {med(r[shape]['plan_cpu_s'] for r in rows):8.1f} | "
                     f"{med(edit):15.1f} | {[round(x, 1) for x in edit]}")
    for shape in shapes:
        if shape.startswith("hand-") and "mirrorcap" in shapes:
            ratios = [r[f"ratio_vs_{shape}"] for r in rows]
            verdict = "no slower: goal met" if med(ratios) <= 1 else "slower: goal missed"
            lines.append(f"paired ratio, mirrorcap edit -> planned / {shape} plan: median {med(ratios):.2f} {ratios} ({verdict})")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sources", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shapes", default=",".join(DEFAULT_SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "fleet_scale.json")
    args = ap.parse_args(argv)
    shapes = [s for s in args.shapes.split(",") if s]
    if not shapes or set(shapes) - set(SHAPES) or args.sources < 2 or args.repeat < 1:
        ap.error(f"--shapes: some of {', '.join(SHAPES)}; --sources at least 2; --repeat at least 1")
    terraform, why = T.find_terraform()
    mirror, no_mirror = T.find_aws_mirror()
    if terraform is None or mirror is None:
        print(f"fleet_scale: needs terraform ({why}) and the hashicorp/aws mirror ({no_mirror})", file=sys.stderr)
        return 2
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    rows = []
    with tempfile.TemporaryDirectory(prefix="mirrorcap-fleet-bench-") as tmp, T.emulator() as em:
        base = Path(tmp)
        tf = T.Terraform(terraform, mirror, base / "tf-home")
        ec2 = em.client("ec2", REGION)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        ami = em.client("ssm", REGION).get_parameter(  # an image moto knows: the stack reads its root device
            Name="/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")["Parameter"]["Value"]
        subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{16 * (n + 1)}.0/20", AvailabilityZone=f"{REGION}{az}")
                   ["Subnet"]["SubnetId"] for n, az in enumerate("abc")]
        account = {"vpc_id": vpc, "subnet_ids": subnets, "ami": ami}
        override = T.emulator_override(mirror, em.url)
        override["provider"]["aws"]["endpoints"][0].update({"elbv2": em.url, "autoscaling": em.url})
        for r in range(args.repeat):
            rows.append(one_round(r, args.sources, shapes, tf, base, account, override))
            print(json.dumps(rows[-1]), flush=True)
    lines = summary(rows, shapes)
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"terraform": why, "provider": mirror.version, "rows": rows, "summary": lines}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
