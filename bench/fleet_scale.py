"""Benchmark: edit -> planned, for a fleet of N sources, mirrorcap against a hand-written module, in one run.

Run: .venv/bin/python bench/fleet_scale.py [--sources 1000] [--repeat 3] [--edits add,remove,vni]

One fleet capture (3 AZs, an NLB target: no source limit, an archive) with explicit ENI sources
is one stack. Each round starts from N - 1 sources, synthesized in full by `make synth` (not timed),
then times, for each source edit, against the same moto account (server mode on 127.0.0.1,
tests/tf_emulator.py) and the real hashicorp/aws provider from the local mirror:

- mirrorcap: the edit, then `make synth` exactly as a user runs it (sessions --write, render,
  mirrorcap synth: the sources are data, so cdktn is skipped, which the run checks), then
  `terraform plan`. edit -> planned = synth + plan;
- the same edit in a hand-written root module with the same resources (bench/handwritten/main.tf,
  written as a user would), its sources a variable fed by a .auto.tfvars.json ("hand-var") or a
  local in a .tf file ("hand-local"). Its edit -> planned is the plan alone.

The edits: "add" a source (N sources), "remove" one (N - 2), "vni": one source gets a VNI of its
own (a new alarm pair, the host's decapsulation). Every plan must create the same resources as
mirrorcap's (checked). In the first round each edit's data-only synth is also checked against
cdktn's own synth of the same inventory: the two cdktf.out trees must be byte-identical. Each round
also times `make synth` of the unchanged inventory and of a structural edit (another instance type:
cdktn runs). `terraform init` is its own column (once per working copy, not per edit).

The rounds rotate the order of the shapes; the ratio is taken within each round (mirrorcap's
edit -> planned over each hand-written plan), and its median is reported per edit, never a ratio
of medians nor a number typed in from another run. Goal: no slower than the hand-written module.
`--sources 3 --repeat 1` is the smoke run the test suite makes (tests/synth/test_fleet_bench.py).
"""

from __future__ import annotations

import argparse
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
SHAPES = ("mirrorcap", "hand-var", "hand-local")
EDITS = ("add", "remove", "vni")
SKIPPED = "cdktn skipped"


def eni(i: int) -> str:
    return f"eni-{i:017x}"


def sources_after(n: int, edit: str | None) -> dict[int, int | None]:
    """Source index -> its own VNI (None: the capture's), before an edit (None) and after it."""
    count = {None: n - 1, "add": n, "remove": n - 2, "vni": n - 1}[edit]
    return {i: (VNI + 1 if edit == "vni" and i == 0 else None) for i in range(count)}


def inventory(sources: dict[int, int | None], subnets: list[str], vpc: str, ami: str, instance_type: str | None = None) -> str:
    blocks = "\n".join(f'  source {{\n    eni_id = "{eni(i)}"\n' + (f"    vni = {v}\n" if v is not None else "") + "  }"
                       for i, v in sources.items())
    return f'''capture "fleet" {{
  region = "{REGION}"
  vpc_id = "{vpc}"
  ami    = "{ami}"
  vni    = {VNI}
{f'  instance_type = "{instance_type}"' if instance_type else ""}
  fleet {{
    subnet_ids = [{", ".join(f'"{s}"' for s in subnets)}]
  }}
  archive {{}}
  network {{
    mirror_source_cidrs = ["10.0.0.0/16"]
  }}
{blocks}
  backend "local" {{
    path = "fleet.tfstate"
  }}
}}
'''


def timed(cmd: list[str], cwd: Path, env: dict, timeout: float = 3600) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the command and its children: Terraform and its provider, stdout) of `cmd`.
    CPU time hardly moves when others load the machine; wall time is what a user waits.
    A failure stops the benchmark with its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed in {cwd}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), r.stdout


def run(cmd: list[str], cwd: Path, env: dict, timeout: float = 3600) -> float:
    return timed(cmd, cwd, env, timeout)[0]


# --- The hand-written module's sources, two ways ----------------------------------------------------

