"""The session lock file next to the inventory (`capture.hcl` -> `capture.lock.json`).

It records the session number given to each (capture, source) so that numbers
survive edits to the inventory. It is meant to be committed: a change to it in
a pull request is a change to a mirror session. So it is read strictly: a number
outside 1-32766 or a key given twice is refused, never renumbered or picked.

A lock that is a symbolic link is written through to the file it points to (the
link stays a link: a lock shared that way stays shared); a link to nothing, or to
anything but a regular file, is refused rather than replaced.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Mapping

from .. import aws_limits as L
from .. import jsontext
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
    if path.is_symlink() and not path.exists():  # a link to nothing is no "no lock yet": numbers would be recomputed
        raise MirrorcapError([Problem(str(path), "", f"is a link to {os.path.realpath(path)}, which does not exist",
                                      "point the link at the lock file, or remove the link (`mirrorcap sessions --write` then "
                                      "writes a regular lock file)")])
    if not path.exists():
        return {}
    try:
        text = read_text(path, FIX)
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8
        raise MirrorcapError([Problem(str(path), "", f"not a readable JSON lock file: {exc}", FIX)])
    return parse(text, str(path))


def parse(text: str, name: str, fix: str = FIX) -> dict[Key, int]:
    """A lock file's text (from disk, or a git revision's): {(capture, source): number}, or the problem
    naming `name` and the field."""
    try:
        data = jsontext.loads(text)
    except ValueError as exc:
        raise MirrorcapError([Problem(name, "", f"not a readable JSON lock file: {exc}", fix)])
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("captures"), dict):
        raise MirrorcapError([Problem(name, "version", f"expected a version {VERSION} mirrorcap lock file", fix)])
    out: dict[Key, int] = {}
    for capture, sources in data["captures"].items():
        if not isinstance(sources, dict):
            raise MirrorcapError([Problem(name, f"captures.{capture}", "expected a map of source ID to session number", fix)])
        for source, number in sources.items():
            if isinstance(number, bool) or not isinstance(number, int):
                raise MirrorcapError([Problem(name, f"captures.{capture}.{source}", f"{number!r} is not a session number", fix)])
            if not L.SESSION_NUMBER_MIN <= number <= L.SESSION_NUMBER_MAX:
                raise MirrorcapError([Problem(name, f"captures.{capture}.{source}",
                                              f"session number {number} is outside {L.SESSION_NUMBER_MIN}-{L.SESSION_NUMBER_MAX}",
                                              "restore the lock from version control, or delete this entry and run `mirrorcap sessions "
                                              "--write` (the source then gets the lowest free number, printed)")])
            out[(capture, source)] = number
    return out


def render(numbers: Mapping[Key, int]) -> str:
    return json.dumps({"version": VERSION, "note": NOTE, "captures": by_capture(numbers)}, indent=2, sort_keys=True) + "\n"


def write_target(path: Path) -> Path:
    """The file a write of `path` replaces: `path`, or the regular file its link resolves to."""
    if not path.is_symlink():
        return path
    target = Path(os.path.realpath(path))
    if not target.is_file():
        raise MirrorcapError([Problem(str(path), "", f"is a link to {target}, which is not an existing regular file: "
                                      "mirrorcap writes a lock through a link only to a lock file that exists",
                                      "point the link at the lock file, or remove the link (a regular lock file is then written)")])
    return target


def write(path: Path, numbers: Mapping[Key, int]) -> bool:
    """Write atomically (through a link: write_target); return False (and touch nothing) when unchanged."""
    text = render(numbers)
    path = write_target(path)
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
