"""rendered/ on disk: written all or nothing, and only over what a render wrote.

`mirrorcap render` replaces the directory only when it is missing, empty or an
earlier render (every file one a render writes, for a capture of any kind: a
capture that gains `archive {}` or becomes a fleet drops files an earlier render
wrote): never someone's own files. The new tree replaces the old one whole, so
what a render no longer writes is gone.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path, PurePosixPath

from ..errors import MirrorcapError, Problem


def capture_layout(tree: dict[str, tuple[str, int]]) -> frozenset[str]:
    """The paths a render writes inside each capture directory (the same for every capture)."""
    return frozenset(rel.split("/", 1)[1] for rel in tree)


def _raise(exc: OSError) -> None:
    raise exc


def _strays(out: Path, layout: frozenset[str]):
    """Entries under `out` that no render wrote: anything but capture directories
    holding layout files (regular files) and the directories on their way."""
    on_the_way = {str(parent) for rel in layout for parent in PurePosixPath(rel).parents} - {"."}
    for top in sorted(os.scandir(out), key=lambda e: e.name):
        if not top.is_dir(follow_symlinks=False):
            yield top.name
            continue
        # os.walk lists a link to a directory without entering it; a directory
        # it cannot read must not pass as empty.
        for root, dirs, files in os.walk(top.path, onerror=_raise):
            for name in sorted(dirs + files):
                path = os.path.join(root, name)
                rel = os.path.relpath(path, top.path)
                kind = os.lstat(path).st_mode
                if not (stat.S_ISDIR(kind) and rel in on_the_way or stat.S_ISREG(kind) and rel in layout):
                    yield os.path.relpath(path, out)


def replace_problem(out: Path, layout: frozenset[str]) -> str | None:
    """Why `out` must not be replaced, or None: only a missing path, an empty
    directory or an earlier render (every file one a render writes) may be.
    A render from a mirrorcap that wrote fewer files still qualifies; any
    other file in it is someone's work."""
    try:
        mode = os.lstat(out).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:  # e.g. a file where a parent directory should be
        return f"cannot be a directory ({exc.strerror})"
    if stat.S_ISLNK(mode):
        return "is a symbolic link (neither it nor what it points to is replaced)"
    if not stat.S_ISDIR(mode):
        return "is not a directory"
    try:
        stray = next(_strays(out, layout), None)
    except OSError as exc:
        return f"cannot be read whole ({exc.strerror}: {exc.filename})"
    return f"holds {stray}, which `mirrorcap render` does not write" if stray else None


def write_tree(tree: dict[str, tuple[str, int]], out: Path, ours: frozenset[str] = frozenset()) -> None:
    """Replace `out` with exactly `tree`, all or nothing (built beside it, then swapped).

    ours: the paths inside a capture's directory that any render writes (manifest.render_paths()),
    besides this tree's. Refused, with nothing written, unless `out` is missing, empty or an
    earlier render (replace_problem)."""
    problem = replace_problem(out, capture_layout(tree) | ours)
    if problem:
        raise MirrorcapError([Problem(str(out.absolute()), "", f"{problem}: mirrorcap replaces only a directory it wrote",
                                      "pass --out a new or empty directory, or one an earlier `mirrorcap render` wrote "
                                      "(move what you keep there elsewhere first)")])
    out = out.resolve()  # not a link (checked): only the parents resolve
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise MirrorcapError([Problem(str(out), "", f"cannot write beside it: {exc.strerror}",
                                      "pass --out a path in a writable directory")])
    try:
        for rel, (content, mode) in sorted(tree.items()):
            p = staging / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(content)
            os.chmod(p, mode)
        _swap(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap(staging: Path, out: Path) -> None:
    """Put `staging` at `out`; what was there (checked to be mirrorcap's) is deleted only once the new tree is in place."""
    if out.exists():
        os.chmod(staging, stat.S_IMODE(out.stat().st_mode))  # mkdtemp's 0700 would stick otherwise
    if not out.exists() or not any(out.iterdir()):
        os.replace(staging, out)  # onto nothing or an empty directory: one rename
        return
    # Under a name of its own: nothing that is not ours is ever moved or deleted.
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    try:
        os.replace(out, old)
    except BaseException:
        old.rmdir()
        raise
    try:
        os.replace(staging, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old)


def diff_tree(tree: dict[str, tuple[str, int]], out: Path) -> list[str]:
    """Paths that differ between `tree` and what is on disk under `out`."""
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} if out.exists() else set()
    stale = sorted(on_disk - set(tree))
    for rel, (content, mode) in sorted(tree.items()):
        p = out / rel
        if not p.is_file() or p.read_text() != content or (p.stat().st_mode & 0o777) != mode:
            stale.append(rel)
    return stale
