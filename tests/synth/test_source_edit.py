"""`mirrorcap synth`, the last step of `make synth`: a source edit is data (stack_data.py), so cdktn is
skipped, and what is written then is byte for byte what cdktn's own synth of the same inventory writes.
Anything structural, or a synthesized file changed by hand, synthesizes again (synth/structure.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import EXAMPLE, ROOT, minimal, mirrorcap, synth, tree, write
from mirrorcap import stack_data
from mirrorcap.synth import structure

SKIPPED = "synth: structure unchanged, cdktn skipped"


def run_synth(work: Path, *args: str):
    r = mirrorcap("synth", *args, cwd=work)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def edit(work: Path, old: str, new: str) -> None:
    hcl = work / "capture.hcl"
    text = hcl.read_text()
    assert text.count(old) == 1, old
    hcl.write_text(text.replace(old, new))
    r = mirrorcap("sessions", "--write", cwd=work)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("synthesized")
    shutil.copy(EXAMPLE, work / "capture.hcl")
    shutil.copy(ROOT / "capture.lock.json", work / "capture.lock.json")
    assert "synth: cdktn synth (no earlier synth recorded)" in run_synth(work)
    return work


@pytest.fixture
def work(synthesized, tmp_path) -> Path:
    w = tmp_path / "work"
    shutil.copytree(synthesized, w)
    return w


# Added (an ENI with its own VNI and packet length, an instance), removed (web-2) and renumbered sources.
ADDED = '''  source {
    eni_id        = "eni-0aaaaaaaaaaaaaaaa"
    vni           = 99
    packet_length = 128
    description   = "new ${path.module} %{ if true }x%{ endif }"
  }
  source {
    instance_id = "i-0bbbbbbbbbbbbbbbb"
  }
'''
WEB_2 = '''  source {
    eni_id      = "eni-0123456789abcdef0"
    description = "web-2"
  }
'''


def test_a_source_edit_skips_cdktn_and_writes_what_cdktn_writes(work, tmp_path):
    before = tree(work / "cdktf.out")
    edit(work, WEB_2, ADDED)
    edit(work, "session_number = 10", "session_number = 11")
    assert SKIPPED in run_synth(work)
    after = tree(work / "cdktf.out")
    # Nothing cdktn wrote changed; the data did.
    for rel in ("stacks/prod/cdk.tf.json", "review/prod.tf", "manifest.json"):
        assert after[rel] == before[rel], rel
    values = json.loads(after[f"stacks/prod/{stack_data.SESSIONS_FILE}"])
    assert set(values["sessions"]) == {"i-0123456789abcdef0", "eni-0fedcba9876543210", "eni-0aaaaaaaaaaaaaaaa", "i-0bbbbbbbbbbbbbbbb"}
    assert values["vnis"] == [99, 12345] and values["instance_sources"] == ["i-0123456789abcdef0", "i-0bbbbbbbbbbbbbbbb"]
    assert values["sessions"]["eni-0fedcba9876543210"] == 11
    assert values["session_descriptions"]["eni-0aaaaaaaaaaaaaaaa"] == \
        "mirrorcap prod: new ${path.module} %{ if true }x%{ endif }"  # a .tfvars.json string is literal
    assert after["stacks/prod/user-data.sh.tftpl"] != before["stacks/prod/user-data.sh.tftpl"]  # the host decapsulates VNI 99
    assert after["review/prod.tfvars"] != before["review/prod.tfvars"]
    # cdktn's own synth of the same inventory and lock, elsewhere: the same bytes, file for file.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for name in ("capture.hcl", "capture.lock.json"):
        shutil.copy(work / name, fresh / name)
    assert "synth: cdktn synth (no earlier synth recorded)" in run_synth(fresh)
    assert tree(fresh / "cdktf.out") == after


@pytest.mark.parametrize("change,why", [
    ("instance_type", "the structure changed"),
    ("hand-edited", "stacks/prod/cdk.tf.json changed since it was synthesized"),
    ("review-deleted", "review/prod.tf is missing"),
    ("record-deleted", "no earlier synth recorded"),
    ("record-garbled", f"{structure.RECORD} unreadable"),
])
def test_anything_but_data_synthesizes_again(work, change, why):
    args: tuple[str, ...] = ()
    stack = work / "cdktf.out" / "stacks" / "prod"
    synthesized = (stack / "cdk.tf.json").read_bytes()
    if change == "instance_type":
        text = (work / "capture.hcl").read_text()
        assert text.count('instance_type = "t3.small"') == 1
        (work / "capture.hcl").write_text(text.replace('instance_type = "t3.small"', 'instance_type = "c6in.2xlarge"'))
    elif change == "hand-edited":
        (stack / "cdk.tf.json").write_text((stack / "cdk.tf.json").read_text().replace('"st1"', '"gp3"'))
    elif change == "review-deleted":
        (work / "cdktf.out" / "review" / "prod.tf").unlink()
    elif change == "record-deleted":
        (work / "cdktf.out" / structure.RECORD).unlink()
    else:
        (work / "cdktf.out" / structure.RECORD).write_text("{not json")
    out = run_synth(work, *args)
    assert f"synth: cdktn synth ({why}" in out, out
    assert SKIPPED in run_synth(work, *args)  # and recorded again: the next one is skipped
    if change != "instance_type":
        assert (stack / "cdk.tf.json").read_bytes() == synthesized  # the hand edit is undone
    else:
        assert (stack / "cdk.tf.json").read_bytes() != synthesized


def test_a_bad_inventory_stops_before_anything_is_written(work):
    before = tree(work / "cdktf.out")
    text = (work / "capture.hcl").read_text()
    (work / "capture.hcl").write_text(text.replace('eni_id      = "eni-0123456789abcdef0"', 'eni_id      = "eni-nothex"'))
    r = mirrorcap("synth", cwd=work)
    assert r.returncode == 2 and "capture.hcl" in r.stderr and "eni_id" in r.stderr and "fix:" in r.stderr, r.stderr
    assert tree(work / "cdktf.out") == before


def test_a_deploy_between_two_make_synths_keeps_the_review_copy_current(work):
    """`cdktn deploy` synthesizes without the review copy (main.py): the copy still shows the same structure,
    so the next `make synth` skips cdktn; after a structural change it does not."""
    review = work / "cdktf.out" / "review" / "prod.tf"
    copy = review.read_bytes()
    edit(work, WEB_2, "")
    assert SKIPPED in run_synth(work, "--no-review-hcl")
    # the review copy is still current, its values too
    assert "eni-0123456789abcdef0" not in (work / "cdktf.out" / "review" / "prod.tfvars").read_text()
    assert synth(work, review_hcl=False).returncode == 0  # what cdktn deploy runs
    assert SKIPPED in run_synth(work)
    text = (work / "capture.hcl").read_text()
    (work / "capture.hcl").write_text(text.replace('instance_type = "t3.small"', 'instance_type = "c6in.2xlarge"'))
    assert synth(work, review_hcl=False).returncode == 0
    assert review.read_bytes() == copy  # stale now, and known to be
    assert "synth: cdktn synth (no review copy written by the last synth)" in run_synth(work)
    assert review.read_bytes() != copy and SKIPPED in run_synth(work)


AUTO_MIRROR = """  source {
    tags = { Service = "web" }
  }
  auto_mirror {}
