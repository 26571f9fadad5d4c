"""`mirrorcap bake vars|result`: the AMI bake's two mirrorcap steps (`make bake CAPTURE=<name>`),
around Packer; what they compute is workflow/bake.py's."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import MirrorcapError, Problem
from .common import InventoryOpt, capture_named, load_inventory, reported, sub_app

bake_app = sub_app("The AMI bake's mirrorcap steps, around Packer (make bake CAPTURE=<name>).")


@bake_app.command("vars")
def vars_command(
    capture: str = typer.Option(..., "--capture", help="the capture to bake for"),
    inventory: Path = InventoryOpt,
    rendered: Path = typer.Option(Path("rendered"), "--rendered", help="mirrorcap render's output"),
    out: Path = typer.Option(None, "--out", help="the .pkrvars.json to write (default cdktf.out/bake/<capture>.pkrvars.json)"),
) -> None:
    """Write the Packer variables for one capture; print the file's path. Exit 2: the inventory, the capture or the render is wrong."""
    from ..workflow.bake import OUT_DIR, build_subnet, mirrorcap_version, packer_vars
    inv = load_inventory(inventory)
    c = capture_named(inv, capture, inventory)
    target = out or OUT_DIR / f"{capture}.pkrvars.json"
    with reported():
        _check_out(out)
        values = packer_vars(capture, c.region, rendered, mirrorcap_version(), c.vpc_id, build_subnet(c))
        _check_render(inv, capture, rendered)
    target.parent.mkdir(parents=True, exist_ok=True)  # (only the default's: an --out's directory must exist)
    Path(values["manifest"]).unlink(missing_ok=True)  # a failed build must not leave the previous AMI looking new
    target.write_text(json.dumps(values, indent=2) + "\n")
    print(target)


def _check_out(out: Path | None) -> None:
    """An --out is a file in a directory that exists: nothing is created around it (once /nonexistent was)."""
    if out is None:
        return
    if out.exists() and not out.is_file():
        raise MirrorcapError([Problem("command line", "--out", f"{out} exists and is not a regular file",
                                      "give the path of the .pkrvars.json file to write, e.g. --out cdktf.out/bake/prod.pkrvars.json")])
    if not out.parent.is_dir():
        raise MirrorcapError([Problem("command line", "--out", f"{out.parent} is not a directory", "create it, or write elsewhere")])


def _check_render(inv, capture: str, rendered: Path) -> None:
    """The bake takes rendered/<capture> as it is: it must be what the inventory renders now."""
    from ..host.render import rendered_tree
    from ..host.tree import diff_tree
    prefix = f"{capture}/"
    fresh = {rel[len(prefix):]: v for rel, v in rendered_tree(inv).items() if rel.startswith(prefix)}
    stale = diff_tree(fresh, rendered / capture)
    if stale:
        raise MirrorcapError([Problem(str(rendered / capture), "", f"stale: {len(stale)} file(s) differ from a fresh render, e.g. {stale[0]}",
                                      f"run `mirrorcap render --out {rendered}` (make bake does) first")])


@bake_app.command("result")
def result_command(
    capture: str = typer.Option(..., "--capture", help="the capture baked for"),
    inventory: Path = InventoryOpt,
) -> None:
    """Print the baked AMI and where it goes in the inventory. Exit 2: no usable Packer manifest."""
    from ..workflow.bake import baked_ami, manifest_path
    path = manifest_path(capture)
    with reported():
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MirrorcapError([Problem(str(path), "", f"no Packer manifest: {exc}", f"run `make bake CAPTURE={capture}`")])
        region, ami = baked_ami(manifest, capture, str(path))
    print(f"baked {ami} in {region} for capture \"{capture}\". Next: set\n"
          f"  ami = \"{ami}\"\n"
          f"in capture \"{capture}\" of {inventory}, run `make synth`, and open a pull request: the plan replaces the "
          "capture host (the pcap volume and its data are kept).")
