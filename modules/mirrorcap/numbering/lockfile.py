"""The session lock file next to the inventory (`capture.hcl` -> `capture.lock.json`).

It records the session number given to each (capture, source) so that numbers
survive edits to the inventory. It is meant to be committed: a change to it in
a pull request is a change to a mirror session.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Mapping

from ..errors import MirrorcapError, Problem
from ..inventory.inputfile import read_text
from .sessions import Key, by_capture

VERSION = 1
FIX = "restore it from version control, or delete it and run `mirrorcap sessions --write` (numbers are then recomputed)"
NOTE = "Written by `mirrorcap sessions --write`. Commit it: it keeps mirror session numbers stable across edits."


def path_for(inventory_path: str | Path) -> Path:
    p = Path(inventory_path)
    return p.with_name(p.stem + ".lock.json")


def read(path: Path) -> dict[Key, int]:
    if not path.exists():
        return {}
    try:
        data = json.loads(read_text(path, FIX))
    except (OSError, ValueError) as exc:
        raise MirrorcapError([Problem(str(path), "", f"not a readable JSON lock file: {exc}", FIX)])
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("captures"), dict):
        raise MirrorcapError([Problem(str(path), "version", f"expected a version {VERSION} mirrorcap lock file", FIX)])
    out: dict[Key, int] = {}
    for capture, sources in data["captures"].items():
        if not isinstance(sources, dict):
            raise MirrorcapError([Problem(str(path), f"captures.{capture}", "expected a map of source ID to session number", FIX)])
        for source, number in sources.items():
            if isinstance(number, bool) or not isinstance(number, int):
                raise MirrorcapError([Problem(str(path), f"captures.{capture}.{source}", f"{number!r} is not a session number", FIX)])
            out[(capture, source)] = number
    return out


def render(numbers: Mapping[Key, int]) -> str:
    return json.dumps({"version": VERSION, "note": NOTE, "captures": by_capture(numbers)}, indent=2, sort_keys=True) + "\n"


def write(path: Path, numbers: Mapping[Key, int]) -> bool:
    """Write atomically; return False (and touch nothing) when unchanged."""
    text = render(numbers)
    if path.exists() and read_text(path, FIX) == text:
        return False
    fd, tmp = tempfile.mkstemp(prefix=path.name, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True
