"""A capture removed from the inventory, through the workflows' own shell (the harness of
test_workflow_apply.py: a fake GitHub and a terraform replaying plans; git, jq, bash and mirrorcap real),
on the removal's real plan (Terraform's, against moto: tests/synth/test_removed_capture.py records it):

- the plan workflow selects the removed capture, plans it in cdktf.out/removed/<name>, records it, fails
  the check without the mirrorcap:destroy-pcaps label and says in its summary that the capture was removed;
- on the merge, the apply workflow writes the same directory from the inventory before the push, verifies
  the fresh plan against that record and applies it (with the label), and reports it on the pull request.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile

import pytest

from helpers import EXAMPLE, env
from mirrorcap.workflow import reviewed
from test_workflow_apply import (FAKE_GH, FAKE_TERRAFORM, MIRRORCAP_SHIM, RECORDED, applies, git, reviewed_in_pull_request,
                                 run_apply)

REMOVAL_PLAN = json.loads((RECORDED / "removal-plan.json").read_text())
OLD = '''
capture "old" {
  region    = "ap-northeast-1"
  vpc_id    = "vpc-0123456789abcdef0"
  subnet_id = "subnet-0123456789abcdef0"
  vni       = 4242
  storage {
    size_gib        = 125
    type            = "st1"
    prevent_destroy = false
  }
  network {
    mirror_source_cidrs = ["10.0.16.0/20"]
  }
  source {
    eni_id = "eni-0aaaaaaaaaaaaaaa0"
  }
  backend "s3" {
    bucket = "example-terraform-state"
    key    = "mirrorcap/old.tfstate"
  }
}
'''


@pytest.fixture
def removed(tmp_path) -> dict:
    """A repository whose last commit (a merged pull request) removes capture "old", synthesized as synth leaves it."""
    repo, bin_ = tmp_path / "repo", tmp_path / "bin"
    repo.mkdir(), bin_.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "capture.hcl").write_text(EXAMPLE.read_text() + OLD)
    (repo / "capture.lock.json").write_text("")  # no session numbers: the lock is not what this is about
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "two captures")
    before = git(repo, "rev-parse", "HEAD")
    (repo / "capture.hcl").write_text(EXAMPLE.read_text())
    git(repo, "commit", "-q", "-am", "remove old (#7)")
    sha = git(repo, "rev-parse", "HEAD")
    stack = repo / "cdktf.out" / "stacks" / "prod"
    stack.mkdir(parents=True)
    pins = {"aws": {"source": "hashicorp/aws", "version": "6.69.1"}}
    (stack / "cdk.tf.json").write_text(json.dumps({"provider": {"aws": [{"region": "ap-northeast-1"}]},
                                                   "terraform": {"backend": {"s3": {}}, "required_providers": pins}}))
    (repo / "cdktf.out" / "manifest.json").write_text('{"stacks": {"prod": {"workingDirectory": "stacks/prod"}}}')
    (repo / ".venv" / "bin").mkdir(parents=True)
    for path, text in ((bin_ / "terraform", FAKE_TERRAFORM), (bin_ / "gh", FAKE_GH.replace("{python}", sys.executable)),
                       (repo / ".venv" / "bin" / "mirrorcap", MIRRORCAP_SHIM.format(python=sys.executable))):
        path.write_text(text)
        path.chmod(0o755)
    runner_temp = tmp_path / "runner"
    runner_temp.mkdir()
    world = tmp_path / "world.json"
    world.write_text(json.dumps({"runs": [[]], "pulls": {}, "compare": [sha]}))
    (tmp_path / "tf.log").touch()
    return {"tmp": tmp_path, "repo": repo, "world": world, "sha": sha, "before": before, "plans": tmp_path / "plans",
            "env": {**env(), "PATH": f"{bin_}:{env()['PATH']}", "GH_WORLD": str(world), "GH_TOKEN": "x", "TF_LOG": str(tmp_path / "tf.log"),
                    "GITHUB_REPOSITORY": "o/r", "GITHUB_SHA": sha, "GITHUB_RUN_ID": "900", "GITHUB_RUN_NUMBER": "12",
                    "GITHUB_EVENT_NAME": "push", "RUNNER_TEMP": str(runner_temp), "BRANCH": "main", "BEFORE": before,
                    "GITHUB_OUTPUT": str(tmp_path / "output"), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
                    "REVIEWED": str(runner_temp / "reviewed"), "RUN_URL": "https://github.example/o/r/actions/runs/900",
                    "POLL_SECONDS": "0", "WAIT_MINUTES": "1", "RETRY_SECONDS": "0"}}


def pull_request(ctx: dict, labels: tuple[str, ...]) -> tuple[subprocess.CompletedProcess, dict]:
    """The plan workflow's selection and plan steps on the pull request's head (a fresh runner), and its record."""
    shutil.rmtree(ctx["repo"] / "cdktf.out" / "removed", ignore_errors=True)
    (ctx["tmp"] / "summary").write_text("")
    r = reviewed_in_pull_request(ctx, REMOVAL_PLAN, labels=labels, select=True)
    with zipfile.ZipFile(ctx["tmp"] / f"artifact-{'a' * 40}.zip") as z:
        return r, json.loads(z.read("old/reviewed.json"))


def test_a_removed_capture_is_planned_in_the_pull_request_and_its_destroy_applied_on_the_merge(removed):
    assert {rc["change"]["actions"][0] for rc in REMOVAL_PLAN["resource_changes"] if rc["mode"] == "managed"} == {"delete"}

    r, record = pull_request(removed, labels=())
    assert r.returncode == 1 and "::error title=destroys pcap data::stack old" in r.stdout  # the check fails
    # planned and recorded in the directory review stacks wrote for it
    assert record["config_digest"] == reviewed.config_digest(removed["repo"] / "cdktf.out" / "removed" / "old")
    assert "aws_ebs_volume.pcap_volume" in record["gated"]
    summary = (removed["tmp"] / "summary").read_text()
    assert "### mirrorcap plan: capture `old` removed from the inventory at " in summary
    assert "**Capture `old` was removed from `capture.hcl`**: this plan destroys everything its stack deployed" in summary

    shutil.rmtree(removed["repo"] / "cdktf.out" / "removed")  # the apply runs on a fresh runner: its own selection writes it
    out = run_apply(removed, REMOVAL_PLAN)  # merged without the label: refused
    assert applies(out) == [] and "old\trefused\trefused: the plan destroys pcap data" in out["results"]

    r, _ = pull_request(removed, labels=(reviewed.DESTROY_LABEL,))
    assert r.returncode == 0, r.stdout + r.stderr
    shutil.rmtree(removed["repo"] / "cdktf.out" / "removed")
    out = run_apply(removed, REMOVAL_PLAN)
    assert applies(out) == ["terraform apply -input=false -no-color -lock-timeout=300s tfplan (in cdktf.out/removed/old)"]
    assert out["results"].startswith("old\tapplied\tmatches the reviewed plan")
    comment = out["comments"][-1]  # (the refused run commented first)
    assert comment["pr"] == 7 and "| `old` | ✅ applied: matches the reviewed plan |" in comment["body"]
