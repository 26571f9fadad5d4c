"""Reading a file the user names (the inventory, its lock file): a small regular file, or a clear problem.

A path can lead anywhere: a symlink to /dev/zero reads forever (an inventory
was read to 5.4 GB before MemoryError), opening a FIFO waits for a writer, a
directory or a socket is no text at all. Symlinks themselves are fine: only
what they resolve to must be a regular file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import MirrorcapError, Problem

# An inventory of 1,000 sources with descriptions is about 150 KB
# (tests/unit/test_inventory.py measures one); a lock file is smaller still.
MAX_BYTES = 1024 * 1024

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def problem_with(st: os.stat_result, limit: int = MAX_BYTES) -> str | None:
    """Why a file with this stat is not read, or None."""
    if not stat.S_ISREG(st.st_mode):
        kind = next((what for test, what in _KINDS if test(st.st_mode)), "not a regular file")
        return f"is {kind}, not a regular file"
    if st.st_size > limit:
        return f"is {st.st_size:,} bytes, over mirrorcap's {limit:,}-byte limit for an input file"
    return None


def read_text(path: Path, fix: str, limit: int = MAX_BYTES) -> str:
    """The UTF-8 text of `path`. FileNotFoundError (missing or a dangling link),
    other OSErrors and UnicodeDecodeError are the caller's; a FIFO, device,
    directory or oversized file raises MirrorcapError before it is opened."""
    where = str(path)
    if os.path.islink(path):
        where += f" (a link to {os.path.realpath(path)})"
    problem = problem_with(os.stat(path), limit)  # follows symlinks; opens nothing
    if problem is None:
        # O_NONBLOCK: were the path swapped for a FIFO since the stat, open
        # returns at once; fstat then sees what was really opened.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
            problem = problem_with(os.fstat(f.fileno()), limit)
            data = b"" if problem else f.read(limit + 1)
        if len(data) > limit:  # grew after the stat
            problem = f"is over mirrorcap's {limit:,}-byte limit for an input file"
    if problem:
        raise MirrorcapError([Problem(where, "", problem, fix)])
    return data.decode("utf-8")
