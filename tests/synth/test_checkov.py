"""checkov (offline) on the synthesized JSON: zero failed checks.

Nothing is skipped for the whole run: ACCEPTED names each finding that stays,
the one resource it is about, and why.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from helpers import ROOT

CHECKOV = os.environ.get("CHECKOV", str(ROOT / ".venv-checkov" / "bin" / "checkov"))

# The re-mirroring Lambda (`auto_mirror {}`, stack/remirror.py) and its log group only.
# checkov names them "resource.<logical name>" in Terraform JSON.
LAMBDA, LOGS = "resource.remirror", "resource.remirror_logs"
ACCEPTED = {
    # Every invocation reconciles the whole capture and a schedule invokes it every few
    # minutes: a failed event is redone by the next sweep; a DLQ would hold events nobody replays.
    ("CKV_AWS_116", LAMBDA): "dead-letter queue",
    # It only calls the EC2 API; in a VPC it would need a NAT gateway or an EC2 endpoint and gain no isolation.
    ("CKV_AWS_117", LAMBDA): "inside a VPC",
    # The zip is built by `make synth` from this repository; its SHA-256 is in the reviewed plan (source_code_hash).
    ("CKV_AWS_272", LAMBDA): "code signing",
    # Its environment holds resource IDs and tag selectors, no secret; Lambda encrypts it at rest with its own key.
    ("CKV_AWS_173", LAMBDA): "environment encrypted with a customer key",
    # A handful of EC2 API calls; every action is a JSON log line, the audit trail operators search.
    ("CKV_AWS_50", LAMBDA): "X-Ray tracing",
    # The lines hold only IDs and reasons; CloudWatch Logs encrypts at rest by default.
    ("CKV_AWS_158", LOGS): "log group with a customer KMS key",
}
# The pcap volumes' key policy (stack/kms.py), when the stack creates the key. In a key policy
# "Resource": "*" means this key and nothing else (KMS requires it); every statement is bounded
# by its principal (this account) and use by kms:ViaService (EBS in the capture's region).
KEY_POLICY = "data.pcap_key_policy"
ACCEPTED_KEY = {
    ("CKV_AWS_109", KEY_POLICY): "permissions management without resource constraint",
    ("CKV_AWS_111", KEY_POLICY): "write access without resource constraint",
    ("CKV_AWS_356", KEY_POLICY): "'*' as the resource",
}
# The alarm topic's key (stack/alarms.py), when the stack creates the topic: the same three, for the
# same reason; use is bounded by kms:ViaService (SNS in the capture's region) or to CloudWatch's alarms.
ALARM_KEY_POLICY = "data.alarm_key_policy"
ACCEPTED_ALARM_KEY = {(check, ALARM_KEY_POLICY): why for (check, _), why in ACCEPTED_KEY.items()}

# The archive bucket (`archive {}`, stack/archive.py).
BUCKET = "aws_s3_bucket.archive"
ACCEPTED_ARCHIVE = {
    # Server access logs need a second bucket (whose own logs would need a third); who wrote and read
    # which pcap is CloudTrail's S3 data events, the account's audit trail, not a per-stack bucket.
    ("CKV_AWS_18", BUCKET): "access logging",
    # Pcaps are production payloads kept for a retention period: a copy in a second region doubles
    # their exposure (and may cross a data-residency line) for data that is itself a copy.
    ("CKV_AWS_144", BUCKET): "cross-region replication",
    # Nothing consumes bucket events: each host logs its own uploads, mirrorcap-health reports a backlog.
    ("CKV2_AWS_62", BUCKET): "event notifications",
}
# The Athena workgroup's result bucket (`archive {}`, stack/athena.py): query results only, each a copy of
# what the indexes in the archive say, expired after a day.
RESULTS = "aws_s3_bucket.athena_results"
ACCEPTED_ATHENA = {
    # Who ran which query is Athena's own history and CloudTrail (StartQueryExecution); the results are
    # written by Athena for the caller, read back at once by the same caller.
    ("CKV_AWS_18", RESULTS): "access logging",
    # A copy of a day-old query result in a second region protects nothing: the query can be run again.
    ("CKV_AWS_144", RESULTS): "cross-region replication",
    # Nothing consumes result events: the CLI polls GetQueryExecution.
    ("CKV2_AWS_62", RESULTS): "event notifications",
}
# A fleet's NLB (`fleet {}`, stack/fleet.py).
NLB = "resource.fleet_nlb"
ACCEPTED_FLEET = {
    # NLB access logs record TLS requests only: a UDP 4789 listener would log nothing.
    ("CKV_AWS_91", NLB): "access logging",
}
# Cross-zone off is the fleet's default, chosen (docs/fleets.md): a node forwards only to hosts in its
# own AZ, so mirrored traffic pays no inter-AZ transfer; `cross_zone = true` turns it on (and the check passes).
ACCEPTED_ZONAL = {("CKV_AWS_152", NLB): "cross-zone load balancing"}


def run_checkov(stack_dir):
    result = subprocess.run([CHECKOV, "--config-file", str(ROOT / ".checkov.yaml"), "-f", str(stack_dir / "cdk.tf.json"), "-o", "json"],
                            capture_output=True, text=True, timeout=600)
    report = json.loads(result.stdout)
    return result.returncode, report["summary"], report["results"]["failed_checks"]


@pytest.mark.parametrize("fixture,stack", [("example", "prod"), ("edge", "blue"), ("edge", "green"), ("fleet", "fleet"),
                                           ("fleet", "solo")])
def test_checkov_passes(request, fixture, stack):
    work = request.getfixturevalue(fixture)
    rc, summary, failed = run_checkov(work / "cdktf.out" / "stacks" / stack)
    found = {(f["check_id"], f["resource"]) for f in failed}
    doc = json.loads((work / "cdktf.out" / "stacks" / stack / "cdk.tf.json").read_text())
    expected = set(ACCEPTED) if "remirror" in doc["resource"].get("aws_lambda_function", {}) else set()
    expected |= set(ACCEPTED_KEY) if "pcap_key" in doc["resource"].get("aws_kms_key", {}) else set()
    expected |= set(ACCEPTED_ALARM_KEY) if "alarm_key" in doc["resource"].get("aws_kms_key", {}) else set()
    expected |= set(ACCEPTED_ARCHIVE) if "archive" in doc["resource"].get("aws_s3_bucket", {}) else set()
    expected |= set(ACCEPTED_ATHENA) if "athena_results" in doc["resource"].get("aws_s3_bucket", {}) else set()
    nlb = doc["resource"].get("aws_lb", {}).get("fleet_nlb")
    expected |= set(ACCEPTED_FLEET) if nlb else set()
    expected |= set(ACCEPTED_ZONAL) if nlb and nlb["enable_cross_zone_load_balancing"] is False else set()
    assert found == expected  # nothing else fails; nothing accepted is stale
    assert summary["passed"] >= 25


def test_checkov_would_catch_a_public_instance(example, tmp_path):
    # The check is live: the same config fails a copy of the stack with a public IP and IMDSv1.
    doc = json.loads((example / "cdktf.out" / "stacks" / "prod" / "cdk.tf.json").read_text())
    inst = doc["resource"]["aws_instance"]["capture_instance"]
    inst["associate_public_ip_address"] = True
    inst["metadata_options"]["http_tokens"] = "optional"
    (tmp_path / "cdk.tf.json").write_text(json.dumps(doc))
    rc, summary, failed = run_checkov(tmp_path)
    assert rc != 0 and {"CKV_AWS_79", "CKV_AWS_88"} <= {f["check_id"] for f in failed}


# The CI roles stack (`make ci-roles`, stack/ci_roles.py), from the example's synthesized stack. Each finding is
# a statement whose Resource is "*", accepted for that statement's actions only:
CI_ACCEPTED = {
    # Refresh: Describe*/List*/Get* of EC2, CloudWatch, SNS, KMS... across every resource a stack has; most
    # of those reads support no resource-level permission at all, and the role writes nothing.
    ("CKV_AWS_356", "data.plan_permissions"): "'*' as the resource of reads",
    # Capture: what a stack creates (instances, volumes, ENIs, keys, sessions) has no ARN before AWS names it, so
    # the create calls cannot be scoped by resource; every action is named (no wildcard) and was recorded
    # being called (tests/synth/test_ci_roles.py); IAM writes are a separate statement scoped to mirrorcap-<capture>-*.
    ("CKV_AWS_356", "data.apply_permissions"): "'*' as the resource of the stacks' own create/change/delete calls",
    ("CKV_AWS_111", "data.apply_permissions"): "write access without resource constraint",
    ("CKV_AWS_109", "data.apply_permissions"): "permissions management (KMS key policy and grants, the archive's "
                                                 "bucket policy, the Lambda's permission) without resource constraint",
}


def test_checkov_passes_on_the_ci_roles(example, tmp_path):
    from helpers import mirrorcap
    r = mirrorcap("ci-roles", "--repository", "acme/network", "--out", str(tmp_path / "roles"), cwd=example)
    assert r.returncode == 0, r.stderr
    rc, summary, failed = run_checkov(tmp_path / "roles" / "stacks" / "mirrorcap-ci-roles")
    assert {(f["check_id"], f["resource"]) for f in failed} == set(CI_ACCEPTED)
    assert summary["passed"] >= 40
