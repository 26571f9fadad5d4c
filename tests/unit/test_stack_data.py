"""A stack's data (stack_data.py): the variables' values from the inventory and its lock, their review copy
in HCL, and the structure digest that leaves them out. Terraform itself reads both files back where the
machine has it."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import unicodedata
from pathlib import Path

import pytest

from helpers import EXAMPLE
from mirrorcap import stack_data
from mirrorcap.inventory import load
from mirrorcap.inventory.model import Source
from mirrorcap.numbering.plan import locked_numbers
from mirrorcap.numbering.sessions import by_capture
from mirrorcap.synth import structure

TERRAFORM = shutil.which("terraform")
# Text Terraform would read as something else anywhere but a literal: an expression, a directive,
# an escaped one, quotes, a backslash, control characters, a heredoc marker, non-ASCII.
HOSTILE = ['${file("/etc/hostname")}', "%{ if true }x%{ endif }", "$${kept} %%{kept}", 'say "hi" \\ back', "tab\tnew\nline\r\x7f",
           "EOF\n", "[not a list", "{not a map", "日本語 ✓", "e\u0301 decomposed", "\u202eright-to-left", "\U0001f600 beyond the BMP"]


@pytest.fixture(scope="module")
def example():
    inventory = load(EXAMPLE)
    return inventory.captures[0], by_capture(locked_numbers(inventory))["prod"]


def test_values_are_the_sources_with_their_locked_numbers(example):
    capture, numbers = example
    v = stack_data.values(capture, numbers)
    assert v["sessions"] == numbers  # the for_each map: numbers only
    assert v["instance_sources"] == ["i-0123456789abcdef0"] and v["vnis"] == [12345]
    # The rest sparse: only the sources that differ from the capture's default.
    assert v["packet_lengths"] == {"eni-0fedcba9876543210": 1500} and v["source_vnis"] == {}
    assert v["session_descriptions"]["i-0123456789abcdef0"] == "mirrorcap prod: web-1"


def test_the_vnis_are_every_vni_decapsulated_ascending_and_each_has_its_moved_alarms(example):
    capture, numbers = example
    capture = dataclasses.replace(capture, sources=capture.sources + (Source("eni-0aaaaaaaaaaaaaaaa", vni=7),))
    v = stack_data.values(capture, {**numbers, "eni-0aaaaaaaaaaaaaaaa": 1})
    assert v["vnis"] == [7, 12345] and v["source_vnis"] == {"eni-0aaaaaaaaaaaaaaaa": 7}
    assert stack_data.moved(capture)["moved"] == [
        {"from": f"aws_cloudwatch_metric_alarm.{old.format(vni=vni)}", "to": f'aws_cloudwatch_metric_alarm.{name}["{vni}"]'}
        for vni in (7, 12345) for name, old in stack_data.VNI_ALARMS]


def test_the_structure_digest_leaves_the_sources_out_and_nothing_else(example):
    capture, _ = example
    inventory = load(EXAMPLE)
    base = structure.digest(inventory)
    other_sources = dataclasses.replace(inventory, captures=(dataclasses.replace(
        capture, sources=(Source("eni-0aaaaaaaaaaaaaaaa", vni=7, packet_length=64, description="x"),)),))
    assert structure.digest(other_sources) == base
    for change in ({"instance_type": "c6in.2xlarge"}, {"vni": 1}, {"name": "other"}, {"root_volume_gib": 64}):
        changed = dataclasses.replace(inventory, captures=(dataclasses.replace(capture, **change),))
        assert structure.digest(changed) != base, change


def terraform_reads(tmp_path: Path, files: dict[str, str]) -> dict:
    """The variables' values as Terraform reads them from `files` (no provider: outputs of the variables)."""
    work = tmp_path / "tf"
    work.mkdir(parents=True)
    (work / "main.tf.json").write_text(json.dumps({
        "variable": {k: {"type": t, "nullable": False} for k, (t, _) in stack_data.VARIABLES.items()},
        "output": {k: {"value": f"${{var.{k}}}"} for k in stack_data.VARIABLES}}))
    for name, text in files.items():
        (work / name).write_text(text)
    env = {**os.environ, "TF_CLI_CONFIG_FILE": os.devnull, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}
    for args in (["init", "-input=false"], ["plan", "-input=false", "-out=p.tfplan"]):
        r = subprocess.run([TERRAFORM, *args, "-no-color"], cwd=work, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    shown = subprocess.run([TERRAFORM, "show", "-json", "p.tfplan"], cwd=work, env=env, capture_output=True, text=True, check=True)
    return {k: v["value"] for k, v in json.loads(shown.stdout)["planned_values"]["outputs"].items()}


@pytest.mark.skipif(TERRAFORM is None, reason="needs a terraform binary")
def test_terraform_reads_the_json_and_the_review_copy_as_the_same_literal_text(example, tmp_path):
    capture, numbers = example
    odd = tuple(Source(f"eni-0{n:016x}", description=text) for n, text in enumerate(HOSTILE, start=1))
    capture = dataclasses.replace(capture, sources=capture.sources + odd)
    numbers = {**numbers, **{s.id: 1 for s in odd}}
    json_text = stack_data.files(capture, numbers)[stack_data.SESSIONS_FILE]
    from_json = terraform_reads(tmp_path / "json", {stack_data.SESSIONS_FILE: json_text})
    from_review = terraform_reads(tmp_path / "review", {"review.auto.tfvars": stack_data.review_tfvars(capture, numbers)})
    assert from_review == from_json
    want = stack_data.values(capture, numbers)
    # as written, in Unicode's composed form (NFC): Terraform normalizes every string it reads, from either file
    assert from_json["session_descriptions"] == \
        {k: unicodedata.normalize("NFC", d) for k, d in want["session_descriptions"].items()}
    assert len(want["session_descriptions"]) == len(HOSTILE) + 3
    assert from_json["packet_lengths"] == {"eni-0fedcba9876543210": 1500} and from_json["sessions"] == numbers
    assert from_json["vnis"] == [12345] and from_json["instance_sources"] == ["i-0123456789abcdef0"]


@pytest.mark.skipif(TERRAFORM is None, reason="needs a terraform binary")
def test_the_review_copy_is_formatted_as_terraform_fmt_formats_it(example, tmp_path):
    capture, numbers = example
    path = tmp_path / "prod.tfvars"
    path.write_text(stack_data.review_tfvars(capture, numbers))
    r = subprocess.run([TERRAFORM, "fmt", "-check", "-diff", "-no-color", str(path)], capture_output=True, text=True,
                       env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull})
    assert r.returncode == 0, r.stdout + r.stderr
