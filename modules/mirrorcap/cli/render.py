"""`mirrorcap render`: the host bootstrap into rendered/ (or --check it is current)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from .common import FINDINGS, InventoryOpt, load_numbered, reported


def render(
    inventory: Path = InventoryOpt,
    out: Path = typer.Option(Path("rendered"), "--out",
                             help="output directory, replaced whole; refused unless missing, empty or an earlier render"),
    check: bool = typer.Option(False, "--check", help="write nothing; exit 1 if OUT differs from a fresh render"),
) -> None:
    """Render the host bootstrap (bake.sh, user data, scripts, units) for each capture.

    Exit 0: written (or up to date); 1: --check found OUT stale; 2: the inventory or OUT is wrong."""
    from ..host.render import rendered_tree
    from ..host.tree import diff_tree
    inv, _ = load_numbered(inventory)
    with reported():
        tree = rendered_tree(inv)
    if check:
        stale = diff_tree(tree, out)
        if stale:
            print(f"mirrorcap: {out} is stale ({len(stale)} file(s), e.g. {stale[0]}): run `mirrorcap render` and commit it", file=sys.stderr)
            raise typer.Exit(FINDINGS)
        print(f"{out}: up to date ({len(tree)} files)")
        return
    write_rendered(tree, out)


def write_rendered(tree, out: Path) -> None:
    """The rendered tree into `out` (`render`, `synth --render`)."""
    from ..host.manifest import render_paths
    from ..host.tree import write_tree
    with reported():
        write_tree(tree, out, render_paths())
    print(f"wrote {len(tree)} files to {out}")
