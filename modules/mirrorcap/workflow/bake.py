"""The AMI bake's two mirrorcap steps, for `make bake CAPTURE=<name>`:

- `vars`: the Packer variables of packer/mirrorcap.pkr.hcl for one capture (its
  region, VPC and subnet from the inventory, its rendered bake.sh, mirrorcap's
  version), as a `.pkrvars.json` file;
- `result`: the AMI ID from Packer's manifest, and the line to put in the inventory.

Its commands are `mirrorcap bake vars|result` (cli/bake.py), make's internal steps.
"""

from __future__ import annotations

from pathlib import Path
from importlib.metadata import PackageNotFoundError, version
from typing import Mapping

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


def mirrorcap_version() -> str:
    try:
        return version("mirrorcap")
    except PackageNotFoundError:
        raise MirrorcapError([Problem("mirrorcap", "version", "not installed", "run `make setup`")])


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
