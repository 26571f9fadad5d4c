"""checkov (offline) on the synthesized JSON: zero failed checks.

Skips live in .checkov.yaml, each with its justification.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import ROOT
from test_synth import edge, example  # noqa: F401  (module-scoped synth fixtures)

CHECKOV = os.environ.get("CHECKOV", str(ROOT / ".venv-checkov" / "bin" / "checkov"))


def run_checkov(stack_dir):
    result = subprocess.run([CHECKOV, "--config-file", str(ROOT / ".checkov.yaml"), "-f", str(stack_dir / "cdk.tf.json"), "-o", "json"],
                            capture_output=True, text=True, timeout=600)
    report = json.loads(result.stdout)
    return result.returncode, report["summary"], report["results"]["failed_checks"]


@pytest.mark.parametrize("fixture,stack", [("example", "prod"), ("edge", "blue"), ("edge", "green")])
def test_checkov_passes(request, fixture, stack):
    work = request.getfixturevalue(fixture)
    rc, summary, failed = run_checkov(work / "cdktf.out" / "stacks" / stack)
    assert [(f["check_id"], f["resource"]) for f in failed] == []
    assert summary["failed"] == 0 and summary["passed"] >= 25 and rc == 0


def test_checkov_would_catch_a_public_instance(example, tmp_path):
    # The check is live: the same config fails a copy of the stack with a public IP and IMDSv1.
    doc = json.loads((example / "cdktf.out" / "stacks" / "prod" / "cdk.tf.json").read_text())
    inst = doc["resource"]["aws_instance"]["capture_instance"]
    inst["associate_public_ip_address"] = True
    inst["metadata_options"]["http_tokens"] = "optional"
    (tmp_path / "cdk.tf.json").write_text(json.dumps(doc))
    rc, summary, failed = run_checkov(tmp_path)
    assert rc != 0 and {"CKV_AWS_79", "CKV_AWS_88"} <= {f["check_id"] for f in failed}
