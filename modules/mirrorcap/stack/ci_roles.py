"""The GitHub Actions roles as a stack of their own (`make ci-roles`): GitHub's OIDC provider (or an
existing one), the read-only plan role and the apply role, each trusting one repository and the
events it is for, each allowed what Terraform calls for the capture stacks' resource types
(stack/ci_actions.py) and their state. The capture stacks are not touched.
"""

from __future__ import annotations

from cdktn import S3Backend, TerraformOutput, TerraformStack
from constructs import Construct
from cdktn_provider_aws.iam_openid_connect_provider import IamOpenidConnectProvider
from cdktn_provider_aws.iam_role import IamRole
from cdktn_provider_aws.iam_role_policy import IamRolePolicy
from cdktn_provider_aws.provider import AwsProvider, AwsProviderDefaultTags

from ..ci_settings import APPLY_ROLE, OIDC_HOST, PLAN_ROLE, STATE_KEY, CiRoles
from ..contract import MANAGED_BY
from . import ci_actions as A
from .policy import policy_document
from .refs import ref

STACK = "mirrorcap-ci-roles"
# IAM's default: the workflows ask for one-hour sessions (role-duration-seconds: 3600).
SESSION_SECONDS = 3600


def _trust(provider_arn: str, subjects: list[str]) -> dict:
    # StringLike only where a subject has a wildcard (the merge queue's refs): an exact subject stays exact.
    exact = [s for s in subjects if "*" not in s]
    like = [s for s in subjects if "*" in s]
    condition = {"StringEquals": {f"{OIDC_HOST}:aud": "sts.amazonaws.com"}}
    if exact and not like:
        condition["StringEquals"][f"{OIDC_HOST}:sub"] = exact
    else:
        condition["StringLike"] = {f"{OIDC_HOST}:sub": subjects}
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "GitHubActions", "Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
        "Principal": {"Federated": provider_arn}, "Condition": condition}]}


def _state_statements(s: CiRoles, write: bool) -> list[dict]:
    """Terraform's S3 backend: it lists the workspaces (prefix env:/), reads the state, and to apply
    writes it and its lock object `<key>.tflock` (S3 native locking), which it then deletes."""
    out = []
    for n, bucket in enumerate(dict.fromkeys(st.bucket for st in s.states)):
        # A key in a folder: the folder (new stacks need no new role); a key at the bucket's root: it and its lock.
        objects = [f"arn:aws:s3:::{bucket}/{o}" for st in s.states if st.bucket == bucket
                   for o in ([st.prefix] if st.prefix.endswith("/*") else [st.prefix, f"{st.prefix}.tflock"])]
        out += [
            {"Sid": f"StateList{n}", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [f"arn:aws:s3:::{bucket}"],
             "Condition": {"StringLike": {"s3:prefix": ["env:/*"]}}},
            {"Sid": f"StateRead{n}", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": objects},
        ]
        if write:
            out += [{"Sid": f"StateWrite{n}", "Effect": "Allow", "Action": ["s3:PutObject"], "Resource": objects},
                    {"Sid": f"StateUnlock{n}", "Effect": "Allow", "Action": ["s3:DeleteObject"],
                     "Resource": [o if o.endswith(".tflock") else f"{o}.tflock" for o in objects if not o.endswith(".tfstate")]}]
    tables = sorted({(st.region, st.dynamodb_table) for st in s.states if st.dynamodb_table})
    if write and tables:
        out.append({"Sid": "StateLockTable", "Effect": "Allow", "Action": ["dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem"],
                    "Resource": [f"arn:aws:dynamodb:{region}:*:table/{table}" for region, table in tables]})
    keys = sorted({st.kms_key_id for st in s.states if st.kms_key_id})
    if keys:  # a state bucket encrypted with a customer-managed key (backend "s3" { kms_key_id })
        out.append({"Sid": "StateKey", "Effect": "Allow", "Resource": keys,
                    "Action": ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"] if write else ["kms:Decrypt"]})
    return out


def _capture_iam(s: CiRoles) -> list[str]:
    """The IAM roles and instance profiles the capture stacks create: mirrorcap-<capture>-<role>."""
    return [f"arn:aws:iam::*:{kind}/mirrorcap-{c}-*" for c in s.captures for kind in ("role", "instance-profile")]


def plan_policy(s: CiRoles, types: set[str]) -> dict:
    reads = A.read_actions(types)
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "Refresh", "Effect": "Allow", "Action": [a for a in reads if not a.startswith("iam:")], "Resource": ["*"]},
        {"Sid": "RefreshIam", "Effect": "Allow", "Action": [a for a in reads if a.startswith("iam:")], "Resource": _capture_iam(s)},
        *_state_statements(s, write=False)]}


