"""make's laptop path (mirrorcap preflight / state-bucket, workflow/deploy.py) against moto: the state bucket
`make state-bucket` creates (versioned, encrypted, private, TLS only; a lock table
when the backend names one), and the preflight that runs before cdktn: the state
bucket missing, then there; destroy's prevent_destroy and confirmation."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

import tf_emulator as T
from helpers import minimal, write
from mirrorcap.cli import app
from mirrorcap.workflow import deploy

TERRAFORM, WHY = T.find_terraform()
BACKEND = '''
  backend "s3" {{
    bucket = "{bucket}"
    key    = "mirrorcap/test.tfstate"{extra}
  }}'''


@pytest.fixture
def aws(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield


def inventory(workdir, bucket="team-tfstate", extra="", body=""):
    return write(workdir, minimal(body + BACKEND.format(bucket=bucket, extra=extra)))


def run(*args, input=None):
    return CliRunner().invoke(app, list(args), input=input)


def test_state_bucket_is_created_versioned_encrypted_private_and_tls_only(aws, workdir):
    path = inventory(workdir)
    r = run("state-bucket", "--inventory", str(path))
    assert r.exit_code == 0, r.output
    assert "make state-bucket: created s3://team-tfstate in eu-west-1" in r.output
    s3 = boto3.client("s3", region_name="eu-west-1")
    assert s3.get_bucket_location(Bucket="team-tfstate")["LocationConstraint"] == "eu-west-1"
    assert s3.get_bucket_versioning(Bucket="team-tfstate")["Status"] == "Enabled"
    (rule,) = s3.get_bucket_encryption(Bucket="team-tfstate")["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket="team-tfstate")["PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4
    assert s3.get_bucket_ownership_controls(Bucket="team-tfstate")["OwnershipControls"]["Rules"] == [
        {"ObjectOwnership": "BucketOwnerEnforced"}]
    (stmt,) = json.loads(s3.get_bucket_policy(Bucket="team-tfstate")["Policy"])["Statement"]
    assert stmt["Effect"] == "Deny" and stmt["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert "locking: S3 native (use_lockfile): nothing to create" in r.output
    # again: nothing created, the settings reasserted, someone's later policy left alone
    s3.put_bucket_policy(Bucket="team-tfstate", Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "Theirs", "Effect": "Deny", "Principal": "*", "Action": "s3:DeleteBucket", "Resource": "arn:aws:s3:::team-tfstate"}]}))
    r = run("state-bucket", "--inventory", str(path))
    assert r.exit_code == 0 and "created" not in r.output
    assert json.loads(s3.get_bucket_policy(Bucket="team-tfstate")["Policy"])["Statement"][0]["Sid"] == "Theirs"


def test_a_kms_key_and_a_lock_table_when_the_backend_names_them(aws, workdir):
    key = boto3.client("kms", region_name="eu-west-1").create_key()["KeyMetadata"]["Arn"]
    path = inventory(workdir, extra=f'\n    kms_key_id = "{key}"\n    dynamodb_table = "tf-locks"')
    r = run("state-bucket", "--inventory", str(path))
    assert r.exit_code == 0, r.output
    (rule,) = boto3.client("s3", region_name="eu-west-1").get_bucket_encryption(Bucket="team-tfstate")[
        "ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
    table = boto3.client("dynamodb", region_name="eu-west-1").describe_table(TableName="tf-locks")["Table"]
    assert table["KeySchema"] == [{"AttributeName": "LockID", "KeyType": "HASH"}]
    assert "created the lock table tf-locks in eu-west-1" in r.output


def test_someone_elses_bucket_name_is_refused(aws, workdir, monkeypatch):
    from botocore.exceptions import ClientError

    class Denied:
        def head_bucket(self, Bucket):
            raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadBucket")

    class Session:
        def client(self, *a, **k):
            return Denied()
    with pytest.raises(deploy.Stop, match="exists but these credentials cannot use it .403.: bucket names are global"):
        deploy.ensure_state_bucket(Session(), "taken", "eu-west-1")


def test_no_backend_and_no_capture_are_usage_errors(aws, workdir):
    r = run("state-bucket", "--inventory", str(write(workdir, minimal())))
    assert r.exit_code == 2 and 'declares backend "s3"' in r.output
    r = run("state-bucket", "--inventory", str(inventory(workdir)), "--capture", "nope")
    assert r.exit_code == 2 and "no capture named 'nope'" in r.output


@pytest.mark.skipif(TERRAFORM is None, reason=f"the preflight checks terraform: {WHY}")
def test_preflight_names_the_missing_state_bucket_then_passes(aws, workdir):
    path = inventory(workdir)
    r = run("preflight", "diff", "--stack", "test", "--inventory", str(path))
    assert r.exit_code == 1
    assert r.output == ("make diff: the state bucket team-tfstate does not exist: create it once with `make state-bucket` "
                        "(versioned, encrypted, private)\n")
    assert run("state-bucket", "--inventory", str(path)).exit_code == 0
    r = run("preflight", "diff", "--stack", "test", "--inventory", str(path))
    assert r.exit_code == 0 and r.output == ""


@pytest.mark.skipif(TERRAFORM is None, reason=f"the preflight checks terraform: {WHY}")
def test_destroy_says_what_is_lost_and_needs_the_name(aws, workdir):
    boto3.client("s3", region_name="eu-west-1").create_bucket(Bucket="team-tfstate",
                                                               CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    kept = inventory(workdir)
    r = run("preflight", "destroy", "--stack", "test", "--inventory", str(kept), "--confirm", "test")
    assert r.exit_code == 1 and "prevent_destroy = true, so Terraform refuses to destroy it: set storage" in r.output
    gone = inventory(workdir, body="  storage {\n    prevent_destroy = false\n  }\n  archive {}\n")
    r = run("preflight", "destroy", "--stack", "test", "--inventory", str(gone), "--confirm", "test")
    assert r.exit_code == 0, r.output
    assert "the pcap volume (300 GiB st1): every pcap on it" in r.output and "the archive bucket" in r.output
    assert "its KMS key (scheduled for deletion" in r.output
    r = run("preflight", "destroy", "--stack", "test", "--inventory", str(gone), "--confirm", "prod")
    assert r.exit_code == 2 and "CONFIRM=prod is not the stack's name (test): nothing destroyed" in r.output
    r = run("preflight", "destroy", "--stack", "test", "--inventory", str(gone))  # CliRunner's stdin is no terminal
    assert r.exit_code == 2 and "CONFIRM=test" in r.output
