"""`mirrorcap ci-roles` (make ci-roles): what the roles trust, where their state is, and every bad
input refused with exit 2 and one problem naming it, before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import EXAMPLE
from mirrorcap.ci_settings import settings
from mirrorcap.cli import app
from mirrorcap.inventory import load


def test_the_roles_trust_pull_requests_the_branch_and_its_merge_queue_to_plan_and_the_branch_to_apply():
    s = settings(load(EXAMPLE), repository="acme/network")
    assert s.plan_subjects == ["repo:acme/network:pull_request", "repo:acme/network:ref:refs/heads/main",
                               "repo:acme/network:ref:refs/heads/gh-readonly-queue/main/*"]
    assert s.apply_subjects == ["repo:acme/network:ref:refs/heads/main"]
    assert settings(load(EXAMPLE), repository="acme/network", environment="mirrorcap").apply_subjects == \
        ["repo:acme/network:environment:mirrorcap"]
    assert (s.state_bucket, s.state_region) == ("example-terraform-state", "ap-northeast-1")
    assert [(st.bucket, st.prefix) for st in s.states] == [("example-terraform-state", "mirrorcap/*")]
    assert s.captures == ("prod",)


def run(tmp_path: Path, *args: str, inventory: str | None = None):
    inv = tmp_path / "capture.hcl"
    inv.write_text(EXAMPLE.read_text() if inventory is None else inventory)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["ci-roles", "--inventory", str(inv), "--stacks", str(tmp_path / "stacks"), "--out", str(out), *args])
    assert not out.exists(), "nothing is written when an input is refused"
    return r


@pytest.mark.parametrize("args,names", [
    (["--repository", "acme"], ["--repository", "OWNER/NAME"]),
    (["--repository", "acme/net work"], ["--repository"]),
    (["--repository", "-acme/network"], ["--repository"]),
    (["--repository", "acme/network", "--branch", "release/*"], ["--branch"]),  # a wildcard in an exact trust
    (["--repository", "acme/network", "--branch", "main..x"], ["--branch"]),
    (["--repository", "acme/network", "--environment", "prod*"], ["--environment"]),
    (["--repository", "acme/network", "--oidc-provider-arn", "arn:aws:iam::123456789012:oidc-provider/gitlab.com"],
     ["--oidc-provider-arn", "token.actions.githubusercontent.com"]),
    # valid options, but no `make synth` yet: the stacks the actions come from are missing
    (["--repository", "acme/network"], ['capture "prod"', "make synth"]),
])
def test_a_bad_option_is_exit_2_naming_it(tmp_path, args, names):
    r = run(tmp_path, *args)
    assert r.exit_code == 2, r.output
    for name in names:
        assert name in r.output


def test_a_capture_with_local_state_is_refused(tmp_path):
    text = EXAMPLE.read_text()
    local = text[:text.index('  backend "s3"')] + "}\n"
    r = run(tmp_path, "--repository", "acme/network", inventory=local)
    assert r.exit_code == 2 and 'capture "prod" > backend' in r.output and "make state-bucket" in r.output, r.output


def test_a_capture_state_where_the_roles_keep_theirs_is_refused(tmp_path):
    text = EXAMPLE.read_text().replace('key    = "mirrorcap/prod.tfstate"', 'key    = "mirrorcap-ci-roles/prod.tfstate"')
    r = run(tmp_path, "--repository", "acme/network", inventory=text)
    assert r.exit_code == 2 and 'backend "s3" > key' in r.output and "rewrite" in r.output, r.output
