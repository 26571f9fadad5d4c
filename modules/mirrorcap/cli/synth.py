"""`mirrorcap synth`: the stacks into cdktf.out/, through cdktn only when their structure changed.

`make synth` runs `synth --write-lock --render rendered`: the lock, the host bootstrap and the
stacks in one process. A source edit (added, removed, renumbered, another VNI) changes data,
not structure (stack_data.py): the stacks' variable values are written in plain Python and
cdktn is skipped, which the command says.
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

    With --write-lock and --render (what `make synth` runs), the lock and the host bootstrap are
    written first, once every check of the inventory has passed. Exit 0: synthesized (or its
    data written); 2: the inventory is wrong, a file could not be written, or cdktn failed."""
    from .. import project
    from ..errors import MirrorcapError, Problem
    from ..host.render import rendered_tree
    from ..inventory import unbaked
    from ..synth import structure
    from ..synth.pipeline import prepare
    from .common import load_numbered
    inv, numbering = load_numbered(inventory)
    with reported():  # every check before anything is written: the lock, rendered/, the stacks
        if unbaked(inv):
            raise MirrorcapError(unbaked(inv))
        tree = rendered_tree(inv) if render is not None else None
    if write_lock:
        from .sessions import write_lock as write
        write(numbering)
    if tree is not None:
        from .render import write_rendered
        write_rendered(tree, render)
    with reported():
        prepared = prepare(inventory)
        why = "--force" if force else structure.stale(out, prepared.inventory, review_hcl)
        if why is None:
            try:
                # the review copy's values too while the record says it is current (a --no-review-hcl run)
                structure.write_data(out, prepared.inventory, prepared.numbers, prepared.user_data,
                                     review_hcl or structure.review_current(out))
            except OSError as exc:
                raise MirrorcapError([Problem(str(exc.filename or out), "", f"cannot be written: {exc.strerror or exc}",
                                              "free space or fix the permissions of --out, then run it again")]) from None
            sources = sum(len(c.sources) for c in prepared.inventory.captures)
            print(f"synth: structure unchanged, cdktn skipped: wrote the data of {len(prepared.inventory.captures)} "
                  f"stack(s) ({sources} source(s)) into {out}/stacks/")
            return
        cdktn = project.tools_dir() / "node_modules" / ".bin" / "cdktn"
        if not cdktn.exists():
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
        from ..errors import USAGE
        print(f"mirrorcap: {out}: cdktn synth failed (exit {result.returncode}): its output is above\n"
              "  fix: a problem it names in the inventory, fix there; otherwise `make setup` (the cdktn CLI, Node), "
              "then `mirrorcap synth --force`", file=sys.stderr)
        raise typer.Exit(USAGE)
