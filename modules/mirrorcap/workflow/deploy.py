"""The laptop path's mirrorcap steps, for `make diff|deploy|destroy|output|state-bucket`:

- `preflight ACTION --stack NAME`: before cdktn runs (and prints a Node stack
  trace for anything that goes wrong), one line and a non-zero exit for what
  would stop it: an unknown stack, no AWS credentials, credentials AWS refuses,
  no terraform >= 1.10, a state bucket that does not exist. For `destroy`, what
  is lost, the pcap volume's `prevent_destroy`, and a typed confirmation.
- `state-bucket`: the S3 buckets the inventory's `backend "s3"` blocks name,
  created once: versioning, default encryption, public access blocked, owner-
  enforced, TLS only; S3 native locking needs nothing more (a `dynamodb_table`
  gets its table).

Its commands are `mirrorcap preflight ACTION` and `mirrorcap state-bucket` (cli/), make's internal steps.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterator, Optional

from ..errors import AWS_UNREACHABLE, FINDINGS, USAGE, MirrorcapError
MIN_TERRAFORM = (1, 10)


class Stop(Exception):
    """One line for the person at the terminal, and the exit code."""

    def __init__(self, line: str, code: int = FINDINGS):
        super().__init__(line)
        self.code = code


def _capture(inventory: Path, stack: str):
    from ..inventory import load
    try:
        inv = load(inventory)
    except MirrorcapError as exc:
        first = exc.problems[0]
        raise Stop(f"{first.file}: {first.field + ': ' if first.field else ''}{first.message} (run `mirrorcap validate` for "
                   "every problem)", USAGE)
    names = [c.name for c in inv.captures]
    if stack not in names:
        raise Stop(f"no capture named {stack!r} in {inventory}: use one of {', '.join(names)}", USAGE)
    return inv.capture(stack)


def _session(backend_region: str, profile: Optional[str] = None):
    import boto3
    return boto3.Session(profile_name=profile, region_name=backend_region)


def credentials(region: str) -> str:
    """The caller's ARN, or Stop: no credentials, or credentials AWS does not accept."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ProfileNotFound
    fix = "set AWS_PROFILE (after `aws sso login`) or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for the capture's account"
    try:
        session = _session(region)
        if session.get_credentials() is None:
            raise Stop(f"no AWS credentials: {fix}", AWS_UNREACHABLE)
        return session.client("sts").get_caller_identity()["Arn"]
    except ProfileNotFound as exc:
        raise Stop(f"{exc}: check AWS_PROFILE against ~/.aws/config", AWS_UNREACHABLE)
    except NoCredentialsError:
        raise Stop(f"no AWS credentials: {fix}", AWS_UNREACHABLE)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise Stop(f"AWS refused the credentials ({err.get('Code')}: {err.get('Message', '')}): {fix}", AWS_UNREACHABLE)
    except BotoCoreError as exc:
        raise Stop(f"cannot reach AWS with these credentials ({exc}): check the network, or log in again (`aws sso login`)", AWS_UNREACHABLE)


def terraform() -> str:
    path = shutil.which("terraform") or shutil.which("tofu")
    if path is None:
        raise Stop("no terraform on PATH: install Terraform >= 1.10 (or OpenTofu >= 1.10), which cdktn runs", USAGE)
    out = subprocess.run([path, "version", "-json"], capture_output=True, text=True, env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull})
    try:
        version = json.loads(out.stdout)["terraform_version"]
    except (ValueError, KeyError):
        raise Stop(f"`{path} version -json` did not answer: install Terraform >= 1.10", USAGE)
    if tuple(int(x) for x in re.findall(r"\d+", version)[:2]) < MIN_TERRAFORM:
        raise Stop(f"terraform {version} is older than 1.10 (S3 native state locking): install a current Terraform", USAGE)
    return version


