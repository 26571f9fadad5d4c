"""A capture removed from the inventory in a pull request, on real plans against moto: two captures
deployed (each its own stack, its state in moto's S3 under its own key, as `backend "s3"` says), a
git repository with the base and the head commits, then what the workflows run:

- `review stacks --base` lists the removed capture with its destroy directory (its backend and
  provider, no resource: the same state);
- that directory's plan destroys exactly what the capture deployed, and nothing of the other;
- `review record` gates its pcap volume and keys (the mirrorcap:destroy-pcaps label), `review
  comment` says plainly that the capture was removed and that everything listed is destroyed, inert;
- the merge: the same directory from the merge's parent, a fresh plan verified against the record
  (refused without the label, accepted with it), applied: moto keeps none of the capture's resources;
- a renamed block (a removal plus an addition) is said so on both comments;
- a capture whose pcap volume keeps prevent_destroy = true: its destroy plan fails, saying how.

Skips where terraform or the hashicorp/aws mirror is absent. With MIRRORCAP_RECORD_REVIEW=1 it
re-records the removal's plan in tests/fixtures/review/ (removal-plan.json, .txt).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tf_emulator as T
from helpers import EXAMPLE, FIXTURES, mirrorcap, synth
from mirrorcap.cli import app
from mirrorcap.inventory import load
from mirrorcap.workflow import reviewed
from test_review_real_plans import assert_inert

TERRAFORM, TERRAFORM_VERSION = T.find_terraform()
MIRROR, NO_MIRROR = T.find_aws_mirror()

pytestmark = [
    pytest.mark.skipif(TERRAFORM is None, reason=f"needs terraform: {TERRAFORM_VERSION}"),
    pytest.mark.skipif(MIRROR is None, reason=f"needs the hashicorp/aws provider: {NO_MIRROR}"),
]

RECORDED = FIXTURES / "review"
STATE_BUCKET = "example-terraform-state"  # capture.hcl's backend bucket
HOSTILE = "<img src=x onerror=alert(1)> @everyone https://evil.example/x"
SKIPPED_IN_EMULATOR = {"aws_ec2_traffic_mirror_filter_rule"}  # moto lacks them (test_terraform.py)
MOTO_INSTANCE_DRIFT = ["associate_public_ip_address", "vpc_security_group_ids"]


def old_block(name: str, ids: dict, capture, eni: str, *, protected: bool) -> str:
    """A second capture in the example's VPC and subnet, mirroring its own ENI, its state under its own key."""
    storage = "" if protected else "\n    prevent_destroy = false"
    return f'''
capture "{name}" {{
  region    = "{capture.region}"
  vpc_id    = "{ids[capture.vpc_id]}"
  subnet_id = "{ids[capture.subnet_id]}"
  ami       = "{ids[capture.ami]}"
  vni       = 4242

  storage {{
    size_gib = 125
    type     = "st1"{storage}
  }}

  network {{
    mirror_source_cidrs = ["10.0.16.0/20"]
  }}

  source {{
    eni_id      = "{eni}"
    description = "{HOSTILE}"
  }}

  backend "s3" {{
    bucket = "{STATE_BUCKET}"
    key    = "mirrorcap/old.tfstate"
  }}
}}
'''


def git(repo: Path, *args: str) -> str:
    r = subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=repo, check=True,
                       capture_output=True, text=True)
    return r.stdout.strip()


def commit(repo: Path, text: str, message: str) -> str:
    (repo / "capture.hcl").write_text(text)
    r = mirrorcap("sessions", "--write", cwd=repo)
    assert r.returncode == 0, r.stderr
    git(repo, "add", "capture.hcl", "capture.lock.json")
    git(repo, "commit", "-q", "-m", message)
    r = synth(repo, review_hcl=False)
    assert r.returncode == 0, r.stderr
    return git(repo, "rev-parse", "HEAD")