def hand_sources(shape: str, values: dict) -> dict[str, str]:
    """The files holding the sources (from mirrorcap's values: the same numbers and VNIs), as a user writes
    them: one map of objects, in a variable and a .auto.tfvars.json, or a local in sources.tf."""
    rows = {s: {"session_number": n, "vni": values["source_vnis"].get(s, VNI)} for s, n in values["sessions"].items()}
    if shape == "hand-var":
        return {"sources.tf": 'variable "sources" {\n  type = map(object({ session_number = number, vni = number }))\n}\n\n'
                              "locals {\n  sources = var.sources\n}\n",
                "sources.auto.tfvars.json": json.dumps({"sources": rows}, indent=1)}
    text = "".join(f'    "{s}" = {{ session_number = {r["session_number"]}, vni = {r["vni"]} }}\n' for s, r in rows.items())
    return {"sources.tf": f"locals {{\n  sources = {{\n{text}  }}\n}}\n"}


def hand_module(dest: Path, shape: str, values: dict, account: dict, user_data: Path, override: dict) -> Path:
    dest.mkdir(parents=True)
    shutil.copy(HANDWRITTEN / "main.tf", dest / "main.tf")
    shutil.copy(user_data, dest / "user-data.sh.tftpl")  # the bootstrap mirrorcap rendered: the same launch template
    for name, text in hand_sources(shape, values).items():
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
    wall, cpu, _ = timed([tf.binary, "plan", "-input=false", "-no-color", "-out=p.tfplan"], wc, tf.env())
    return {"init_s": round(init, 2), "plan_s": round(wall, 2), "plan_cpu_s": round(cpu, 2), "creates": planned_creates(tf, wc)}


def make_synth(work: Path) -> tuple[float, float, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "CHECKPOINT_DISABLE": "1"}
    env.pop("MIRRORCAP_REVIEW_HCL", None)
    return timed(["make", "--no-print-directory", "-C", str(ROOT), "synth", f"INVENTORY={work / 'capture.hcl'}",
                  f"RENDERED={work / 'rendered'}", f"OUT={work / 'cdktf.out'}"], work, env)


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def one_edit(r: int, n: int, edit: str, base: Path, start: Path, shapes: list[str], tf: T.Terraform, account: dict,
             override: dict) -> dict:
    work = base / f"round-{r}-{edit}"
    shutil.copytree(start, work)  # the synthesized N - 1 sources: cdktf.out and its record included
    subnets, vpc, ami = account["subnet_ids"], account["vpc_id"], account["ami"]
    (work / "capture.hcl").write_text(inventory(sources_after(n, edit), subnets, vpc, ami))
    wall, cpu, out = make_synth(work)
    if SKIPPED not in out:
        raise SystemExit(f"round {r}, {edit}: make synth ran cdktn for a source edit:\n{out}")
    row = {"synth_s": round(wall, 2), "synth_cpu_s": round(cpu, 2)}
    stack = work / "cdktf.out" / "stacks" / "fleet"
    values = json.loads((stack / "sessions.auto.tfvars.json").read_text())
    row["sources"] = len(values["sessions"])
    if r == 0:  # the data-only synth is what cdktn's own synth of the same inventory writes, byte for byte
        fresh = base / f"round-{r}-{edit}-cdktn"
        fresh.mkdir()
        for name in ("capture.hcl", "capture.lock.json"):
            shutil.copy(work / name, fresh / name)
        make_synth(fresh)
        if tree(fresh / "cdktf.out") != tree(work / "cdktf.out"):
            raise SystemExit(f"{edit}: the data-only synth differs from cdktn's synth of the same inventory")
        row["same_as_cdktn_synth"] = True
    order = shapes[r % len(shapes):] + shapes[:r % len(shapes)]  # rotated: drift in the machine's speed spreads over the shapes
    for shape in order:
        wc = base / f"round-{r}-{edit}-{shape}"
        if shape.startswith("hand-"):
            hand_module(wc, shape, values, account, stack / "user-data.sh.tftpl", override)
        else:
            T.working_copy(stack, wc, override)
        row[shape] = plan(tf, wc)
        shutil.rmtree(wc / ".terraform", ignore_errors=True)
    creates = {shape: row[shape]["creates"] for shape in shapes}
    if len(set(creates.values())) != 1:
        raise SystemExit(f"round {r}, {edit}: the shapes do not plan the same resources: {creates}")
    if "mirrorcap" in shapes:
        row["mirrorcap"]["edit_to_plan_s"] = round(row["synth_s"] + row["mirrorcap"]["plan_s"], 2)
        for shape in shapes:
            if shape.startswith("hand-"):
                row[f"ratio_vs_{shape}"] = round(row["mirrorcap"]["edit_to_plan_s"] / row[shape]["plan_s"], 3)
    return row


