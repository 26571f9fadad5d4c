"""The two halves of the CI roles' proof (tests/synth/test_ci_roles.py), each on its own:

- tests/iam_calls.py reads requests moto recorded while Terraform ran (tests/fixtures/ci_roles/
  recorded.jsonl: real lines, signatures blanked) as the IAM action and resource they need;
- tests/iam_policy.py evaluates an identity policy as IAM does, as far as the roles use it.
"""

from __future__ import annotations

import json

import pytest

from helpers import FIXTURES
from iam_calls import Call, call_of
from iam_policy import allows


def recorded() -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / "ci_roles" / "recorded.jsonl").read_text().splitlines()]


def test_each_recorded_request_is_the_action_iam_checks():
    got = [(str(c), c.context) for c in (call_of(e, "123456789012") for e in recorded())]
    state = "arn:aws:s3:::example-terraform-state"
    assert got == [
        # the S3 backend: the workspace listing is ListObjectsV2 (s3:ListBucket, with its prefix), a HEAD is GetObject,
        # the lock is a conditional PutObject of <key>.tflock
        (f"s3:ListBucket on {state}", (("s3:prefix", "env:/"),)),
        (f"s3:GetObject on {state}/mirrorcap/prod.tfstate", ()),
        ("ec2:DeleteTrafficMirrorFilter", ()),  # EC2's query protocol: Action=
        (f"s3:PutObject on {state}/mirrorcap/prod.tfstate.tflock", ()),
        ("kms:CreateKey", ()),  # JSON: X-Amz-Target
        ("cloudwatch:PutMetricAlarm", ()),  # signed as "monitoring"
        (f"s3:PutObject on {state}/mirrorcap/prod.tfstate", ()),
        ("iam:CreateInstanceProfile on arn:aws:iam::123456789012:instance-profile/mirrorcap-prod-host", ()),
    ]


def test_an_unsigned_or_unknown_request_is_refused_not_guessed():
    entry = recorded()[0]
    with pytest.raises(LookupError, match="unsigned"):
        call_of({**entry, "headers": {}}, "1")
    with pytest.raises(LookupError, match="no s3 operation"):
        call_of({**entry, "method": "PATCH"}, "1")


POLICY = {"Version": "2012-10-17", "Statement": [
    {"Sid": "Read", "Effect": "Allow", "Action": ["ec2:Describe*"], "Resource": ["*"]},
    {"Sid": "Iam", "Effect": "Allow", "Action": ["iam:PutRolePolicy"], "Resource": ["arn:aws:iam::*:role/mirrorcap-prod-*"]},
    {"Sid": "List", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": ["arn:aws:s3:::b"],
     "Condition": {"StringLike": {"s3:prefix": ["env:/*"]}}},
    {"Sid": "No", "Effect": "Deny", "Action": ["iam:*"], "Resource": ["arn:aws:iam::1:role/mirrorcap-prod-admin"]},
]}


@pytest.mark.parametrize("call,allowed", [
    (Call("ec2:DescribeInstances"), True),
    (Call("EC2:describevolumes"), True),  # action names are case-insensitive
    (Call("ec2:RunInstances"), False),
    (Call("iam:PutRolePolicy", "arn:aws:iam::1:role/mirrorcap-prod-host"), True),
    (Call("iam:PutRolePolicy", "arn:aws:iam::1:role/other"), False),  # resource scoping
    (Call("iam:PutRolePolicy", "*"), False),
    (Call("iam:PutRolePolicy", "arn:aws:iam::1:role/mirrorcap-prod-admin"), False),  # an explicit Deny wins
    (Call("s3:ListBucket", "arn:aws:s3:::b", (("s3:prefix", "env:/"),)), True),
    (Call("s3:ListBucket", "arn:aws:s3:::b", (("s3:prefix", "secrets/"),)), False),
    (Call("s3:ListBucket", "arn:aws:s3:::b"), False),  # a condition key the request lacks fails the condition
    (Call("s3:ListBucket", "arn:aws:s3:::bb", (("s3:prefix", "env:/"),)), False),
])
def test_the_evaluator_reads_policies_as_iam_does(call, allowed):
    assert allows(POLICY, call) is allowed


def test_the_evaluator_refuses_what_it_does_not_evaluate():
    for odd in ({"NotAction": ["x:Y"]}, {"Condition": {"ArnLike": {"aws:SourceArn": "x"}}}):
        policy = {"Statement": [{"Sid": "S", "Effect": "Allow", "Action": "ec2:X", "Resource": "*", **odd}]}
        with pytest.raises(ValueError):
            allows(policy, Call("ec2:X"))
