"""One exit-code table for every command (errors.EXIT_CODES): a missing inventory is a usage error (2)
for every command that reads one, with the file named and the fix, and nothing written."""

from __future__ import annotations

import pytest

from helpers import mirrorcap

READERS = [["validate"], ["sessions", "--write"], ["render"], ["capacity", "--rate", "5"], ["check"],
           ["window", "--capture", "prod", "--at", "now", "--out", "w.pcap"], ["bake", "vars", "--capture", "prod"]]


@pytest.mark.parametrize("args", READERS, ids=lambda a: a[0])
def test_a_missing_inventory_is_exit_2_naming_the_file(tmp_path, args):
    r = mirrorcap(*args, "--inventory", "gone.hcl", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "gone.hcl: file not found" in r.stderr and "fix:" in r.stderr and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_wrong_command_line_is_exit_2(tmp_path):
    r = mirrorcap("sessions", "--no-such-flag", cwd=tmp_path)
    assert r.returncode == 2 and "No such option" in r.stderr


def test_review_verify_says_nothing_to_apply_with_4(tmp_path):
    """The apply workflow tells "nothing to apply" (4) from "may apply" (0) and "refused" (1) by the code alone."""
    import json

    from helpers import ROOT
    plan = json.loads((ROOT / "tests" / "fixtures" / "review" / "plan.json").read_text())  # a real plan
    plan["resource_changes"] = [dict(rc, change={**rc["change"], "actions": ["no-op"]}) for rc in plan.get("resource_changes", [])]
    # its outputs too: an output change is a change to apply (docs/workflow.md)
    plan["output_changes"] = {k: {**oc, "actions": ["no-op"]} for k, oc in plan.get("output_changes", {}).items()}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    r = mirrorcap("review", "verify", "--stack", "prod", "--plan-json", "plan.json", cwd=tmp_path)
    assert (r.returncode, r.stdout.strip()) == (4, "no changes: nothing to apply"), r.stderr
