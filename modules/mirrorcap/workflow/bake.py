"""The AMI bake's two mirrorcap steps, for `make bake CAPTURE=<name>`:

- `vars`: the Packer variables of packer/mirrorcap.pkr.hcl for one capture (its
  region, VPC and subnet from the inventory, its rendered bake.sh, mirrorcap's
  version), as a `.pkrvars.json` file;
- `result`: the AMI ID from Packer's manifest, and the line to put in the inventory.

Run as `python -m mirrorcap.workflow.bake vars|result ...` (make's internal steps).
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Mapping

import typer

from ..errors import MirrorcapError, Problem

TEMPLATE_DIR = "packer"
OUT_DIR = Path("cdktf.out") / "bake"  # build output, like the synth's


def bake_script(rendered: Path, capture: str) -> Path:
    return rendered / capture / "bake.sh"


def manifest_path(capture: str) -> Path:
    return OUT_DIR / f"{capture}-manifest.json"


def build_subnet(capture) -> str:
    """Where the build instance runs: the capture's own subnet (a fleet's first), so
    no default VPC is needed; `-var subnet_id=...` in PACKER_ARGS overrides it."""
    return capture.fleet.subnet_ids[0] if capture.fleet else capture.subnet_id


def packer_vars(capture: str, region: str, rendered: Path, mirrorcap_version: str, vpc_id: str,
                subnet_id: str) -> dict[str, str]:
    """The template's required variables. The script must exist and be UTF-8 text
    (the template hashes it with Packer's file(), which reads text)."""
    script = bake_script(rendered, capture)
    try:
        script.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise MirrorcapError([Problem(str(script), "", "not rendered", "run `mirrorcap render` (make bake does) first")])
    except (OSError, UnicodeDecodeError) as exc:
        raise MirrorcapError([Problem(str(script), "", f"unreadable as UTF-8 text: {exc}", "run `mirrorcap render` again")])
    return {"capture": capture, "region": region, "bake_script": script.as_posix(), "mirrorcap_version": mirrorcap_version,
            "manifest": manifest_path(capture).as_posix(), "vpc_id": vpc_id, "subnet_id": subnet_id}


def baked_ami(manifest: Mapping, capture: str, name: str) -> tuple[str, str]:
    """(region, AMI ID) of the last build in a Packer manifest (post-processor "manifest")."""
    builds = manifest.get("builds") if isinstance(manifest, Mapping) else None
    fix = f"run `make bake CAPTURE={capture}` (its last step writes this manifest)"
    if not builds:
        raise MirrorcapError([Problem(name, "builds", "no build recorded", fix)])
    last = [b for b in builds if b.get("packer_run_uuid") == manifest.get("last_run_uuid")] or builds[-1:]
    artifact = str(last[-1].get("artifact_id", ""))
    region, _, ami = artifact.partition(":")  # amazon-ebs: "region:ami-...", one pair per region
    if not ami.startswith("ami-") or "," in ami:
        raise MirrorcapError([Problem(name, "builds[].artifact_id", f"{artifact!r} is not one region:ami-... pair", fix)])
    return region, ami


app = typer.Typer(help="The AMI bake's mirrorcap steps (make bake).", no_args_is_help=True, add_completion=False)


def _fail(exc: MirrorcapError) -> None:
    print(f"mirrorcap: {exc}", file=sys.stderr)
    raise typer.Exit(1)


@app.command("vars")
def vars_command(
    capture: str = typer.Option(..., "--capture", help="the capture to bake for"),
    inventory: Path = typer.Option("capture.hcl", "--inventory", "-i", envvar="MIRRORCAP_INVENTORY", help="inventory file (HCL)"),
    rendered: Path = typer.Option(Path("rendered"), "--rendered", help="mirrorcap render's output"),
    out: Path = typer.Option(None, "--out", help="the .pkrvars.json to write (default cdktf.out/bake/<capture>.pkrvars.json)"),
) -> None:
    """Write the Packer variables for one capture; print the file's path."""
    from ..inventory import load
    try:
        inv = load(inventory)
        by_name = {c.name: c for c in inv.captures}
        if capture not in by_name:
            raise MirrorcapError([Problem(str(inventory), "CAPTURE", f"no capture named {capture!r}",
                                          "use one of: " + ", ".join(by_name))])
        try:
            ours = version("mirrorcap")
        except PackageNotFoundError:
            raise MirrorcapError([Problem("mirrorcap", "version", "not installed", "run `make setup`")])
        c = by_name[capture]
        values = packer_vars(capture, c.region, rendered, ours, c.vpc_id, build_subnet(c))
    except MirrorcapError as exc:
        _fail(exc)
    target = out or OUT_DIR / f"{capture}.pkrvars.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    Path(values["manifest"]).unlink(missing_ok=True)  # a failed build must not leave the previous AMI looking new
    target.write_text(json.dumps(values, indent=2) + "\n")
    print(target)


@app.command("result")
def result_command(
    capture: str = typer.Option(..., "--capture", help="the capture baked for"),
    inventory: Path = typer.Option("capture.hcl", "--inventory", "-i", envvar="MIRRORCAP_INVENTORY", help="inventory file (HCL)"),
) -> None:
    """Print the baked AMI and where it goes in the inventory."""
    path = manifest_path(capture)
    try:
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MirrorcapError([Problem(str(path), "", f"no Packer manifest: {exc}", f"run `make bake CAPTURE={capture}`")])
        region, ami = baked_ami(manifest, capture, str(path))
    except MirrorcapError as exc:
        _fail(exc)
    print(f"baked {ami} in {region} for capture \"{capture}\". Next: set\n"
          f"  ami = \"{ami}\"\n"
          f"in capture \"{capture}\" of {inventory}, run `make synth`, and open a pull request: the plan replaces the "
          "capture host (the pcap volume and its data are kept).")


if __name__ == "__main__":
    app()
