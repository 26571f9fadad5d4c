"""mirrorcap-window on real rotated pcaps: tcpdump -G writes them in a private network
namespace while UDP flows to two ports; the rendered script must find, merge, cut and
filter exactly the packets of the window (checked against tshark over every file)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from hostenv import ENV_FILE, RENDERED, needs_root

WINDOW = RENDERED / "usr/local/bin/mirrorcap-window"
# The pcap names the host's env file gives (its capture directory is /var/log/tcpdump: the tests pass --dir).
(PATTERN,) = re.findall(r'^MIRRORCAP_PCAP_PATTERN="(.*)"$', ENV_FILE.read_text(), re.M)

SENDER = r"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + 4.5
i = 0
while time.time() < end:
    s.sendto(b"x" * 100, ("127.0.0.1", 5000 if i % 2 == 0 else 6000))
    i += 1
    time.sleep(0.02)
"""


@pytest.fixture(scope="module")
def pcaps(tmp_path_factory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespace, tcpdump)")
    d = tmp_path_factory.mktemp("pcaps")
    script = f"""
set -e
ip link set lo up
tcpdump -i lo -n -U -Z root -G 1 -w '{d}/{PATTERN.replace("{vni}", "7")}' udp 2>'{d}.tcpdump.log' &
pid=$!
# sending starts once tcpdump listens (it says so), however long a busy machine takes to get there
for _ in $(seq 600); do grep -q 'listening on' '{d}.tcpdump.log' && break; sleep 0.1; done
python3 -c '{SENDER}'
sleep 0.5
kill $pid; wait $pid || true
"""
    subprocess.run(["unshare", "-n", "bash", "-c", script], check=True, env={**os.environ, "TZ": "UTC"}, timeout=60)
    # A file another VNI's capture wrote, and an unrelated file: never picked up.
    first = sorted(d.glob("vni7_*.pcap"))[0]
    (d / first.name.replace("vni7_", "vni8_")).write_bytes(first.read_bytes())
    (d / "notes.txt").write_text("not a pcap")
    return d


def packets(*files: Path, display: str = "") -> list[tuple[float, int]]:
    """(epoch, udp dst port) of every packet, read with tshark independently of the script."""
    out = []
    for f in files:
        cmd = ["tshark", "-n", "-r", str(f), "-T", "fields", "-e", "frame.time_epoch", "-e", "udp.dstport"]
        if display:
            cmd += ["-Y", display]
        lines = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
        out += [(float(lines[i]), int(lines[i + 1])) for i in range(0, len(lines), 2)]
    return sorted(out)


def window(*args: str, env_file: Path = ENV_FILE, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(WINDOW), "--env-file", str(env_file), *args], capture_output=True, text=True, timeout=60, **kwargs)


def test_window_is_python_39_and_installed_by_bake():
    ast.parse(WINDOW.read_text(), feature_version=(3, 9))
    assert "/usr/local/bin/mirrorcap-window" in (RENDERED.parent / "bake.sh").read_text()


@needs_root
def test_rotated_pcaps_exist(pcaps):
    assert len(list(pcaps.glob("vni7_*.pcap"))) >= 4


