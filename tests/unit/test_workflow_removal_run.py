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
import zipfile

import pytest

from helpers import EXAMPLE
from mirrorcap.workflow import reviewed
from test_workflow_apply import RECORDED, applies, git, reviewed_in_pull_request, run_apply, synthesized_runner

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
    pins = {"aws": {"source": "hashicorp/aws", "version": "6.69.1"}}
    return synthesized_runner(tmp_path, repo, bin_, sha, before, {"provider": {"aws": [{"region": "ap-northeast-1"}]},
                                                                  "terraform": {"backend": {"s3": {}}, "required_providers": pins}})


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
