"""account.aws.Access, the CLI's client factory, against moto (STS and EC2 mocked by moto, not by us)."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from mirrorcap.account_checks.clients import Access

REGION = "eu-west-1"


@pytest.fixture
def base_credentials(monkeypatch, tmp_path):
    for k, v in {"AWS_ACCESS_KEY_ID": "AKIABASEBASEBASEBASE", "AWS_SECRET_ACCESS_KEY": "base"}.items():
        monkeypatch.setenv(k, v)
    config = tmp_path / "credentials"
    config.write_text("[audit]\naws_access_key_id = AKIAPROFILEPROFILEPR\naws_secret_access_key = profile\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(config))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))


def key_of(client) -> str:
    return client._request_signer._credentials.get_frozen_credentials().access_key


def test_default_chain_profile_and_region(base_credentials):
    """Building a client calls nothing: the credentials it signs with are read where boto3 reads them."""
    assert key_of(Access().ec2(REGION)) == "AKIABASEBASEBASEBASE"
    ec2 = Access(profile="audit").ec2("ap-northeast-1")
    assert key_of(ec2) == "AKIAPROFILEPROFILEPR"
    assert ec2.meta.region_name == "ap-northeast-1"  # the capture's region, always


def test_an_assumed_role_signs_every_call_with_the_role_session(base_credentials):
    with mock_aws():  # moto's STS hands out session credentials for any role its IAM knows
        role = boto3.client("iam", region_name=REGION).create_role(
            RoleName="audit", AssumeRolePolicyDocument='{"Version":"2012-10-17","Statement":[]}')["Role"]["Arn"]
        ec2 = Access(profile="audit", role_arn=role).ec2(REGION)
        key = key_of(ec2)
        assert key.startswith("ASIA") and key not in ("AKIABASEBASEBASEBASE", "AKIAPROFILEPROFILEPR")
        assert ec2.describe_vpcs()["Vpcs"]  # the role's credentials work against the account