"""


def test_a_full_synth_leaves_no_file_an_earlier_synth_wrote_and_this_one_does_not(tmp_path):
    """Turning auto_mirror off: the Lambda's asset (a file cdktn wrote) goes with it, not left for Terraform."""
    write(tmp_path, minimal('  source {\n    eni_id = "eni-0123456789abcdef0"\n  }\n' + AUTO_MIRROR))
    assert "cdktn synth" in run_synth(tmp_path, "--write-lock")
    stack = tmp_path / "cdktf.out" / "stacks" / "test"
    assert [p for p in (stack / "assets").rglob("*") if p.is_file()]
    write(tmp_path, minimal('  source {\n    eni_id = "eni-0123456789abcdef0"\n  }\n'))
    assert "cdktn synth (the structure changed" in run_synth(tmp_path, "--write-lock")
    assert not [p for p in stack.rglob("*") if p.is_file() and "assets" in p.parts]
    assert SKIPPED in run_synth(tmp_path)


def test_make_synth_writes_no_lock_nor_render_for_an_inventory_it_cannot_deploy(work):
    """`synth --write-lock --render`: every check first, so a capture without its AMI writes nothing."""
    text = (work / "capture.hcl").read_text()
    # new sources (a lock to write, were the inventory deployable), and no AMI
    (work / "capture.hcl").write_text(text.replace(WEB_2, ADDED).replace('  ami = "ami-0123456789abcdef0"\n', ""))
    before = tree(work)
    r = mirrorcap("synth", "--write-lock", "--render", "rendered", cwd=work)
    assert r.returncode == 2 and 'capture "prod" > ami' in r.stderr and "fix:" in r.stderr, r.stderr
    assert tree(work) == before