def one_round(r: int, n: int, shapes: list[str], edits: list[str], tf: T.Terraform, base: Path, account: dict, override: dict) -> dict:
    start = base / f"round-{r}"
    start.mkdir()
    subnets, vpc, ami = account["subnet_ids"], account["vpc_id"], account["ami"]
    (start / "capture.hcl").write_text(inventory(sources_after(n, None), subnets, vpc, ami))
    make_synth(start)  # N - 1 sources, synthesized in full (not timed)
    row: dict = {"round": r, "sources": n}
    wall, _, out = make_synth(start)
    assert SKIPPED in out, out
    row["synth_unchanged_s"] = round(wall, 2)
    for edit in edits[r % len(edits):] + edits[:r % len(edits)]:
        row[edit] = one_edit(r, n, edit, base, start, shapes, tf, account, override)
    structural = base / f"round-{r}-structural"
    shutil.copytree(start, structural)
    (structural / "capture.hcl").write_text(inventory(sources_after(n, None), subnets, vpc, ami, instance_type="c6in.2xlarge"))
    wall, _, out = make_synth(structural)
    if "cdktn synth (the structure changed" not in out:
        raise SystemExit(f"round {r}: a structural edit did not run cdktn:\n{out}")
    row["synth_structural_s"] = round(wall, 2)
    return row


def summary(rows: list[dict], shapes: list[str], edits: list[str]) -> list[str]:
    med = statistics.median
    lines = [f"{rows[0]['sources']} sources, one stack; {len(rows)} round(s); seconds, median (each round's in brackets)", "",
             f"make synth, the inventory unchanged: {med(r['synth_unchanged_s'] for r in rows):.2f} "
             f"{[r['synth_unchanged_s'] for r in rows]}; a structural edit (cdktn runs): "
             f"{med(r['synth_structural_s'] for r in rows):.2f} {[r['synth_structural_s'] for r in rows]}", ""]
    for edit in edits:
        e = [r[edit] for r in rows]
        lines += [f"edit: {edit} ({e[0]['sources']} sources after it, {e[0][shapes[0]]['creates']} resources to create)",
                  f"| {'shape':<11} | {'synth':>6} | {'init':>5} | {'plan':>6} | {'plan CPU':>8} | {'edit -> planned':>15} |",
                  f"| {'-' * 11} | {'-' * 5}:| {'-' * 4}:| {'-' * 5}:| {'-' * 7}:| {'-' * 14}:|"]
        for shape in shapes:
            hand = shape.startswith("hand-")
            synth = 0.0 if hand else med(x["synth_s"] for x in e)
            spans = [x[shape]["plan_s"] + (0 if hand else x["synth_s"]) for x in e]
            lines.append(f"| {shape:<11} | {synth:6.2f} | {med(x[shape]['init_s'] for x in e):5.1f} | "
                         f"{med(x[shape]['plan_s'] for x in e):6.1f} | {med(x[shape]['plan_cpu_s'] for x in e):8.1f} | "
                         f"{med(spans):15.1f} | {[round(v, 1) for v in spans]}")
        for shape in shapes:
            if shape.startswith("hand-") and "mirrorcap" in shapes:
                ratios = [x[f"ratio_vs_{shape}"] for x in e]
                verdict = "no slower: goal met" if med(ratios) <= 1 else "slower: goal missed"
                lines.append(f"paired ratio ({edit}), mirrorcap edit -> planned / {shape} plan: median {med(ratios):.2f} {ratios} ({verdict})")
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sources", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    ap.add_argument("--edits", default=",".join(EDITS), help=f"comma-separated, of {', '.join(EDITS)}")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "fleet_scale.json")
    args = ap.parse_args(argv)
    shapes = [s for s in args.shapes.split(",") if s]
    edits = [e for e in args.edits.split(",") if e]
    if not shapes or set(shapes) - set(SHAPES) or not edits or set(edits) - set(EDITS) or args.sources < 3 or args.repeat < 1:
        ap.error(f"--shapes: some of {', '.join(SHAPES)}; --edits: some of {', '.join(EDITS)}; --sources at least 3; "
                 "--repeat at least 1")
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
            rows.append(one_round(r, args.sources, shapes, edits, tf, base, account, override))
            print(json.dumps(rows[-1]), flush=True)
    lines = summary(rows, shapes, edits)
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"terraform": why, "provider": mirror.version, "rows": rows, "summary": lines}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