def moto_override(stack_dir: Path, url: str) -> dict:
    """The stack's own S3 backend pointed at moto (an override's backend replaces the original whole),
    the provider tested, every endpoint at moto."""
    doc = json.loads((stack_dir / "cdk.tf.json").read_text())
    over = T.emulator_override(MIRROR, url)
    over["provider"]["aws"]["max_retries"] = 2  # an action moto lacks fails in seconds, not minutes of retries
    over["terraform"]["backend"] = {"s3": {
        **doc["terraform"]["backend"]["s3"], "endpoints": {"s3": url, "sts": url}, "use_path_style": True,
        "access_key": "testing", "secret_key": "testing", "skip_credentials_validation": True,
        "skip_requesting_account_id": True, "skip_metadata_api_check": True, "skip_region_validation": True}}
    if "aws_instance" in doc.get("resource", {}):
        ignore = doc["resource"]["aws_instance"]["capture_instance"].get("lifecycle", {}).get("ignore_changes", [])
        over["resource"] = {"aws_instance": {"capture_instance": {"lifecycle": {"ignore_changes": [*ignore, *MOTO_INSTANCE_DRIFT]}}}}
    return over


def working_copy(tf: T.Terraform, stack_dir: Path, dest: Path, url: str) -> Path:
    """A runner's checkout of the directory (fresh: nothing of an earlier init), initialized."""
    if dest.exists():
        shutil.rmtree(dest)
    T.working_copy(stack_dir, dest, moto_override(stack_dir, url))
    tf.ok(dest, "init", "-input=false", "-no-color")
    return dest


def plan(tf: T.Terraform, wc: Path, *extra: str) -> tuple[Path, Path]:
    """The workflows' plan (-lock=false, as the plan role's): plan.json and plan.txt beside the working copy."""
    tf.ok(wc, "plan", "-input=false", "-no-color", "-lock=false", *extra, "-out=tfplan", timeout=300)
    out = wc.parent / f"{wc.name}.plan.json"
    out.write_text(tf.ok(wc, "show", "-json", "tfplan").stdout)
    out.with_suffix(".txt").write_text(tf.ok(wc, "show", "-no-color", "tfplan").stdout)
    return out, out.with_suffix(".txt")


def review(*args) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, ["review", *map(str, args)])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.stdout, r.stderr


def stacks(repo: Path, base: str, head: str, *extra: str) -> dict:
    (repo / "changed.txt").write_text(git(repo, "diff", "--name-only", "--no-renames", base, head) + "\n")
    code, out, err = review("stacks", "--changed", "changed.txt", "--base", base, *extra)
    assert code == 0, err
    (repo / "stacks.json").write_text(out)
    return json.loads(out)


def comment(repo: Path, name: str, plan_json: Path | None, plan_text: Path, lock_before: Path, *extra: str) -> str:
    args = ["comment", "--stack", name, "--plan-text", plan_text, "--lock-before", lock_before, "--lock-after",
            repo / "capture.lock.json", "--stacks", repo / "stacks.json", *extra]
    code, body, err = review(*args, *(["--plan-json", plan_json] if plan_json else []))
    assert code == 0, err
    return body


def deployed_addresses(tf: T.Terraform, wc: Path) -> set[str]:
    return set(tf.ok(wc, "state", "list").stdout.split())


def deployed_ids(state: dict) -> dict:
    """The IDs of what a stack's state holds, by type: a set for the types it may hold several of."""
    by: dict[str, set] = {}
    for r in state["values"]["root_module"]["resources"]:
        if r["mode"] == "managed":
            by.setdefault(r["type"], set()).add(r["values"]["name"] if r["type"] == "aws_iam_role" else r["values"]["id"])
    return {t: next(iter(v)) if t in ("aws_instance", "aws_ebs_volume", "aws_iam_role") else v for t, v in by.items()}


