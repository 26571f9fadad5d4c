"""Real Linux stand-ins for the capture host: loop devices, env files (root only)."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import ROOT

RENDERED = ROOT / "rendered" / "prod" / "files"
LIBEXEC = RENDERED / "usr/local/libexec/mirrorcap"
HEALTH = RENDERED / "usr/local/sbin/mirrorcap-health"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="host integration tests need root (loop devices, netns)")


def run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, **kw)


@contextmanager
def loop_device(tmp: Path, size_mb: int = 400):
    image = tmp / "volume.img"
    with open(image, "wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    dev = run("losetup", "--find", "--show", str(image)).stdout.strip()
    try:
        yield dev
    finally:
        run("umount", "-l", dev, check=False)
        run("losetup", "-d", dev, check=False)


def write_env(path: Path, **values) -> Path:
    path.write_text("".join(f"MIRRORCAP_{k.upper()}={v}\n" for k, v in values.items()))
    return path
