"""The built wheel, installed into a fresh venv, runs `mirrorcap index` and `mirrorcap find --dir` from a
directory that is no checkout, on pcaps a real tcpdump rotated: the host library it imports is the one
the render ships to the host, byte for byte.

Offline and exactly as locked: the venv gets uv.lock's packages (hashes checked) from uv's cache, which
`make setup` filled (`uv sync --offline --no-install-project` into a venv of its own), then the wheel
alone (`--no-deps`). Nothing of the checkout is on the venv's path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import ROOT
from mirrorcap import contract
from mirrorcap.find.hostindex import indexer

UV = ROOT / ".venv-uv" / "bin" / "uv"
# The wheel's host library (top-level modules) and the scripts/host file each is.
HOST_LIBRARY = {"mirrorcap_host.py": "mirrorcap_host.py", "mirrorcap_index.py": "mirrorcap_index.py",
                "mirrorcap_query.py": "mirrorcap_query.py", "mirrorcap_window.py": "mirrorcap-window.py"}
SENDER = r"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + 2.5
i = 0
while time.time() < end:
    s.sendto(b"x" * 100, ("127.0.0.1", 5000 if i % 3 else 6000))
    i += 1
    time.sleep(0.01)
"""


def uv(*args: str, cwd: Path, **extra: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(UV_NO_CONFIG="1", UV_PYTHON_DOWNLOADS="never", **extra)
    r = subprocess.run([str(UV), *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"uv {' '.join(args)}:\n{r.stderr}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of what the wheel is made of (the build writes build/ and egg-info beside its sources)."""
    src = tmp_path_factory.mktemp("src")
    shutil.copy(ROOT / "pyproject.toml", src)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for d in ("modules", "scripts"):
        shutil.copytree(ROOT / d, src / d, symlinks=True, ignore=ignore)
    dist = tmp_path_factory.mktemp("dist")
    uv("build", "--wheel", "--offline", "--out-dir", str(dist), str(src), cwd=src)
    (built,) = dist.glob("mirrorcap-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    v = tmp_path_factory.mktemp("venv") / "v"
    python = sys._base_executable  # the machine's, as make setup's
    uv("sync", "--locked", "--offline", "--no-install-project", "--project", str(ROOT), "--python", python, cwd=ROOT,
       UV_PROJECT_ENVIRONMENT=str(v))
    uv("pip", "install", "--offline", "--no-deps", "--python", str(v / "bin" / "python"), str(wheel), cwd=v)
    return v


@pytest.fixture(scope="module")
def pcaps(tmp_path_factory) -> Path:
    """tcpdump -G rotating on a private loopback, naming its files as a host does (the contract's pattern)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("tcpdump") is None:
        pytest.skip("needs root, unshare and tcpdump (a private network namespace)")
    d = tmp_path_factory.mktemp("pcaps")
    name = contract.PCAP_PATTERN.replace("{vni}", "7")
    script = f"""
set -e
ip link set lo up
tcpdump -i lo -n -U -Z root -G 1 -w '{d}/{name}' udp 2>'{d}.tcpdump.log' &
pid=$!
for _ in $(seq 600); do grep -q 'listening on' '{d}.tcpdump.log' && break; sleep 0.1; done
python3 -c '{SENDER}'
sleep 0.3
kill $pid; wait $pid || true
"""
    subprocess.run(["unshare", "-n", "bash", "-c", script], check=True, env={**os.environ, "TZ": "UTC"}, timeout=60)
    assert len(list(d.glob("vni7_*.pcap"))) >= 2
    return d


def elsewhere(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The venv's mirrorcap, from `cwd`, with nothing of this checkout or its venv in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON", "MIRRORCAP_"))}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), "/usr/local/bin", "/usr/bin", "/bin"])
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True)


def test_the_wheel_carries_the_host_library_as_the_render_ships_it(wheel):
    with zipfile.ZipFile(wheel) as z:
        for shipped, source in HOST_LIBRARY.items():
            assert z.read(shipped) == (ROOT / "scripts" / "host" / source).read_bytes(), shipped
        assert not [n for n in z.namelist() if n.startswith("scripts/")]


def test_index_and_find_run_from_the_installed_wheel_outside_a_checkout(venv, pcaps, tmp_path):
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import mirrorcap, mirrorcap_index; "
                            "print(mirrorcap.__file__); print(mirrorcap_index.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where

    files = sorted(pcaps.glob("vni7_*.pcap"))
    r = elsewhere(venv, "mirrorcap", "index", *map(str, files), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # The bytes the checkout's indexer (the host's) writes for the same files.
    mine = tmp_path / "mine"
    mine.mkdir()
    for f in files:
        shutil.copy(f, mine / f.name)
        indexer().write(str(mine / f.name))
        assert Path(indexer().index_path(str(f))).read_bytes() == Path(indexer().index_path(str(mine / f.name))).read_bytes()

    out = tmp_path / "found.pcap"
    r = elsewhere(venv, "mirrorcap", "find", "udp and dst port 6000", "--dir", str(pcaps), "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = subprocess.run(["tcpdump", "-r", str(out), "-nn", "-tt"], capture_output=True, text=True, check=True).stdout.splitlines()
    want = sorted(line for f in files for line in subprocess.run(
        ["tcpdump", "-r", str(f), "-nn", "-tt", "udp and dst port 6000"], capture_output=True, text=True, check=True).stdout.splitlines())
    assert len(want) > 20 and got == want
