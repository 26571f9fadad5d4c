"""Files `mirrorcap window` writes from the archive: new files inside one private directory.

The parts of a path come from a validated key (index.local_parts); on top of that,
nothing under the directory is followed or reused: every directory is opened without
following a link, and each file is created exclusively (O_EXCL, O_NOFOLLOW) with the
pcaps' own mode, whatever the umask. A link or a file already in the way refuses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

PCAP_MODE = 0o640  # as the hosts write them: evidence, never world-readable
DIR_MODE = 0o700
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def create(root: Path, parts: Sequence[str], mode: int = PCAP_MODE) -> int:
    """A new file at root/parts[0]/.../parts[-1], open for writing (the descriptor is the caller's).
    Missing directories are made DIR_MODE. OSError when a part is a link, the file exists, or a
    part is `.`/`..`/has a slash (never from a validated key: refused all the same)."""
    if not parts or any(p in ("", ".", "..") or "/" in p or "\0" in p for p in parts):
        raise OSError(f"not a path inside {root}: {'/'.join(parts)!r}")
    fd = os.open(root, _DIR_FLAGS)
    try:
        for name in parts[:-1]:
            try:
                os.mkdir(name, DIR_MODE, dir_fd=fd)
            except FileExistsError:
                pass  # ours from an earlier file (a link there fails the open below)
            inner = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
        out = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=fd)
        os.fchmod(out, mode)
        return out
    finally:
        os.close(fd)
