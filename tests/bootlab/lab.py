"""The lab's host side: what it needs (checks, skips), the cached root file system, and
the processes, network namespaces, loop devices and cgroups it makes and cleans up."""

from __future__ import annotations

import ctypes
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

try:
    import pytest
except ImportError:  # pragma: no cover - imported where pytest is not installed
    pytest = None

ROOT = Path(__file__).resolve().parents[2]
ROOTFS_SCRIPT = ROOT / "tools" / "bootlab-rootfs.sh"
CACHE_DIR = Path(os.environ.get("BOOTLAB_CACHE", "/var/cache/mirrorcap-bootlab"))
STATE_DIR = Path("/run/mirrorcap-bootlab")
IMDS_ADDR = "169.254.169.254"
IMDS_TOKEN = "test-token"
MIRROR_IFACE = "ens6"
DEFAULT_MIRROR_MAC = "0e:6c:61:62:00:06"  # locally administered unicast, like EC2's
DEFAULT_SENDER_MAC = "0e:6c:61:62:00:01"
CONTAINER = "mirrorcap-bootlab"
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MACHINE_ENV = {
    "PATH": SBIN_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb",
    "SYSTEMD_PAGER": "cat", "SYSTEMD_COLORS": "0", "SYSTEMD_LESS": "",
}
USER_DATA_UNIT = "lab-cloud-init.service"
CLOUD_DIR = "/var/lib/cloud/instance"
REQUIRED_TOOLS = {"unshare": "util-linux", "nsenter": "util-linux", "losetup": "mount",
                  "mount": "mount", "pivot_root": "util-linux", "ip": "iproute2", "flock": "util-linux",
                  "blkid": "util-linux"}


# --------------------------------------------------------------------------- checks

def _which(tool: str) -> str | None:
    return shutil.which(tool, path=f"{os.environ.get('PATH', '')}:{SBIN_PATH}")


def _cgroup2_mount() -> Path | None:
    """Where the host mounts cgroup2 (/sys/fs/cgroup/unified when hybrid, /sys/fs/cgroup when unified)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split()[0] == "cgroup2":
                return Path(pre.split()[4].replace("\\040", " "))
    return None


def lab_unavailable() -> str | None:
    """Why the lab cannot run on this machine, or None."""
    if not sys.platform.startswith("linux"):
        return "the boot lab needs Linux"
    if os.geteuid() != 0:
        return "the boot lab needs root (namespaces, loop devices, mounts)"
    for tool, package in REQUIRED_TOOLS.items():
        if not _which(tool):
            return f"{tool} not found (apt-get install {package})"
    for ns in ("pid", "mnt", "net", "uts", "ipc", "cgroup"):
        if not os.path.exists(f"/proc/self/ns/{ns}"):
            return f"the kernel has no {ns} namespaces"
    if "overlay" not in Path("/proc/filesystems").read_text():
        subprocess.run(["modprobe", "overlay"], capture_output=True)
        if "overlay" not in Path("/proc/filesystems").read_text():
            return "overlayfs is not available (modprobe overlay failed)"
    if _cgroup2_mount() is None:
        return "no cgroup2 hierarchy is mounted on the host"
    if not _which("debootstrap"):
        cached = subprocess.run(["bash", str(ROOTFS_SCRIPT), "--check", str(CACHE_DIR)], capture_output=True)
        if cached.returncode != 0:
            return "debootstrap not found (apt-get install debootstrap) and no cached rootfs"
    return None


def _required() -> bool:
    return os.environ.get("BOOTLAB_REQUIRE", "") not in ("", "0")


def _skip(reason: str):
    if _required():
        pytest.fail(f"boot lab required (BOOTLAB_REQUIRE) but: {reason}", pytrace=False)
    pytest.skip(reason)


_UNAVAILABLE = lab_unavailable()
needs_lab = pytest.mark.skipif(_UNAVAILABLE is not None and not _required(),
                               reason=f"boot lab: {_UNAVAILABLE}") if pytest else None


# --------------------------------------------------------------------------- rootfs

_ROOTFS: dict[tuple[str, ...], Path] = {}


def rootfs(extra_packages: tuple[str, ...] | list[str] = ()) -> Path:
    """The cached bookworm tree (tools/bootlab-rootfs.sh builds it once: ~1 min with a fast mirror)."""
    key = tuple(sorted(extra_packages))
    if key in _ROOTFS:
        return _ROOTFS[key]
    reason = lab_unavailable()
    if reason:
        _skip(f"boot lab: {reason}")
    env = dict(os.environ)
    env["BOOTLAB_EXTRA_PACKAGES"] = " ".join(key)
    proc = subprocess.Popen(["bash", str(ROOTFS_SCRIPT), str(CACHE_DIR)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tail: list[str] = []
    for line in proc.stderr:  # progress, live with pytest -s
        sys.stderr.write(line)
        tail = (tail + [line.rstrip()])[-5:]
    out = proc.stdout.read()
    if proc.wait() in (3, 4):  # 3: a tool is missing, 4: debootstrap failed
        _skip(f"boot lab: cannot build the rootfs: {tail[-1] if tail else 'no output'}")
    if proc.returncode != 0:
        raise RuntimeError(f"tools/bootlab-rootfs.sh failed ({proc.returncode}):\n" + "\n".join(tail))
    path = Path(out.strip().splitlines()[-1])
    _ROOTFS[key] = path
    return path


# --------------------------------------------------------------------------- host helpers

def _sh(*cmd: str, check: bool = True, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    p = subprocess.run(list(cmd), input=input, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}")
    return p


def _starttime(pid: int) -> int | None:
    """Start time of a live process (None when gone or a zombie): with the PID, identifies it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in "ZXx" else int(fields[19])


