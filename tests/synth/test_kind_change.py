"""`make synth` while a capture changes kind: single -> archive -> fleet -> archive -> single -> fleet
-> single (tests/kinds.py). Every step renders and synthesizes the new layout, with nothing left of
the old one, and keeps the session numbers."""

from __future__ import annotations

import json
import subprocess

from helpers import EXAMPLE, ROOT, env, tree
from kinds import WALK, capture_as
from mirrorcap.host.render import rendered_tree
from mirrorcap.inventory import load


def make_synth(work):
    """The Makefile's own synth target, writing into `work` (INVENTORY, RENDERED, OUT)."""
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "synth", f"INVENTORY={work / 'capture.hcl'}",
                           f"RENDERED={work / 'rendered'}", f"OUT={work / 'cdktf.out'}"], env=env(), capture_output=True, text=True)


def test_make_synth_follows_a_capture_through_every_kind_and_back(tmp_path):
    text = EXAMPLE.read_text()
    (tmp_path / "capture.lock.json").write_text((ROOT / "capture.lock.json").read_text())
    lock = (tmp_path / "capture.lock.json").read_text()
    for kind in WALK:
        text = capture_as(text, "prod", kind)
        (tmp_path / "capture.hcl").write_text(text)
        r = make_synth(tmp_path)
        assert r.returncode == 0, (kind, r.stdout[-2000:], r.stderr[-2000:])
        want = rendered_tree(load(tmp_path / "capture.hcl"))
        assert {k: v.decode() for k, v in tree(tmp_path / "rendered").items()} == {k: c for k, (c, _) in want.items()}, kind
        stack = tmp_path / "cdktf.out" / "stacks" / "prod"
        doc = json.loads((stack / "cdk.tf.json").read_text())
        assert ("aws_lb" in doc["resource"], "aws_s3_bucket" in doc["resource"]) == (kind == "fleet", kind != "single"), kind
        assert ("aws_instance" in doc["resource"]) == (kind != "fleet"), kind
        assert sorted(p.name for p in stack.iterdir()) == ["cdk.tf.json", "sessions.auto.tfvars.json", "user-data.sh.tftpl",
                                                          "vni-alarms-moved.tf.json"], kind
        assert "synth: cdktn synth (" in r.stdout, (kind, r.stdout)  # a change of kind is structure: cdktn runs
        assert (tmp_path / "cdktf.out" / "review" / "prod.tf").is_file()
        assert (tmp_path / "capture.lock.json").read_text() == lock, kind  # no session renumbered by a change of kind