def state_bucket_exists(capture) -> None:
    """The backend's bucket exists and answers, or Stop saying how to create it."""
    b = capture.backend
    if b.kind != "s3" or b.role_arn:  # local state; or the backend assumes its own role to reach the bucket
        return
    from botocore.exceptions import BotoCoreError, ClientError
    try:
        _session(b.region or capture.region).client("s3").head_bucket(Bucket=b.bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise Stop(f"the state bucket {b.bucket} does not exist: create it once with `make state-bucket` "
                       f"(versioned, encrypted, private)")
        raise Stop(f"the state bucket {b.bucket} answers {code}: these credentials cannot use it (another account's "
                   "bucket, or s3:ListBucket missing)", AWS_UNREACHABLE)
    except BotoCoreError as exc:
        raise Stop(f"cannot reach the state bucket {b.bucket}: {exc}", AWS_UNREACHABLE)


def destroy_warning(capture) -> list[str]:
    """What `cdktn destroy` of this capture loses, from the inventory."""
    s = capture.storage
    lost = ["the capture host(s), the mirror target, filter and every mirror session (mirroring stops)",
            f"the pcap volume ({s.size_gib} GiB {s.type}{' per host' if capture.fleet else ''}): every pcap on it"]
    if not s.kms_key_id:
        lost.append("its KMS key (scheduled for deletion: snapshots and archived pcaps it encrypts become unreadable)")
    if capture.archive is not None:
        lost.append("the archive bucket, once emptied (Terraform refuses a bucket that still holds pcaps)")
    return lost


def confirm_destroy(capture, confirm: Optional[str], interactive: bool) -> None:
    if capture.storage.prevent_destroy:
        raise Stop(f'capture "{capture.name}" keeps its pcap volume with prevent_destroy = true, so Terraform refuses to '
                   f'destroy it: set storage {{ prevent_destroy = false }} in its block, run `make synth`, then `make destroy '
                   f'STACK={capture.name}` again')
    print(f'make destroy: destroying stack "{capture.name}" deletes:')
    for item in destroy_warning(capture):
        print(f"  - {item}")
    if confirm == capture.name:
        return
    if confirm:
        raise Stop(f"CONFIRM={confirm} is not the stack's name ({capture.name}): nothing destroyed", USAGE)
    if not interactive:
        raise Stop(f"no terminal to confirm on: run `make destroy STACK={capture.name} CONFIRM={capture.name}`", USAGE)
    answer = input(f"Type {capture.name} to destroy it (copy the pcaps you need first): ").strip()
    if answer != capture.name:
        raise Stop("not confirmed: nothing destroyed", USAGE)


def preflight(action: str, stack: str | None, inventory: Path, confirm: str | None, interactive: bool) -> None:
    """Return when cdktn can run `make ACTION`; otherwise Stop with one line saying what to do."""
    if action == "state-bucket":
        from ..inventory import load
        captures = load(inventory).captures
        credentials(next((c.backend.region or c.region for c in captures if c.backend.kind == "s3"), captures[0].region))
        return
    if not stack:
        raise Stop(f"usage: make {action} STACK=<capture name>", USAGE)
    capture = _capture(inventory, stack)
    credentials(capture.backend.region or capture.region)
    terraform()
    state_bucket_exists(capture)
    if action == "destroy":
        confirm_destroy(capture, confirm, interactive)


# ---------------------------------------------------------------------------
# The remote-state bucket


def ensure_state_bucket(session, bucket: str, region: str, kms_key_id: str = "", dynamodb_table: str = "") -> list[str]:
    """Create the bucket if missing and make sure it is versioned, encrypted, private,
    owner-enforced and TLS-only (the policy only on a bucket this created: an existing
    policy is someone's). What was done, one line each."""
    from botocore.exceptions import ClientError
    s3 = session.client("s3", region_name=region)
    done = []
    try:
        s3.head_bucket(Bucket=bucket)
        created = False
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) not in ("404", "NoSuchBucket", "NotFound"):
            raise Stop(f"the bucket {bucket} exists but these credentials cannot use it ({exc.response['Error'].get('Code')}): "
                       "bucket names are global: pick another in backend \"s3\" { bucket = ... }", USAGE)
        args = {"Bucket": bucket}
        if region != "us-east-1":  # us-east-1 refuses a LocationConstraint naming itself
            args["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**args)
        created = True
        done.append(f"created s3://{bucket} in {region}")
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    rule = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key_id} if kms_key_id else {"SSEAlgorithm": "AES256"}
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": rule, "BucketKeyEnabled": bool(kms_key_id)}]})
    done.append(f"s3://{bucket}: public access blocked, owner-enforced, versioning on, encrypted "
                f"({'aws:kms ' + kms_key_id if kms_key_id else 'SSE-S3'})")
    if created:
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Sid": "TLSOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}))
        done.append(f"s3://{bucket}: TLS only (bucket policy)")
    if dynamodb_table:
        ddb = session.client("dynamodb", region_name=region)
        try:
            ddb.describe_table(TableName=dynamodb_table)
        except ddb.exceptions.ResourceNotFoundException:
            ddb.create_table(TableName=dynamodb_table, BillingMode="PAY_PER_REQUEST",
                             AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
                             KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}])
            done.append(f"created the lock table {dynamodb_table} in {region}")
    else:
        done.append("locking: S3 native (use_lockfile): nothing to create")
    return done


def state_buckets(inventory: Path, capture: str | None) -> Iterator[str]:
    """Create the state buckets the inventory's backend "s3" blocks name; what was done, one line each."""
    from ..inventory import load
    try:
        captures = [c for c in load(inventory).captures if capture in (None, c.name)]
    except MirrorcapError as exc:
        raise Stop(str(exc.problems[0]), USAGE)
    if not captures:
        raise Stop(f"no capture named {capture!r} in {inventory}", USAGE)
    buckets = {}
    for c in captures:
        b = c.backend
        if b.kind == "s3":
            buckets.setdefault((b.bucket, b.region or c.region), (b.kms_key_id, b.dynamodb_table))
    if not buckets:
        raise Stop(f'no capture in {inventory} declares backend "s3" {{ bucket = "..." }}: nothing to create', USAGE)
    for (bucket, region), (kms, table) in sorted(buckets.items()):
        yield from ensure_state_bucket(_session(region), bucket, region, kms, table)
