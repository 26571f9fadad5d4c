"""Where the project's non-Python files are: scripts/ (the host bootstrap's templates
and files, for the render), cdktf.json (the Terraform target) and tools/ (the cdktn
CLI and its HCL formatter). The one place the package looks outside itself.

Rendering and synthesizing run from a checkout of this repository (the inventory,
the lock and rendered/ are committed beside them): the project is the nearest
directory, from the working directory up, holding cdktf.json and scripts/, or else
the checkout this package was installed from (an editable install run elsewhere).
Reading packets needs no checkout: the host library the laptop runs (`mirrorcap
index`, `find`, `window`) is part of the package (top-level mirrorcap_* modules).
"""

from __future__ import annotations

import functools
from pathlib import Path

from .errors import MirrorcapError, Problem

MARKERS = ("cdktf.json", "scripts")
DEFAULT_INVENTORY = "capture.hcl"  # the inventory every command reads unless told otherwise


def _is_project(d: Path) -> bool:
    return all((d / m).exists() for m in MARKERS)


@functools.lru_cache(maxsize=1)
def root() -> Path:
    here = Path.cwd().resolve()
    for d in (here, *here.parents, Path(__file__).resolve().parents[2]):
        if _is_project(d):
            return d
    raise MirrorcapError([Problem(str(here), "", "not inside a mirrorcap project (no directory above holds cdktf.json and scripts/)",
                                  "run mirrorcap from a checkout of the mirrorcap repository")])


def scripts_dir() -> Path:
    return root() / "scripts"


def cdktf_json() -> Path:
    return root() / "cdktf.json"


def tools_dir() -> Path:
    return root() / "tools"
