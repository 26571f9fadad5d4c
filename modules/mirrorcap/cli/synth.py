"""`mirrorcap synth`: the stacks into cdktf.out/, through cdktn only when their structure changed.

`make synth` runs it after `sessions --write` and `render`. A source edit (added, removed,
renumbered, another VNI) changes data, not structure (stack_data.py): the stacks' variable
values are written in plain Python and cdktn is skipped, which the command says.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

from .common import InventoryOpt, reported


def synth(
    inventory: Path = InventoryOpt,
    out: Path = typer.Option(Path("cdktf.out"), "--out", help="cdktn's output directory"),
    review_hcl: bool = typer.Option(True, "--review-hcl/--no-review-hcl",
                                    help="also write the review copy (cdktf.out/review/<capture>.tf and .tfvars)"),
    force: bool = typer.Option(False, "--force", help="run cdktn even when the structure is unchanged"),
    write_lock: bool = typer.Option(False, "--write-lock", help="first update the lock file, as `sessions --write` does"),
    render: Path = typer.Option(None, "--render", help="first render the host bootstrap into this directory, as `render --out` does"),
) -> None:
    """Synthesize every capture's stack; skip cdktn when only data (the sources) changed.

    `make synth` runs `synth --write-lock --render rendered`: the three steps in one process
    (the inventory read once). Exit 0: synthesized (or its data written); 2: the inventory is
    wrong or cdktn failed."""
    from .. import project
    from ..synth import structure
    from ..synth.pipeline import prepare
    from .common import load_numbered
    inv, numbering = load_numbered(inventory)  # every problem of the inventory and its lock, before anything is written
    if write_lock:
        from .sessions import write_lock as write
        write(numbering)
    if render is not None:
        from ..host.render import rendered_tree
        from .render import write_rendered
        with reported():
            tree = rendered_tree(inv)
        write_rendered(tree, render)
    with reported():
        prepared = prepare(inventory)
        why = "--force" if force else structure.stale(out, prepared.inventory, review_hcl)
        if why is None:
            structure.write_data(out, prepared.inventory, prepared.numbers, prepared.user_data, review_hcl)
            sources = sum(len(c.sources) for c in prepared.inventory.captures)
            print(f"synth: structure unchanged, cdktn skipped: wrote the data of {len(prepared.inventory.captures)} "
                  f"stack(s) ({sources} source(s)) into {out}/stacks/")
            return
        cdktn = project.tools_dir() / "node_modules" / ".bin" / "cdktn"
        if not cdktn.exists():
            from ..errors import MirrorcapError, Problem
            raise MirrorcapError([Problem(str(cdktn), "", "the cdktn CLI is not installed", "run `make setup`")])
    print(f"synth: cdktn synth ({why})", flush=True)
    root = project.root()
    here = Path.cwd().resolve() == root  # paths as given when cdktn runs where this does (make synth)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "MIRRORCAP_INVENTORY": str(inventory if here else inventory.resolve())}
    env.pop("MIRRORCAP_REVIEW_HCL", None)
    if review_hcl:
        env["MIRRORCAP_REVIEW_HCL"] = "1"
    # cdktn reads cdktf.json from its working directory: the project's root
    result = subprocess.run([str(cdktn), "synth", "--output", str(out if here else out.resolve())], cwd=root, env=env)
    if result.returncode != 0:
        raise typer.Exit(2)
