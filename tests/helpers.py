"""Shared helpers: run the real CLI and the real synth on inventories in tmp dirs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXAMPLE = ROOT / "capture.hcl"
FIXTURES = ROOT / "tests" / "fixtures"  # inventories the synth tests share (and their golden digests)


def env() -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e["CHECKPOINT_DISABLE"] = "1"
    e.pop("MIRRORCAP_INVENTORY", None)
    return e


def mirrorcap(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "mirrorcap"), *args], cwd=cwd, env=env(), capture_output=True, text=True)


def synth(workdir: Path, inventory: str = "capture.hcl", review_hcl: bool = True) -> subprocess.CompletedProcess:
    e = env()
    e["MIRRORCAP_INVENTORY"] = inventory
    if review_hcl:
        e["MIRRORCAP_REVIEW_HCL"] = "1"
    return subprocess.run([sys.executable, str(ROOT / "main.py")], cwd=workdir, env=e, capture_output=True, text=True)


def stack_json(workdir: Path, name: str) -> dict:
    return json.loads((workdir / "cdktf.out" / "stacks" / name / "cdk.tf.json").read_text())


def stack_values(workdir: Path, name: str) -> dict:
    """The stack's variables as Terraform reads them (sessions.auto.tfvars.json, written beside cdk.tf.json)."""
    return json.loads((workdir / "cdktf.out" / "stacks" / name / "sessions.auto.tfvars.json").read_text())


def for_each_of(doc: dict, kind: str, rtype: str, name: str, values: dict | None = None) -> dict | list | None:
    """A resource's (or data source's) for_each as a value: the stack writes it as a reference to one of
    its variables (`${var.sessions}`, `${var.instance_sources}`), whose `values` come from the stack's
    sessions.auto.tfvars.json, or the VNIs as text (`${toset([for vni in var.vnis : tostring(vni)])}`)."""
    value = doc[kind][rtype][name].get("for_each")
    if isinstance(value, str):
        assert values is not None, f"{rtype}.{name}: for_each {value!r} needs the stack's variable values"
        if m := re.fullmatch(r"\$\{var\.([a-z_]+)\}", value):
            return values[m.group(1)]
        m = re.fullmatch(r"\$\{toset\(\[for (\w+) in var\.([a-z_]+) : tostring\(\1\)\]\)\}", value)
        assert m, f"{rtype}.{name}: for_each {value!r} is not a variable"
        return {str(v): str(v) for v in values[m.group(2)]}
    return value


SESSION_ARGUMENTS = ("session_number", "virtual_network_id", "packet_length", "description")


def sessions_of(doc: dict, values: dict) -> dict[str, dict]:
    """Source ID -> the arguments the one session resource (`aws_ec2_traffic_mirror_session.source`) gives
    it, its expressions evaluated over the stack's values (synth_account's evaluator)."""
    from synth_account import Account
    assert list(doc["resource"]["aws_ec2_traffic_mirror_session"]) == ["source"]
    body = doc["resource"]["aws_ec2_traffic_mirror_session"]["source"]
    account, out = Account(doc, client=None, variables=values), {}
    for key, value in for_each_of(doc, "resource", "aws_ec2_traffic_mirror_session", "source", values).items():
        with account.instance(key, value):
            out[key] = {arg: account.value(body[arg]) for arg in SESSION_ARGUMENTS}
    return out


def instances(doc: dict, values: dict, rtype: str) -> dict[str, dict]:
    """The stack's resources of `rtype` by address, each for_each expanded: `${each.key}` becomes the key,
    as Terraform substitutes it in a string (the alarms' for_each is the VNIs, as text)."""
    out = {}
    for name, body in doc["resource"].get(rtype, {}).items():
        body = {k: v for k, v in body.items() if k not in ("//", "for_each")}
        each = for_each_of(doc, "resource", rtype, name, values)
        if each is None:
            out[name] = body
            continue
        for key in each:
            out[f'{name}["{key}"]'] = json.loads(json.dumps(body).replace("${each.key}", key))
    return out


def terraform_evaluates(stack_dir: Path, expressions: dict[str, str], workdir: Path) -> dict:
    """Terraform itself evaluates `expressions` (name -> a "${...}" string of the stack) over the stack's
    variables, their values read from the stack's sessions.auto.tfvars.json as its plan reads them.
    No provider: the variables and these outputs only."""
    import shutil
    terraform = shutil.which("terraform") or shutil.which("tofu")
    if not terraform:
        import pytest
        pytest.skip("no terraform/tofu binary on this machine")
    doc = json.loads((stack_dir / "cdk.tf.json").read_text())
    workdir.mkdir(parents=True)
    (workdir / "main.tf.json").write_text(json.dumps({"variable": doc["variable"],
                                                      "output": {k: {"value": v} for k, v in expressions.items()}}))
    shutil.copy(stack_dir / "sessions.auto.tfvars.json", workdir)
    tf_env = {**os.environ, "TF_CLI_CONFIG_FILE": os.devnull, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}
    for args in (["init", "-input=false"], ["plan", "-input=false", "-out=p.tfplan"]):
        r = subprocess.run([terraform, *args, "-no-color"], cwd=workdir, env=tf_env, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    shown = json.loads(subprocess.run([terraform, "show", "-json", "p.tfplan"], cwd=workdir, env=tf_env, capture_output=True,
                                      text=True, check=True).stdout)
    return {k: v["value"] for k, v in shown["planned_values"]["outputs"].items()}


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def write(workdir: Path, text: str, name: str = "capture.hcl") -> Path:
    p = workdir / name
    p.write_text(text)
    return p


MINIMAL = '''
capture "{name}" {{
  region    = "eu-west-1"
  vpc_id    = "vpc-0123456789abcdef0"
  subnet_id = "subnet-0123456789abcdef0"
  ami       = "ami-0123456789abcdef0"
  vni       = 4242
  network {{
    mirror_source_cidrs = ["10.1.0.0/16"]
  }}
{body}
}}
'''


def minimal(body: str = "", name: str = "test") -> str:
    return MINIMAL.format(name=name, body=body)


def eni(n: int) -> str:
    return f"eni-{n:017x}"


def sources(*ids: str) -> str:
    return "\n".join(f'  source {{\n    {"instance_id" if i.startswith("i-") else "eni_id"} = "{i}"\n  }}' for i in ids)
