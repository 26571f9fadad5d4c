"""`mirrorcap render`: the host bootstrap into rendered/ (or --check it is current)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ..errors import MirrorcapError
from ..host.render import render_paths, rendered_tree
from ..host.tree import diff_tree, write_tree
from .common import InventoryOpt, fail, load_numbered


def render(
    inventory: Path = InventoryOpt,
    out: Path = typer.Option(Path("rendered"), "--out",
                             help="output directory, replaced whole; refused unless missing, empty or an earlier render"),
    check: bool = typer.Option(False, "--check", help="write nothing; exit 1 if OUT differs from a fresh render"),
) -> None:
    """Render the host bootstrap (bake.sh, user data, scripts, units) for each capture."""
    inv, _ = load_numbered(inventory)
    try:
        tree = rendered_tree(inv)
    except MirrorcapError as exc:
        fail(exc)
    if check:
        stale = diff_tree(tree, out)
        if stale:
            print(f"mirrorcap: {out} is stale ({len(stale)} file(s), e.g. {stale[0]}): run `mirrorcap render` and commit it", file=sys.stderr)
            raise typer.Exit(1)
        print(f"{out}: up to date ({len(tree)} files)")
        return
    try:
        write_tree(tree, out, render_paths())
    except MirrorcapError as exc:
        fail(exc)
    print(f"wrote {len(tree)} files to {out}")
