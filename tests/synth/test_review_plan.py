"""The pull-request comment from a real `terraform show -json`: the example
deployed into moto (tests/tf_emulator.py), one source added, planned again.

Only the mirror sessions and what they depend on (target, filter, mirror ENI and
its security group, the instance source's data lookup) are applied (`-target`):
the comment is about sessions, and this keeps the run to seconds. Skips where
terraform or the hashicorp/aws mirror is absent. With MIRRORCAP_RECORD_REVIEW=1
it re-records tests/fixtures/review/, which tests/unit/test_workflow_review.py
reads on every machine.
"""

from __future__ import annotations

import json
import os
import re

import pytest
from typer.testing import CliRunner

import tf_emulator as T
from helpers import EXAMPLE, FIXTURES, ROOT, mirrorcap, synth
from mirrorcap.inventory import load
from mirrorcap.cli import app

TERRAFORM, TERRAFORM_VERSION = T.find_terraform()
MIRROR, NO_MIRROR = T.find_aws_mirror()

pytestmark = [
    pytest.mark.skipif(TERRAFORM is None, reason=f"needs terraform: {TERRAFORM_VERSION}"),
    pytest.mark.skipif(MIRROR is None, reason=f"needs the hashicorp/aws provider: {NO_MIRROR}"),
]

SESSIONS = "-target=aws_ec2_traffic_mirror_session.source"
RECORDED = FIXTURES / "review"


def test_a_pull_request_adding_one_source_gets_a_comment_naming_one_new_session(tmp_path):
    tf = T.Terraform(TERRAFORM, MIRROR, tmp_path / "tf-home")
    capture = load(EXAMPLE).captures[0]
    inv, wc = tmp_path / "inventory", tmp_path / "wc"
    inv.mkdir()
    with pytest.MonkeyPatch.context() as mp, T.emulator() as em:
        T.fill_moto_gaps(mp)
        ids = T.moto_account(em, capture)
        (inv / "capture.hcl").write_text(T.MOTO_ID.sub(lambda m: ids.get(m.group(0), m.group(0)), EXAMPLE.read_text()))
        lock = json.loads((ROOT / "capture.lock.json").read_text())
        lock["captures"] = {c: {ids[s]: n for s, n in by.items()} for c, by in lock["captures"].items()}
        (inv / "capture.lock.json").write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")

        def working_copy() -> None:
            r = synth(inv, review_hcl=False)
            assert r.returncode == 0, r.stderr
            # keeps .terraform and the local state across synths
            T.working_copy(inv / "cdktf.out" / "stacks" / capture.name, wc, T.emulator_override(MIRROR, em.url))

        working_copy()
        tf.ok(wc, "init", "-input=false", "-no-color")
        tf.ok(wc, "apply", "-input=false", "-no-color", "-auto-approve", SESSIONS, timeout=300)
        lock_before = (inv / "capture.lock.json").read_text()

        # The pull request: one more source, numbered by `sessions --write` as `make synth` does.
        ec2 = em.client("ec2", capture.region)
        new = ec2.create_network_interface(SubnetId=ids[capture.subnet_id])["NetworkInterface"]["NetworkInterfaceId"]
        hcl = inv / "capture.hcl"
        text, n = re.subn(r'^(capture "prod" \{\n)', rf'\1  source {{\n    eni_id      = "{new}"\n    description = "web-3"\n  }}\n',
                          hcl.read_text(), count=1, flags=re.M)
        assert n == 1
        hcl.write_text(text)
        r = mirrorcap("sessions", "--write", cwd=inv)
        assert r.returncode == 0, r.stderr
        lock_after = (inv / "capture.lock.json").read_text()
        working_copy()
        tf.ok(wc, "plan", "-input=false", "-no-color", SESSIONS, "-out=review.tfplan", timeout=240)
        plan_json = tf.ok(wc, "show", "-json", "review.tfplan").stdout
        plan_text = tf.ok(wc, "show", "-no-color", "review.tfplan").stdout

    files = {"plan.json": plan_json, "plan.txt": plan_text, "lock-before.json": lock_before, "lock-after.json": lock_after}
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    if os.environ.get("MIRRORCAP_RECORD_REVIEW") == "1":
        RECORDED.mkdir(exist_ok=True)
        for name, content in files.items():
            (RECORDED / name).write_text(content)
        (RECORDED / "new-source.txt").write_text(new + "\n")

    result = CliRunner().invoke(app, ["review", "comment", "--stack", "prod", "--plan-json", str(tmp_path / "plan.json"),
                                        "--plan-text", str(tmp_path / "plan.txt"), "--lock-before", str(tmp_path / "lock-before.json"),
                                        "--lock-after", str(tmp_path / "lock-after.json")])
    assert result.exit_code == 0, result.output
    body = result.output
    number = json.loads(lock_after)["captures"]["prod"][new]
    assert body.startswith("<!-- mirrorcap-review:prod -->\n")
    assert "**Plan: 1 to add, 0 to change, 0 to destroy.**" in body
    bullets = [line for line in body.splitlines() if line.startswith("- ")]
    # its monthly cost (one mirrored source, capacity.Prices), then the session in words
    assert bullets == [f'- `aws_ec2_traffic_mirror_session.source["{new}"]` (1 mirrored source): +$10.95',
                       f"- `{new}` web-3: new session {number}"], body
    assert f'aws_ec2_traffic_mirror_session.source["{new}"]' in body and "Resource changes (1)" in body
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in plan_text  # Terraform's own line agrees with ours