@pytest.fixture()
def account(tmp_path, monkeypatch):
    """moto with the example's VPC, subnet and sources, the state bucket, a repository holding the example."""
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    T.fill_moto_gaps(monkeypatch)
    with T.emulator() as em:
        capture = load(EXAMPLE).captures[0]
        ids = T.moto_account(em, capture)
        em.client("s3", capture.region).create_bucket(
            Bucket=STATE_BUCKET, CreateBucketConfiguration={"LocationConstraint": capture.region})
        eni = em.client("ec2", capture.region).create_network_interface(SubnetId=ids[capture.subnet_id])["NetworkInterface"]
        repo = tmp_path / "repo"
        repo.mkdir()
        git(repo, "init", "-q")
        monkeypatch.chdir(repo)  # review stacks reads git and cdktf.out where it runs, as in the workflow
        example = T.MOTO_ID.sub(lambda m: ids.get(m.group(0), m.group(0)), EXAMPLE.read_text())
        tf = T.Terraform(TERRAFORM, MIRROR, tmp_path / "tf-home")
        yield {"em": em, "capture": capture, "ids": ids, "eni": eni["NetworkInterfaceId"], "repo": repo,
               "example": example, "tf": tf, "tmp": tmp_path}


def test_a_removed_capture_is_planned_destroyed_gated_and_applied_as_reviewed(account):
    a = account
    em, tf, repo, tmp, capture = a["em"], a["tf"], a["repo"], a["tmp"], a["capture"]
    base = commit(repo, a["example"] + old_block("old", a["ids"], capture, a["eni"], protected=False), "two captures")
    lock_before = tmp / "lock-before.json"
    shutil.copy(repo / "capture.lock.json", lock_before)
    old_stack = json.loads((repo / "cdktf.out/stacks/old/cdk.tf.json").read_text())

    # Deployed: prod's sessions (and what they need), old whole (less what moto lacks).
    prod = working_copy(tf, repo / "cdktf.out/stacks/prod", tmp / "wc-prod", em.url)
    tf.ok(prod, "apply", "-input=false", "-no-color", "-auto-approve", "-target=aws_ec2_traffic_mirror_session.source", timeout=400)
    old = working_copy(tf, repo / "cdktf.out/stacks/old", tmp / "wc-old", em.url)
    targets = [f"-target={t}.{n}" for t, named in old_stack["resource"].items() if t not in SKIPPED_IN_EMULATOR for n in named]
    tf.ok(old, "apply", "-input=false", "-no-color", "-auto-approve", *targets, timeout=400)
    old_deployed, prod_deployed = deployed_addresses(tf, old), deployed_addresses(tf, prod)
    ids = deployed_ids(tf.show_json(old))
    prod_sessions = deployed_ids(tf.show_json(prod))["aws_ec2_traffic_mirror_session"]
    assert "aws_ebs_volume.pcap_volume" in old_deployed and "aws_instance.capture_instance" in old_deployed

    # The pull request removes the block.
    head = commit(repo, a["example"], "remove old")
    selected = stacks(repo, base, head)
    assert selected == {"stacks": [{"name": "old", "dir": "cdktf.out/removed/old", "region": capture.region, "remote_state": True,
                                    "reasons": ["removed from the inventory"], "removal": {"protected": False, "added": []}}],
                        "removed": []}
    destroy_dir = repo / "cdktf.out/removed/old"
    config = json.loads((destroy_dir / "cdk.tf.json").read_text())
    # the stack's own backend (its state) and provider pins, as synth wrote them for the base
    assert config["terraform"] == old_stack["terraform"] and "resource" not in config and "data" not in config
    assert config["provider"] == {"aws": [{"region": capture.region}]}

    # The plan workflow: plan, record, gate, comment.
    pr_plan, pr_text = plan(tf, working_copy(tf, destroy_dir, tmp / "wc-pr", em.url))
    raw = json.loads(pr_plan.read_text())
    changed = {rc["address"]: rc for rc in raw["resource_changes"] if rc["change"]["actions"] != ["no-op"]}
    assert set(changed) == {a for a in old_deployed if not a.startswith("data.")}  # everything it deployed, nothing of prod
    assert {tuple(rc["change"]["actions"]) for rc in changed.values()} == {("delete",)}
    assert {rc["action_reason"] for rc in changed.values()} == {"delete_because_no_resource_config"}
    if os.environ.get("MIRRORCAP_RECORD_REVIEW") == "1":  # for the workflows' own shell (tests/unit/test_workflow_removal_run.py)
        for name, path in (("removal-plan.json", pr_plan), ("removal-plan.txt", pr_text)):
            (RECORDED / name).write_text(path.read_text())
    code, out, err = review("record", "--stack", "old", "--plan-json", pr_plan, "--dir", destroy_dir, "--pr", "7", "--commit", head)
    assert code == 0, err
    record = tmp / "reviewed.json"
    record.write_text(out)
    assert set(json.loads(out)["gated"]) == {"aws_ebs_volume.pcap_volume", "aws_kms_key.pcap_key", "aws_kms_key.alarm_key"}

    body = comment(repo, "old", pr_plan, pr_text, lock_before, "--commit", head)
    assert body.startswith("<!-- mirrorcap-review:old -->\n\n### mirrorcap plan: capture `old` removed from the inventory at ")
    assert "**Capture `old` was removed from `capture.hcl`**: this plan destroys everything its stack deployed" in body
    assert f"**This plan destroys {len(changed)} resource(s)**: 0 replaced, {len(changed)} deleted." in body
    assert "**A merge does not apply this plan** until the `mirrorcap:destroy-pcaps` label is on this pull request" in body
    assert all(f"`{address}`" in body for address in changed)
    assert "removed" in body and "also adds" not in body
    assert_inert(body)
    allowed = comment(repo, "old", pr_plan, pr_text, lock_before, "--destroy-allowed")
    assert "The `mirrorcap:destroy-pcaps` label is on this pull request: a merge applies this plan." in allowed

    # The merge: the apply workflow's selection from the merge's parent, a fresh runner's plan, verify, apply.
    shutil.rmtree(destroy_dir)
    assert stacks(repo, base, head, "--require-remote-state")["stacks"][0]["dir"] == "cdktf.out/removed/old"
    assert reviewed.config_digest(destroy_dir) == json.loads(out)["config_digest"]
    merge = working_copy(tf, destroy_dir, tmp / "wc-merge", em.url)
    fresh, fresh_text = plan(tf, merge)
    verify = ["verify", "--stack", "old", "--plan-json", fresh, "--reviewed", record, "--dir", destroy_dir]
    code, line, _ = review(*verify)
    assert code == 1 and line.startswith("refused: the plan destroys pcap data (")  # no label
    code, line, _ = review(*verify, "--allow-destroy", "--report", tmp / "report.md")
    assert (code, line.strip()) == (0, "matches the reviewed plan")
    assert "differs from the one planned" not in (tmp / "report.md").read_text()
    tf.ok(merge, "apply", "-input=false", "-no-color", "tfplan", timeout=400)

    assert deployed_addresses(tf, merge) == set()
    ec2, kms, iam = (em.client(s, capture.region) for s in ("ec2", "kms", "iam"))
    assert ec2.describe_instances(InstanceIds=[ids["aws_instance"]])["Reservations"][0]["Instances"][0]["State"]["Name"] == "terminated"
    volumes = ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [ids["aws_ebs_volume"]]}])["Volumes"]
    assert volumes == []
    sessions = {s["TrafficMirrorSessionId"] for s in ec2.describe_traffic_mirror_sessions()["TrafficMirrorSessions"]}
    assert not sessions & ids["aws_ec2_traffic_mirror_session"] and prod_sessions <= sessions  # old's gone, prod's kept
    assert {kms.describe_key(KeyId=k)["KeyMetadata"]["KeyState"] for k in ids["aws_kms_key"]} == {"PendingDeletion"}
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_role(RoleName=ids["aws_iam_role"])
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-id", "Values": sorted(ids["aws_security_group"])}])
    assert groups["SecurityGroups"] == []
    assert deployed_addresses(tf, prod) == prod_deployed

    # Applied: the next plan of the same directory has nothing to do.
    again, _ = plan(tf, merge)
    code, line, _ = review("verify", "--stack", "old", "--plan-json", again, "--reviewed", record, "--allow-destroy")
    assert (code, line.strip()) == (4, "no changes: nothing to apply")