def _alive(pid: int, start: int | None) -> bool:
    return start is not None and _starttime(pid) == start


_libc = ctypes.CDLL(None, use_errno=True)


def _pdeathsig() -> None:  # preexec_fn: die with the test process (PR_SET_PDEATHSIG = 1)
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)


def _kill(pid: int, start: int | None) -> None:
    if _alive(pid, start):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _rmtree_cgroup(path: Path, timeout: float = 10) -> None:
    """Kill what is left in a cgroup subtree and remove its directories, deepest first."""
    if not path.is_dir():
        return
    kill = path / "cgroup.kill"
    if kill.exists():
        try:
            kill.write_text("1")
        except OSError:
            pass
    deadline = time.monotonic() + timeout
    while True:
        dirs = sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [path]
        busy = []
        for d in dirs:
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                busy.append(d)
        if not busy:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"cgroup {path} still busy: {busy}")
        time.sleep(0.05)


def _detach_loop(device: str, image: str) -> None:
    back = _sh("losetup", "-n", "-O", "BACK-FILE", device, check=False).stdout.strip()
    if back and (back == image or back.startswith(image + " ")):  # " (deleted)"
        _sh("losetup", "-d", device, check=False)


def _cleanup(state: dict) -> None:
    """Release everything listed in a machine's state record; idempotent, never raises for 'already gone'."""
    errors = []
    for pid, start in state.get("pids", []):
        _kill(pid, start)
    for pid, start in state.get("pids", []):
        for _ in range(200):
            if not _alive(pid, start):
                break
            time.sleep(0.01)
    if state.get("cgroup"):
        try:
            _rmtree_cgroup(Path(state["cgroup"]))
        except RuntimeError as e:
            errors.append(str(e))
    for ns in state.get("netns", []):
        if Path("/run/netns", ns).exists():
            p = _sh("ip", "netns", "del", ns, check=False)
            if p.returncode != 0:
                errors.append(p.stderr.strip())
    if state.get("loop"):
        _detach_loop(state["loop"], state["image"])
    if errors:
        raise RuntimeError("boot lab cleanup: " + "; ".join(errors))


def reap_stale() -> None:
    """Clean up after machines whose test process died without cleaning (SIGKILL, OOM, power)."""
    if not STATE_DIR.is_dir():
        return
    for f in STATE_DIR.glob("*.json"):
        try:
            state = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        owner = state.get("owner", [0, None])
        if _alive(owner[0], owner[1]):
            continue
        try:
            _cleanup(state)
        except RuntimeError:
            continue
        f.unlink(missing_ok=True)