@needs_root
def test_extract_is_exactly_the_window_and_the_port(pcaps, tmp_path):
    everything = packets(*sorted(pcaps.glob("vni7_*.pcap")))
    # late in the run: the first files end well before the window, even if the kernel
    # handed their packets over a second late
    mid = everything[len(everything) * 3 // 4][0]
    at = datetime.fromtimestamp(mid, timezone.utc).astimezone(timezone(timedelta(hours=9)))  # given in JST
    listing = window("--at", at.isoformat(), "--window", "1s", "--vni", "7", "--dir", str(pcaps), "--json")
    assert listing.returncode == 0, listing.stderr
    listed = json.loads(listing.stdout)["pcaps"]
    assert 1 < len(listed) < len(list(pcaps.glob("vni7_*.pcap")))  # the window, not everything
    assert all(Path(p["path"]).name.startswith("vni7_") for p in listed)

    out = tmp_path / "cut.pcap"
    result = window("--at", at.isoformat(), "--window", "1s", "--vni", "7", "--dir", str(pcaps), "--port", "5000", "--out", str(out))
    assert result.returncode == 0, result.stderr
    want = [p for p in everything if mid - 1 <= p[0] <= mid + 1 and p[1] == 5000]
    got = packets(out)
    assert got == want and len(got) > 20

    shown = tmp_path / "display.pcap"
    result = window("--at", at.isoformat(), "--before", "1s", "--after", "0",
                    "--dir", str(pcaps), "--vni", "7", "--filter", "udp.dstport == 6000", "--out", str(shown))
    assert result.returncode == 0, result.stderr
    assert packets(shown) == [p for p in everything if mid - 1 <= p[0] <= mid and p[1] == 6000]


@needs_root
def test_the_capture_directory_comes_from_the_env_file(pcaps, tmp_path):
    env = tmp_path / "mirrorcap.env"
    env.write_text(re.sub(r"^MIRRORCAP_CAPTURE_DIR=.*$", f"MIRRORCAP_CAPTURE_DIR={pcaps}", ENV_FILE.read_text(), flags=re.M))
    listing = window("--at", "now", "--window", "1h", "--vni", "7", "--json", env_file=env)
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout)["directory"] == str(pcaps)
    assert len(json.loads(listing.stdout)["pcaps"]) == len(list(pcaps.glob("vni7_*.pcap")))
    missing = window("--at", "now", env_file=tmp_path / "nowhere.env")
    assert missing.returncode == 2 and "nowhere.env" in missing.stderr


@needs_root
def test_refusals(pcaps, tmp_path):
    naive = window("--at", "2026-11-25T10:15:00", "--dir", str(pcaps))
    assert naive.returncode == 2 and "no time zone" in naive.stderr
    assert window("--at", "2001-01-01T00:00:00Z", "--dir", str(pcaps)).returncode == 1  # nothing covers it
    keep = tmp_path / "mine.pcap"
    keep.write_bytes(b"precious")
    clash = window("--at", "now", "--window", "1h", "--dir", str(pcaps), "--out", str(keep))
    assert clash.returncode == 2 and "never overwrites" in clash.stderr and keep.read_bytes() == b"precious"
    nofile = window("--at", "now", "--dir", str(pcaps), "--port", "53")
    assert nofile.returncode == 2 and "--out" in nofile.stderr


@needs_root
def test_open_hands_the_extract_to_termshark(pcaps, tmp_path):
    # termshark is an interactive TUI: a stand-in records how it was started.
    fake = tmp_path / "termshark"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/termshark.args\n")
    fake.chmod(0o755)
    newest = max(packets(*sorted(pcaps.glob("vni7_*.pcap"))))[0]
    at = datetime.fromtimestamp(newest, timezone.utc).isoformat()
    result = window("--at", at, "--window", "2s", "--dir", str(pcaps), "--vni", "7", "--open", cwd=tmp_path,
                    env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    args = (tmp_path / "termshark.args").read_text().split()
    assert args[0] == "-r" and (tmp_path / args[1]).is_file() and len(packets(tmp_path / args[1])) > 0


@needs_root
def test_extract_is_created_exclusively_with_the_pcaps_mode(pcaps, tmp_path):
    """The extract holds the same production payloads as the pcaps: 0640 whatever the umask, never
    through a name planted in a shared directory (a dangling symlink is the classic /tmp attack)."""
    newest = max(packets(*sorted(pcaps.glob("vni7_*.pcap"))))[0]
    at = datetime.fromtimestamp(newest, timezone.utc).isoformat()
    out = tmp_path / "err.pcap"
    made = subprocess.run(["sh", "-c", 'umask 022; exec "$@"', "sh", str(WINDOW), "--env-file", str(ENV_FILE), "--at", at,
                           "--window", "2s", "--dir", str(pcaps), "--vni", "7", "--out", str(out)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert oct(out.stat().st_mode & 0o777) == "0o640" and packets(out)
    assert not list(tmp_path.glob(".mirrorcap-window-*"))  # no partial left behind
    target, planted = tmp_path / "victim", tmp_path / "planted.pcap"
    planted.symlink_to(target)  # dangling: os.path.exists() says False
    refused = window("--at", at, "--window", "2s", "--dir", str(pcaps), "--vni", "7", "--out", str(planted))
    assert refused.returncode == 2 and "not replaced" in refused.stderr
    assert not target.exists() and planted.is_symlink() and not list(tmp_path.glob(".mirrorcap-window-*"))
