"""Inventory -> cdktf.out/stacks/<capture>/cdk.tf.json (+ review/<capture>.tf), as plain calls.

    prepare(path)                    read and validate the inventory, number the
                                     sessions from the lock, render each user data:
                                     everything pure, all checked before any output
    synth(prepared)                  one CaptureStack per capture (stack/), then
                                     cdktn writes the JSON; the user data beside it
    synth_file(path) = synth(prepare(path))

main.py runs the same two steps through overlap.py, which only overlaps
prepare() with loading the provider bindings.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import project
from ..host.render import user_data_template
from ..errors import MirrorcapError
from ..inventory import load, unbaked
from ..inventory.model import Inventory
from ..numbering.plan import locked_numbers
from ..numbering.sessions import by_capture
from . import structure
from .review_hcl import corrected, format_hcl, review_dir

STACK_MODULE = "mirrorcap.stack.capture_stack"  # loads the provider bindings: seconds
LEGACY_REVIEW_HCL = "cdk.tf"


@dataclass(frozen=True)
class Prepared:
    """Everything synth needs that is pure Python: checked before any output."""

    inventory: Inventory
    numbers: dict[str, dict[str, int]]  # capture name -> source ID -> session number (sessions.by_capture)
    user_data: dict[str, str]  # capture name -> user-data template


def prepare(path: str | Path) -> Prepared:
    inventory = load(path)
    if unbaked(inventory):
        raise MirrorcapError(unbaked(inventory))
    return Prepared(inventory, by_capture(locked_numbers(inventory)),
                    {c.name: user_data_template(inventory, c) for c in inventory.captures})


def synth_file(path: str | Path, review_hcl: bool = False) -> list[Path]:
    return synth(prepare(path), review_hcl=review_hcl)


def skip_token_creation_stacks() -> None:
    """Before the jsii Node process starts: cdktn records a JS stack trace for
    every token it creates, only ever shown when a token cannot be resolved.
    That was 40% of construct time at 100 stacks. Export
    CDKTN_DISABLE_CREATION_STACK=0 to get the traces back when debugging one.
    """
    os.environ.setdefault("CDKTN_DISABLE_CREATION_STACK", "1")


def target_versions() -> dict:
    # cdktf.json is the one place the Terraform/OpenTofu target is declared; the
    # CLI passes it as context, a plain `python main.py` reads it here.
    return json.loads(project.cdktf_json().read_text())["targetVersions"]


def synth(inputs: Prepared, outdir: str | None = None, review_hcl: bool = False) -> list[Path]:
    """Synthesize every capture as its own stack. Validation happened in prepare(): nothing is written before."""
    inventory, numbers, templates = inputs.inventory, inputs.numbers, inputs.user_data
    # Imported here: loading the provider bindings costs seconds, and
    # `mirrorcap validate` must not pay for it.
    skip_token_creation_stacks()
    from cdktn import App
    from ..stack.capture_stack import CaptureStack
    from ..stack.lambda_zip import build

    app = App(outdir=outdir, context={"targetVersions": target_versions()})
    before = structure.previous(Path(app.outdir))
    structure.forget(Path(app.outdir), before)  # no record until this synth has written everything
    stacks = []
    with tempfile.TemporaryDirectory(prefix="mirrorcap-synth-") as tmp:
        remirror_zip = None
        if any(c.auto_mirror and c.auto_mirror.deploy_lambda for c in inventory.captures):
            remirror_zip = str(build(Path(tmp) / "remirror" / "mirrorcap-remirror.zip"))
        for capture in inventory.captures:
            stacks.append(CaptureStack(app, capture, remirror_zip=remirror_zip))
        app.synth()
    out = Path(app.outdir)
    stack_dirs = [out / "stacks" / c.name for c in inventory.captures]
    for d in stack_dirs:
        # Terraform loads every *.tf and *.tf.json in a directory: a review copy
        # beside cdk.tf.json (where mirrorcap once wrote it) would declare every
        # resource twice. Review copies live in their own folder.
        (d / LEGACY_REVIEW_HCL).unlink(missing_ok=True)
    if review_hcl:
        review = review_dir(out)
        review.mkdir(exist_ok=True)
        texts = [corrected(stack.to_hcl_terraform()["hcl"], json.loads((d / "cdk.tf.json").read_text()))
                 for stack, d in zip(stacks, stack_dirs)]
        for capture, text in zip(inventory.captures, format_hcl(texts)):
            (review / f"{capture.name}.tf").write_text(text)
    structure.write_data(out, inventory, numbers, templates, review_hcl)  # all `mirrorcap synth` writes on a source edit
    if structure.record(out, inventory, review_hcl, before) and not review_hcl:
        structure.write_review_data(out, inventory, numbers)  # the kept review copy shows these values
    return stack_dirs
