"""Apply what was reviewed, on real plans: the example deployed into moto
(tests/tf_emulator.py), a pull request adding two sources planned and recorded
(`mirrorcap review record`), then the merge's fresh plans checked with `mirrorcap
review verify`, as the apply workflow does:

- planned again unchanged: the same fingerprint (two real plans agree), applied;
- after an apply that stopped halfway (one of the two sessions created): what is
  left is still the reviewed plan, applied;
- the configuration changed after the review (a description): refused, naming it.

Sessions and what they depend on only (`-target`), as test_review_plan.py, to keep
it to seconds. Skips where terraform or the hashicorp/aws mirror is absent.
"""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

import tf_emulator as T
from helpers import EXAMPLE, ROOT, mirrorcap, synth
from mirrorcap.cli import app
from mirrorcap.inventory import load
from mirrorcap.workflow import reviewed

TERRAFORM, TERRAFORM_VERSION = T.find_terraform()
MIRROR, NO_MIRROR = T.find_aws_mirror()

pytestmark = [
    pytest.mark.skipif(TERRAFORM is None, reason=f"needs terraform: {TERRAFORM_VERSION}"),
    pytest.mark.skipif(MIRROR is None, reason=f"needs the hashicorp/aws provider: {NO_MIRROR}"),
]

SESSIONS = "-target=aws_ec2_traffic_mirror_session.source"


def verify(tmp_path, plan_json: str, record: dict) -> tuple[int, str]:
    (tmp_path / "fresh.json").write_text(plan_json)
    (tmp_path / "reviewed.json").write_text(json.dumps(record))
    r = CliRunner().invoke(app, ["review", "verify", "--stack", "prod", "--plan-json", str(tmp_path / "fresh.json"),
                                 "--reviewed", str(tmp_path / "reviewed.json"), "--report", str(tmp_path / "report.md")])
    return r.exit_code, r.output.strip()


def test_a_merge_applies_the_reviewed_plan_and_its_remainder_and_refuses_a_change(tmp_path):
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
            T.working_copy(inv / "cdktf.out" / "stacks" / capture.name, wc, T.emulator_override(MIRROR, em.url))

        def plan(*extra: str) -> str:
            tf.ok(wc, "plan", "-input=false", "-no-color", *(extra or (SESSIONS,)), "-out=tfplan", timeout=240)
            return tf.ok(wc, "show", "-json", "tfplan").stdout

        working_copy()
        tf.ok(wc, "init", "-input=false", "-no-color")
        tf.ok(wc, "apply", "-input=false", "-no-color", "-auto-approve", SESSIONS, timeout=300)

        # The pull request: two more sources.
        ec2 = em.client("ec2", capture.region)
        new = [ec2.create_network_interface(SubnetId=ids[capture.subnet_id])["NetworkInterface"]["NetworkInterfaceId"]
               for _ in range(2)]
        hcl = inv / "capture.hcl"
        blocks = "".join(f'  source {{\n    eni_id      = "{e}"\n    description = "web-{n}"\n  }}\n' for n, e in enumerate(new, 3))
        text, n = re.subn(r'^(capture "prod" \{\n)', lambda m: m.group(1) + blocks, hcl.read_text(), count=1, flags=re.M)
        assert n == 1
        hcl.write_text(text)
        assert mirrorcap("sessions", "--write", cwd=inv).returncode == 0
        working_copy()
        pr_plan = plan()
        record = reviewed.record(json.loads(pr_plan), stack="prod", digest=reviewed.config_digest(wc), pr=7, commit="a" * 40)
        sessions = [c for c in record["changes"] if c["type"] != "output"]  # and the outputs listing sessions
        assert len(sessions) == 2 and record["gated"] == []

        # The merge, nothing changed since: the same plan, applied.
        fresh = plan()
        assert reviewed.fingerprint(reviewed.normalize(json.loads(fresh))) == record["fingerprint"]
        assert verify(tmp_path, fresh, record) == (0, "matches the reviewed plan")

        # An apply that stopped halfway: one session created; the rest is still what was reviewed.
        first = f'aws_ec2_traffic_mirror_session.source["{new[0]}"]'
        tf.ok(wc, "apply", "-input=false", "-no-color", "-auto-approve", f"-target={first}", timeout=300)
        rest = plan()
        assert [c["address"] for c in reviewed.normalize(json.loads(rest)) if c["type"] != "output"] == \
            [f'aws_ec2_traffic_mirror_session.source["{new[1]}"]']
        assert verify(tmp_path, rest, record) == (0, "matches the rest of the reviewed plan (1 change(s) applied already)")

        # A configuration the review never saw: refused, naming what differs.
        hcl.write_text(hcl.read_text().replace('description = "web-4"', 'description = "web-4b"'))
        working_copy()
        changed = plan()
        code, line = verify(tmp_path, changed, record)
    assert code == 1 and line.startswith("refused: the plan differs from the one reviewed in the pull request (1 change(s))")
    report = (tmp_path / "report.md").read_text()
    assert f'`aws_ec2_traffic_mirror_session.source["{new[1]}"]`: planned values differ `description`: ' \
           f'reviewed `"mirrorcap prod: web-4"`, now `"mirrorcap prod: web-4b"`' in report
    assert "The merged configuration of this stack differs" not in report  # no --dir given here