def test_a_renamed_capture_is_a_removal_and_an_addition_on_both_comments(account):
    a = account
    em, tf, repo, tmp, capture = a["em"], a["tf"], a["repo"], a["tmp"], a["capture"]
    block = old_block("old", a["ids"], capture, a["eni"], protected=False)
    base = commit(repo, a["example"] + block, "two captures")
    lock_before = tmp / "lock-before.json"
    shutil.copy(repo / "capture.lock.json", lock_before)
    old = working_copy(tf, repo / "cdktf.out/stacks/old", tmp / "wc-old", em.url)
    tf.ok(old, "apply", "-input=false", "-no-color", "-auto-approve", "-target=aws_ebs_volume.pcap_volume", timeout=400)

    renamed = block.replace('capture "old"', 'capture "new"').replace("mirrorcap/old.tfstate", "mirrorcap/new.tfstate")
    head = commit(repo, a["example"] + renamed, "rename old to new")
    selected = stacks(repo, base, head)
    by = {s["name"]: s for s in selected["stacks"]}
    assert list(by) == ["new", "old"] and by["new"]["added_with_removal"] == ["old"]
    assert by["old"]["removal"] == {"protected": False, "added": ["new"]}

    gone, gone_text = plan(tf, working_copy(tf, repo / by["old"]["dir"], tmp / "wc-gone", em.url))
    body = comment(repo, "old", gone, gone_text, lock_before)
    assert "**Capture `old` was removed from `capture.hcl`**" in body and "`aws_ebs_volume.pcap_volume`" in body
    assert "> This pull request also adds `new`. A capture renamed in the inventory is this: a removal and an addition" in body
    assert_inert(body)
    new, new_text = plan(tf, working_copy(tf, repo / by["new"]["dir"], tmp / "wc-new", em.url), "-target=aws_ebs_volume.pcap_volume")
    body = comment(repo, "new", new, new_text, lock_before)
    assert body.startswith("<!-- mirrorcap-review:new -->\n\n### mirrorcap plan: `new`")
    assert "> Capture `new` is new, and this pull request removes `old`: if it is a rename" in body


