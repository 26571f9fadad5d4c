"""What `make ci-roles` builds the GitHub Actions roles from: the repository, the branch (or environment)
the apply runs on, the OIDC provider, and, from the inventory, each stack's state location.

Pure: `settings()` validates everything before anything is written; a bad value is a
MirrorcapError naming the option and the fix (exit 2).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from .errors import MirrorcapError, Problem
from .inventory.model import Inventory

OIDC_HOST = "token.actions.githubusercontent.com"
# The roles' names: the workflows' MIRRORCAP_PLAN_ROLE_ARN / MIRRORCAP_APPLY_ROLE_ARN end in them.
PLAN_ROLE, APPLY_ROLE = "mirrorcap-plan", "mirrorcap-apply"
# The roles stack's own state, in the captures' state bucket, outside every capture's state prefix
# (the apply role may write those: it must not be able to rewrite the state of its own definition).
STATE_KEY = "mirrorcap-ci-roles/terraform.tfstate"

REPOSITORY = re.compile(r"(?!-)[A-Za-z0-9-]{1,39}/(?!\.\.?$)[A-Za-z0-9._-]{1,100}")
# A branch as GitHub's ref names allow it, minus what an IAM condition would read as a wildcard (* ?).
BRANCH = re.compile(r"(?![/.])(?!.*(?:\.\.|//|@\{|\.lock$|[/.]$))[A-Za-z0-9._/-]{1,200}")
ENVIRONMENT = re.compile(r"[A-Za-z0-9._-]{1,255}")
OIDC_ARN = re.compile(rf"arn:aws(?:-[a-z]+)*:iam::\d{{12}}:oidc-provider/{re.escape(OIDC_HOST)}")


@dataclass(frozen=True)
class State:
    """One capture's Terraform state, as the roles must reach it."""

    bucket: str
    prefix: str  # objects the roles read (and the apply role writes): "mirrorcap/*", or the key itself at the bucket's root
    dynamodb_table: str = ""
    kms_key_id: str = ""
    region: str = ""


@dataclass(frozen=True)
class CiRoles:
    repository: str  # owner/name
    branch: str  # the apply runs on it (pushes), the drift check too (schedules run on the default branch)
    environment: str  # when set, the apply role trusts this environment instead of the branch
    oidc_provider_arn: str  # an existing provider; empty: the roles stack creates it
    captures: tuple[str, ...]  # the IAM names each stack creates start with mirrorcap-<capture>-
    states: tuple[State, ...]
    state_bucket: str  # where the roles stack keeps its own state (STATE_KEY)
    state_region: str

    @property
    def plan_subjects(self) -> list[str]:
        """GitHub's `sub` claims the plan role trusts: pull requests, the branch (drift check, a hand-run plan)
        and its merge queue (a merge_group run's ref is refs/heads/gh-readonly-queue/<branch>/pr-<n>-<sha>)."""
        repo = f"repo:{self.repository}"
        return [f"{repo}:pull_request", f"{repo}:ref:refs/heads/{self.branch}",
                f"{repo}:ref:refs/heads/gh-readonly-queue/{self.branch}/*"]

    @property
    def apply_subjects(self) -> list[str]:
        repo = f"repo:{self.repository}"
        return [f"{repo}:environment:{self.environment}"] if self.environment else [f"{repo}:ref:refs/heads/{self.branch}"]


def _state_prefix(key: str) -> str:
    folder = posixpath.dirname(key)
    return f"{folder}/*" if folder else key


def _bad(option: str, value: str, what: str, fix: str) -> MirrorcapError:
    return MirrorcapError([Problem("command line", option, f"{value!r} is {what}", fix)])


def settings(inventory: Inventory, *, repository: str, branch: str = "main", environment: str = "",
             oidc_provider_arn: str = "") -> CiRoles:
    if not REPOSITORY.fullmatch(repository or ""):
        raise _bad("--repository", repository, "not a GitHub repository", "give it as OWNER/NAME, e.g. --repository acme/network")
    if not BRANCH.fullmatch(branch or ""):
        raise _bad("--branch", branch, "not a branch name IAM can match exactly",
                   "give the default branch the apply workflow runs on, e.g. --branch main (letters, digits, . _ - /)")
    if environment and not ENVIRONMENT.fullmatch(environment):
        raise _bad("--environment", environment, "not a GitHub environment name this role can trust",
                   "use letters, digits, . _ - (e.g. --environment mirrorcap), or leave it out to trust the branch")
    if oidc_provider_arn and not OIDC_ARN.fullmatch(oidc_provider_arn):
        raise _bad("--oidc-provider-arn", oidc_provider_arn, "not the ARN of GitHub's OIDC provider",
                   f"give arn:aws:iam::<account>:oidc-provider/{OIDC_HOST}, or leave it out to create the provider")
    remote = [c for c in inventory.captures if c.backend.kind == "s3"]
    local = [c.name for c in inventory.captures if c.backend.kind != "s3"]
    if not inventory.captures or local:
        raise MirrorcapError([Problem(inventory.path, f'capture "{local[0]}" > backend' if local else "capture",
                                      "keeps its state on the machine that runs Terraform, which a CI runner loses"
                                      if local else "no capture: no stack for the roles to reach",
                                      'give every capture backend "s3" { bucket = "..." } (docs/inventory.md), create the bucket '
                                      "with make state-bucket, then run make ci-roles again")])
    states = tuple(dict.fromkeys(State(c.backend.bucket, _state_prefix(c.backend.key), c.backend.dynamodb_table,
                                       c.backend.kms_key_id, c.backend.region) for c in remote))
    first = remote[0].backend
    writable = [s.prefix for s in states if s.bucket == first.bucket]
    if any(STATE_KEY == p or (p.endswith("/*") and STATE_KEY.startswith(p[:-1])) for p in writable):
        raise MirrorcapError([Problem(inventory.path, f'capture "{remote[0].name}" > backend "s3" > key',
                                      f"the CI roles keep their own state at {first.bucket}/{STATE_KEY}, which the apply role "
                                      "could then rewrite", 'keep capture state keys outside mirrorcap-ci-roles/ (e.g. key = '
                                      '"mirrorcap/<name>.tfstate")')])
    return CiRoles(repository=repository, branch=branch, environment=environment, oidc_provider_arn=oidc_provider_arn,
                   captures=tuple(c.name for c in inventory.captures), states=states, state_bucket=first.bucket,
                   state_region=first.region)
