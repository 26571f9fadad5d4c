"""`mirrorcap review stacks` on a change that removes a capture block, where nothing is to be planned
by a destroy (the terraform runs are tests/synth/test_removed_capture.py): its state is local, or a
capture of the change keeps its state; and what the command refuses to write over."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from helpers import EXAMPLE
from mirrorcap.cli import app

PROD = EXAMPLE.read_text()
PINS = {"aws": {"source": "hashicorp/aws", "version": "6.69.1"}}


def block(name: str, *, backend: str | None) -> str:
    """A capture like the example's, its own name and VNI, one source, the backend given (None: local state)."""
    return (f'capture "{name}" {{\n  region = "ap-northeast-1"\n  vpc_id = "vpc-0123456789abcdef0"\n'
            f'  subnet_id = "subnet-0123456789abcdef0"\n  vni = 4242\n'
            f'  network {{\n    mirror_source_cidrs = ["10.0.16.0/20"]\n  }}\n'
            f'  source {{\n    eni_id = "eni-0aaaaaaaaaaaaaaa0"\n  }}\n'
            + (f'  backend "s3" {{\n    bucket = "example-terraform-state"\n    key = "{backend}"\n  }}\n' if backend else "")
            + "}\n")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def synthesized(root: Path, names: list[str]) -> None:
    """cdktf.out as synth leaves it for `names` (the manifest, each stack's provider and pins)."""
    stacks = {}
    for name in names:
        d = root / "cdktf.out" / "stacks" / name
        d.mkdir(parents=True, exist_ok=True)
        doc = {"provider": {"aws": [{"region": "ap-northeast-1"}]},
               "terraform": {"backend": {"s3": {"bucket": "b", "key": f"{name}.tfstate"}}, "required_providers": PINS}}
        (d / "cdk.tf.json").write_text(json.dumps(doc))
        stacks[name] = {"workingDirectory": f"stacks/{name}"}
    (root / "cdktf.out" / "manifest.json").write_text(json.dumps({"stacks": stacks}))


def change(root: Path, monkeypatch, before: str, after: str, head: list[str]):
    monkeypatch.chdir(root)
    git(root, "init", "-q")
    (root / "capture.hcl").write_text(before)
    git(root, "add", "capture.hcl")
    git(root, "commit", "-q", "-m", "base")
    (root / "capture.hcl").write_text(after)
    synthesized(root, head)
    return CliRunner().invoke(app, ["review", "stacks", "--changed", "-", "--base", "HEAD"], input="capture.hcl\n")


def test_a_removed_capture_with_local_state_is_reported_not_planned(tmp_path, monkeypatch):
    r = change(tmp_path, monkeypatch, PROD + block("old", backend=None), PROD, ["prod"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["stacks"] == [] and [x["name"] for x in out["removed"]] == ["old"]
    assert "its state is local" in out["removed"][0]["advice"] and "`make destroy STACK=old`" in out["removed"][0]["advice"]
    assert not (tmp_path / "cdktf.out" / "removed").exists()


def test_a_renamed_capture_keeping_the_state_key_destroys_nothing(tmp_path, monkeypatch):
    before = PROD + block("old", backend="mirrorcap/old.tfstate")
    r = change(tmp_path, monkeypatch, before, PROD + block("new", backend="mirrorcap/old.tfstate"), ["prod", "new"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [s["name"] for s in out["stacks"]] == ["new"] and out["removed"] == []
    assert out["stacks"][0]["reasons"][-1].startswith('keeps the state of removed capture "old" (the same backend)')
    assert not (tmp_path / "cdktf.out" / "removed").exists()


def test_a_removed_capture_gets_its_directory_and_a_file_mirrorcap_did_not_write_is_left_alone(tmp_path, monkeypatch):
    ours = tmp_path / "cdktf.out" / "removed" / "old" / "cdk.tf.json"
    ours.parent.mkdir(parents=True)
    ours.write_text('{"resource": {}}\n')
    before = PROD + block("old", backend="mirrorcap/old.tfstate")
    r = change(tmp_path, monkeypatch, before, PROD, ["prod"])
    assert r.exit_code == 2 and "cdktf.out/removed/old/cdk.tf.json: exists and is not a destroy configuration mirrorcap wrote" \
        in r.stderr
    assert ours.read_text() == '{"resource": {}}\n'
    ours.unlink()
    r = CliRunner().invoke(app, ["review", "stacks", "--changed", "-", "--base", "HEAD"], input="capture.hcl\n")
    assert r.exit_code == 0, r.output
    (entry,) = json.loads(r.stdout)["stacks"]
    assert entry["removal"] == {"protected": True, "added": []} and entry["dir"] == "cdktf.out/removed/old"
    doc = json.loads(ours.read_text())
    assert doc["terraform"] == {"backend": {"s3": {"bucket": "example-terraform-state", "encrypt": True, "key": "mirrorcap/old.tfstate",
                                                   "region": "ap-northeast-1", "use_lockfile": True}}, "required_providers": PINS}
    assert "resource" not in doc and "prevent_destroy = true" in doc["output"]["prevent_destroy"]["precondition"][0]["error_message"]
    again = CliRunner().invoke(app, ["review", "stacks", "--changed", "-", "--base", "HEAD"], input="capture.hcl\n")
    assert again.exit_code == 0 and again.stdout == r.stdout  # its own file: written again, the same


def test_comment_stacks_input_that_is_not_a_stack_list_is_exit_2(tmp_path):
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "plan.txt").write_text("x")
    for text in ("[]", '{"stacks": ["old"]}', "{"):
        (tmp_path / "stacks.json").write_text(text)
        r = CliRunner().invoke(app, ["review", "comment", "--stack", "old", "--plan-text", str(tmp_path / "plan.txt"),
                                     "--lock-before", str(tmp_path / "empty.json"), "--lock-after", str(tmp_path / "empty.json"),
                                     "--stacks", str(tmp_path / "stacks.json")])
        assert r.exit_code == 2 and (r.exception is None or isinstance(r.exception, SystemExit)), (text, r.exception)
        assert "stacks.json: stacks: not a stack list" in r.stderr, text