def test_a_removed_capture_whose_volume_keeps_prevent_destroy_is_refused_saying_how(account):
    a = account
    em, tf, repo, tmp, capture = a["em"], a["tf"], a["repo"], a["tmp"], a["capture"]
    base = commit(repo, a["example"] + old_block("old", a["ids"], capture, a["eni"], protected=True), "two captures")
    head = commit(repo, a["example"], "remove old")
    selected = stacks(repo, base, head)
    assert [(s["name"], s["removal"]) for s in selected["stacks"]] == [("old", {"protected": True, "added": []})]
    wc = working_copy(tf, repo / "cdktf.out/removed/old", tmp / "wc-pr", em.url)
    r = tf.run(wc, "plan", "-input=false", "-no-color", "-lock=false", "-out=tfplan")
    assert r.returncode == 1
    log = re.sub(r"\s+", " ", r.stderr + r.stdout)
    assert "prevent_destroy = true" in log and "then remove the block" in log
    (tmp / "plan.log").write_text(r.stderr + r.stdout)
    (tmp / "no-lock.json").write_text("")
    body = comment(repo, "old", None, tmp / "plan.log", tmp / "no-lock.json")
    assert "**The plan failed**" in body and "this plan destroys" not in body
    assert "**Capture `old` was removed from `capture.hcl`**: its pcap volume keeps `prevent_destroy = true` (the default), " \
        "so the plan of its destroy refuses: nothing is destroyed, and this check fails." in body
    assert_inert(body)