def apply_policy(s: CiRoles, types: set[str], protected: list[str]) -> dict:
    actions = sorted(set(A.read_actions(types)) | set(A.write_actions(types)))
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "Capture", "Effect": "Allow", "Action": [a for a in actions if not a.startswith("iam:")], "Resource": ["*"]},
        {"Sid": "CaptureIam", "Effect": "Allow", "Resource": _capture_iam(s),
         "Action": [a for a in actions if a.startswith("iam:") and a != "iam:PassRole"]},
        # Handing a capture role to EC2 (the host's instance profile, a fleet's launch template) or to Lambda.
        {"Sid": "PassCaptureRoles", "Effect": "Allow", "Action": ["iam:PassRole"], "Resource": _capture_iam(s)[::2],
         "Condition": {"StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com", "lambda.amazonaws.com"]}}},
        *_state_statements(s, write=True),
        # Whatever the allows above match, never the CI roles and their provider: no way to raise its own rights.
        {"Sid": "NotTheCiRoles", "Effect": "Deny", "Action": ["iam:*"], "Resource": protected}]}


class CiRolesStack(TerraformStack):
    def __init__(self, scope: Construct, s: CiRoles, types: set[str]):
        super().__init__(scope, STACK)
        AwsProvider(self, "aws", region=s.state_region,
                    default_tags=[AwsProviderDefaultTags(tags={MANAGED_BY[0]: MANAGED_BY[1], "mirrorcap:stack": STACK})])
        S3Backend(self, bucket=s.state_bucket, key=STATE_KEY, region=s.state_region, encrypt=True, use_lockfile=True)
        if s.oidc_provider_arn:
            provider_arn = s.oidc_provider_arn
        else:
            # AWS no longer checks the thumbprint of GitHub's provider (it trusts its certificate authorities).
            IamOpenidConnectProvider(self, "github", url=f"https://{OIDC_HOST}", client_id_list=["sts.amazonaws.com"])
            provider_arn = ref("aws_iam_openid_connect_provider", "github", "arn")
        roles = {}
        for logical, name, subjects, what in (
                ("plan", PLAN_ROLE, s.plan_subjects, "read-only: pull-request plans and the drift check"),
                ("apply", APPLY_ROLE, s.apply_subjects, "applies the reviewed plans")):
            roles[logical] = IamRole(
                self, f"{logical}_role", name=name, description=f"mirrorcap GitHub Actions, {s.repository}: {what}",
                max_session_duration=SESSION_SECONDS,
                assume_role_policy=policy_document(self, f"{logical}_trust", _trust(provider_arn, subjects)))
        protected = [ref("aws_iam_role", "plan_role", "arn"), ref("aws_iam_role", "apply_role", "arn"), provider_arn]
        for logical, doc in (("plan", plan_policy(s, types)), ("apply", apply_policy(s, types, protected))):
            IamRolePolicy(self, f"{logical}_policy", name=f"mirrorcap-{logical}", role=roles[logical].name,
                          policy=policy_document(self, f"{logical}_permissions", doc))
            TerraformOutput(self, f"{logical}_role_arn", value=roles[logical].arn,
                            description=f"repository variable MIRRORCAP_{logical.upper()}_ROLE_ARN")
