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
    c = capture_named(load_inventory(inventory), capture, inventory)
    with reported():
        values = packer_vars(capture, c.region, rendered, mirrorcap_version(), c.vpc_id, build_subnet(c))
    target = out or OUT_DIR / f"{capture}.pkrvars.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    Path(values["manifest"]).unlink(missing_ok=True)  # a failed build must not leave the previous AMI looking new
    target.write_text(json.dumps(values, indent=2) + "\n")
    print(target)


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
