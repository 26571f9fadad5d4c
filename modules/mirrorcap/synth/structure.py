"""When cdktn need not run: the stacks' structure digest, and the data written without it.

cdktn synth costs seconds whatever changed (the CLI, jsii loading the provider
bindings, the review copy), yet a source edit changes only data (stack_data.py).
After every synth the pipeline records, in cdktf.out/mirrorcap-structure.json:

- the structure digest: everything the synthesized files are a function of, the
  sources aside (each capture as its stack sees it, stack_data.structural();
  mirrorcap's own code, main.py, cdktf.json, the cdktn CLI's lock file and the
  review copy's formatter; the cdktn, provider-binding and jsii versions);
- whether the review copy is current, and the SHA-256 of each file synth wrote
  as structure (cdktn's cdk.tf.json, assets and manifest.json; the review .tf).

`mirrorcap synth` (what `make synth` runs) skips cdktn when the digest is the one
recorded and every recorded file is still as written; it then writes only the data
(write_data(), the same function the full synth ends with). Anything else, a missing
or unreadable record included, synthesizes. The record is not trusted for more than
this: the files it lists are hashed again each time.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Mapping

from .. import project, stack_data
from ..inventory.model import Inventory

RECORD = "mirrorcap-structure.json"
REVIEW_DATA_SUFFIX = ".tfvars"  # cdktf.out/review/<capture>.tfvars beside <capture>.tf
# What the synthesized JSON depends on besides mirrorcap's code: cdktn and the bindings it calls into.
DISTRIBUTIONS = ("cdktn", "cdktn-provider-aws", "constructs", "jsii")
FORMAT = 1


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """mirrorcap's own code (the package and the host library beside it: the Athena schema comes from
    there), main.py, cdktf.json, the cdktn CLI and the review copy's formatter, and the versions synth runs on."""
    h = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    files = [p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    files += list(package.parent.glob("mirrorcap_*.py"))
    for p in sorted(files):
        h.update(p.relative_to(package.parent).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    root = project.root()
    for p in (root / "main.py", project.cdktf_json(), project.tools_dir() / "hclfmt.js", project.tools_dir() / "package-lock.json"):
        h.update(p.name.encode() + b"\0" + (p.read_bytes() if p.is_file() else b"(none)") + b"\0")
    versions = {d: metadata.version(d) for d in DISTRIBUTIONS}
    h.update(json.dumps({"python": sys.version_info[:2], **versions}, sort_keys=True).encode())
    return h.hexdigest()


def digest(inventory: Inventory) -> str:
    captures = [dataclasses.asdict(stack_data.structural(c)) for c in inventory.captures]
    h = hashlib.sha256(f"mirrorcap structure {FORMAT}\0{code_digest()}\0".encode())
    h.update(json.dumps(captures, sort_keys=True, default=repr).encode())
    return "sha256:" + h.hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def synthesized_files(outdir: Path, names: list[str], review_hcl: bool) -> list[Path]:
    """The files cdktn wrote for these captures (the data beside them excluded)."""
    files = [outdir / "manifest.json"]
    for name in names:
        stack = outdir / "stacks" / name
        files.append(stack / "cdk.tf.json")
        assets = stack / "assets"
        if assets.is_dir():
            files += sorted(p for p in assets.rglob("*") if p.is_file())
        if review_hcl:
            files.append(outdir / "review" / f"{name}.tf")
    return files


def _read(outdir: Path) -> dict | str:
    """The record, or why there is none to trust."""
    try:
        seen = json.loads((outdir / RECORD).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no earlier synth recorded"
    except (OSError, ValueError) as exc:
        return f"{RECORD} unreadable ({exc.__class__.__name__})"
    if not isinstance(seen, dict) or seen.get("format") != FORMAT or not isinstance(seen.get("files"), dict):
        return f"{RECORD} is of another mirrorcap"
    return seen


def _unchanged(outdir: Path, files: dict) -> str | None:
    for rel, sha in sorted(files.items()):
        try:
            if _sha256(outdir / rel) != sha:
                return f"{rel} changed since it was synthesized"
        except OSError:
            return f"{rel} is missing"
    return None


def record(outdir: Path, inventory: Inventory, review_hcl: bool, before: dict | str | None = None) -> bool:
    """After a synth: what it was of, and what it wrote. A synth without the review copy (cdktn deploy's)
    keeps the earlier one's review copy in the record when the structure is the same and the copy untouched:
    it still shows this structure, so the next `make synth` need not run cdktn for it."""
    names = [c.name for c in inventory.captures]
    now = digest(inventory)
    review = review_hcl
    if not review_hcl and isinstance(before, dict) and before.get("digest") == now and before.get("review") is True:
        kept = {p.relative_to(outdir).as_posix() for p in synthesized_files(outdir, names, True)} - \
               {p.relative_to(outdir).as_posix() for p in synthesized_files(outdir, names, False)}
        old = {rel: sha for rel, sha in before["files"].items() if rel in kept}
        review = set(old) == kept and _unchanged(outdir, old) is None
    files = {p.relative_to(outdir).as_posix(): _sha256(p) for p in synthesized_files(outdir, names, review)}
    _write(outdir / RECORD, json.dumps({"format": FORMAT, "digest": now, "review": review, "captures": names,
                                        "files": files}, indent=1, sort_keys=True) + "\n")
    return review


def previous(outdir: Path) -> dict | str:
    """The record as it was before a synth (read before the synth removes it)."""
    return _read(outdir)


def forget(outdir: Path, before: dict | str) -> None:
    """Before a full synth: the record, and the files the last synth recorded as cdktn's (cdk.tf.json,
    assets, manifest.json), so none that this synth does not write again is left for Terraform to load
    (an asset of a Lambda turned off). The review copy stays until it is written again; nothing else
    in cdktf.out is touched."""
    (outdir / RECORD).unlink(missing_ok=True)
    if isinstance(before, dict):
        for rel in before["files"]:
            path = (outdir / rel)
            if not rel.startswith("review/") and ".." not in Path(rel).parts and path.is_file():
                path.unlink()


def review_current(outdir: Path) -> bool:
    """Whether the record says the review copy shows the synthesized structure."""
    seen = _read(outdir)
    return isinstance(seen, dict) and seen.get("review") is True


def stale(outdir: Path, inventory: Inventory, review_hcl: bool) -> str | None:
    """Why cdktn must run (a short reason), or None: the synthesized structure is current."""
    seen = _read(outdir)
    if isinstance(seen, str):
        return seen
    if seen.get("digest") != digest(inventory):
        return "the structure changed: a capture's settings, or mirrorcap itself"
    if review_hcl and seen.get("review") is not True:
        return "no review copy written by the last synth"
    names = [c.name for c in inventory.captures]
    expected = {p.relative_to(outdir).as_posix() for p in synthesized_files(outdir, names, seen.get("review") is True)}
    if set(seen["files"]) != expected:
        return "the synthesized files are not the ones recorded"
    return _unchanged(outdir, seen["files"])


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a reader (terraform, the next synth) never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_data(outdir: Path, inventory: Inventory, numbers: Mapping[str, Mapping[str, int]], user_data: Mapping[str, str],
               review_hcl: bool) -> None:
    """Each stack's data: its variables' values, the moved blocks of its per-VNI alarms, its user-data
    template; with review_hcl, the values as HCL in cdktf.out/review/<capture>.tfvars."""
    for capture in inventory.captures:
        stack = outdir / "stacks" / capture.name
        own = numbers.get(capture.name, {})
        for name, text in stack_data.files(capture, own).items():
            _write(stack / name, text)
        _write(stack / stack_data.USER_DATA_FILE, user_data[capture.name])
    if review_hcl:
        write_review_data(outdir, inventory, numbers)


def write_review_data(outdir: Path, inventory: Inventory, numbers: Mapping[str, Mapping[str, int]]) -> None:
    for capture in inventory.captures:
        _write(outdir / "review" / f"{capture.name}{REVIEW_DATA_SUFFIX}",
               stack_data.review_tfvars(capture, numbers.get(capture.name, {})))
