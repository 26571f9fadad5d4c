"""The capture host as it boots: the committed user data under a real systemd 252 as PID 1.

This is the proof of the host side. The boot lab (tests/bootlab.py) gives a
Debian bookworm root (systemd 252, the major version Amazon Linux 2023 ships),
a veth as the mirror ENI (MTU 9001) with a fake IMDSv2 at 169.254.169.254, and a
loop device under the NVMe by-id name of the volume. The user data is
rendered/prod/user-data.sh with the IDs Terraform would fill in, run once by a
cloud-init stand-in; from there on everything is the real thing: bake, the
units exactly as rendered, the distribution's tcpdump, no switch of any kind.
Traffic is AWS-shaped VXLAN replayed with tcpreplay from the sender namespace.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import time
from pathlib import Path

import pytest

from bootlab import Machine, needs_lab, rootfs
from helpers import EXAMPLE, ROOT
from mirrorcap.host import render
from mirrorcap.inventory import load
from vxlan import inner_ipv4, inner_ipv6, read_pcap, vxlan_frame, write_pcap

pytestmark = needs_lab

VOLUME, ENI = "vol-0123456789abcdef0", "eni-0123456789abcdef0"
VNI, OTHER_VNI = 12345, 999
DIR = "/var/log/tcpdump"
RUN = f"/run/mirrorcap/capture-{VNI}"
UNIT = f"mirrorcap-capture@{VNI}.service"
CAP_NET_RAW = 1 << 13
JUMBO = 8947  # the largest inner IP packet a 9001-MTU source mirrors whole
TAG = re.compile(rb"MCT(\d{8})")


def user_data() -> str:
    text = (ROOT / "rendered/prod/user-data.sh").read_text()
    return text.replace(render.VOLUME_PLACEHOLDER, VOLUME).replace(render.ENI_PLACEHOLDER, ENI)


def tag(n: int) -> bytes:
    return b"MCT%08d" % n


class Traffic:
    """AWS-shaped VXLAN to one machine's mirror ENI, replayed with tcpreplay."""

    def __init__(self, m: Machine):
        self.m = m
        self.n = 0

    def frame(self, vni: int, inner: bytes) -> bytes:
        self.n += 1
        return vxlan_frame(vni, inner, dst_mac=self.m.mirror_mac, src_mac=self.m.sender_mac,
                           dst_ip=self.m.mirror_ip.split("/")[0], src_ip=self.m.sender_ip.split("/")[0], ident=self.n)

    def pcap(self, frames: list[bytes]) -> Path:
        return write_pcap(self.m.workdir / f"replay-{time.monotonic_ns()}.pcap", frames)

    def replay(self, frames: list[bytes], *speed: str) -> str:
        r = self.m.sender("tcpreplay", "-q", "-i", self.m.sender_iface, *(speed or ("--topspeed",)), str(self.pcap(frames)))
        assert r.returncode == 0, r.stderr
        return r.stdout

    def background(self, frames: list[bytes], pps: int) -> subprocess.Popen:
        """Replays `frames` in a loop at `pps` until killed."""
        return subprocess.Popen(["ip", "netns", "exec", self.m.sender_netns, "tcpreplay", "-q", "-i", self.m.sender_iface,
                                 "--loop=0", f"--pps={pps}", str(self.pcap(frames))],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(10)


def pcaps(m: Machine) -> dict[str, os.stat_result]:
    d = m.path(DIR)
    return {p.name: p.stat() for p in d.iterdir() if p.name.endswith(".pcap")}


def captured(m: Machine) -> dict[int, list[tuple[int, int]]]:
    """Tag -> [(caplen, len), ...] over every pcap of the capture's VNI."""
    seen: dict[int, list[tuple[int, int]]] = {}
    for p in sorted(m.path(DIR).glob(f"vni{VNI}_*.pcap")):
        for caplen, length, data in read_pcap(p.read_bytes()):
            found = TAG.search(data)
            if found:
                seen.setdefault(int(found.group(1)), []).append((caplen, length))
    return seen


def wait_for(predicate, timeout: float, what: str, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def capture_state(m: Machine) -> dict:
    try:
        return json.loads(m.path(f"{RUN}/state.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_capturing(m: Machine, timeout: float = 120) -> dict:
    def ready():
        state = capture_state(m)
        return state if m.unit_state(UNIT) == "active" and state.get("writing") else None
    try:
        return wait_for(ready, timeout, f"{UNIT} writing")
    except AssertionError:
        raise AssertionError(f"{UNIT} not capturing: {m.unit_state(UNIT)}\n{m.journal('mirrorcap-storage.service')}"
                             f"\n{m.journal('mirrorcap-decap.service')}\n{m.journal(UNIT)}\n{m.console_tail()}")


def health(m: Machine, sample: float = 0) -> tuple[int, dict]:
    r = m.run("mirrorcap-health", "--json", "--sample-seconds", str(sample))
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


def check(report: dict, name: str) -> dict:
    (found,) = [c for c in report["checks"] if c["name"] == name]
    return found


def tcpdump_pid(m: Machine) -> int:
    main = int(m.unit_show(UNIT, "MainPID")["MainPID"])
    out = m.run("pgrep", "-P", str(main), "-x", "tcpdump").stdout.split()
    return int(out[0]) if out else 0


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with Machine(rootfs(), tmp_path_factory.mktemp("host"), "capture", eni_id=ENI, volume_id=VOLUME) as m:
        m.install_user_data(user_data())
        m.boot()
        wait_capturing(m)
        yield m


def test_first_boot_mounts_the_volume_for_everyone_and_starts_capture_after_it(host):
    m = host
    for unit in ["mirrorcap-storage.service", "mirrorcap-decap.service", UNIT, "mirrorcap-retention.timer"]:
        assert m.unit_state(unit) == "active", m.journal(unit)
    # In order: capture's process started after storage's and decap's had finished.
    started = int(m.unit_show(UNIT, "ExecMainStartTimestampMonotonic")["ExecMainStartTimestampMonotonic"])
    for unit in ["mirrorcap-storage.service", "mirrorcap-decap.service"]:
        done = int(m.unit_show(unit, "ExecMainExitTimestampMonotonic")["ExecMainExitTimestampMonotonic"])
        assert 0 < done <= started, unit
    # Seen from the machine's init mount namespace, outside every unit: the volume, xfs, data-only options.
    source, fstype, options = m.run("findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "--mountpoint", DIR).stdout.split()
    assert source == m.volume_node and fstype == "xfs"
    assert {"nodev", "nosuid", "noexec", "noatime"} <= set(options.split(","))
    assert m.run("stat", "-c", "%a %U %G", DIR).stdout.split() == ["2750", "mirrorcap", "pcap"]
    # tcpdump runs as the capture user with CAP_NET_RAW as its one capability, as the unit's child.
    pid = tcpdump_pid(m)
    status = m.run("cat", f"/proc/{pid}/status").stdout
    caps = {k: int(v, 16) for k, v in re.findall(r"^(Cap(?:Eff|Prm|Bnd|Amb)):\s+([0-9a-f]+)$", status, re.M)}
    assert caps == {"CapEff": CAP_NET_RAW, "CapPrm": CAP_NET_RAW, "CapBnd": CAP_NET_RAW, "CapAmb": CAP_NET_RAW}
    uid = re.search(r"^Uid:\s+(\d+)", status, re.M).group(1)
    assert uid == m.run("id", "-u", "mirrorcap").stdout.strip()
    # vxlan on the ENI found through IMDSv2, MTU = 9001 - 50.
    details = m.run("ip", "-d", "link", "show", f"vxlan{VNI}").stdout
    assert f"vxlan id {VNI} " in details and f"dev {m.mirror_iface} " in details and "mtu 8951 " in details
    # bake installed every host file as the user data carries it.
    (capture,) = load(EXAMPLE).captures
    for f in render.host_files(capture):
        assert m.read_file(f.path) == render.without_comment_lines(f).content, f.path


def test_replayed_vxlan_is_captured_whole_and_only_its_vni(host):
    m, traffic = host, Traffic(host)
    ordinary = [traffic.frame(VNI, inner_ipv4(tag(i))) for i in range(200)]
    jumbo = [traffic.frame(VNI, inner_ipv4(tag(1000 + i), JUMBO)) for i in range(20)]
    v6 = [traffic.frame(VNI, inner_ipv6(tag(2000 + i))) for i in range(50)]
    wrong = [traffic.frame(OTHER_VNI, inner_ipv4(tag(3000 + i))) for i in range(50)]
    traffic.replay(ordinary + jumbo + v6 + wrong, "--pps=5000")
    burst = [traffic.frame(VNI, inner_ipv4(tag(10000 + i))) for i in range(30000)]
    traffic.replay(burst)  # top speed
    expected = {**{i: 14 + 500 for i in range(200)}, **{1000 + i: 14 + JUMBO for i in range(20)},
                **{2000 + i: 14 + 500 for i in range(50)}, **{10000 + i: 14 + 500 for i in range(30000)}}
    # -U: every packet written as it arrives, all there within a few seconds.
    seen = wait_for(lambda: (lambda s: s if set(expected) <= set(s) else None)(captured(m)), 15,
                    "every replayed packet in the pcaps")
    assert not any(3000 <= t < 3050 for t in seen), "packets of another VNI were captured"
    for t, length in expected.items():
        assert seen[t] == [(length, length)], (t, seen[t])  # once, whole, the inner frame (no VXLAN header)
    code, report = health(m)
    drops = check(report, "drops")
    assert drops["dropped"] == 0 and drops["captured"] >= len(expected), drops
    for name, st in pcaps(m).items():
        assert (oct(st.st_mode & 0o777), st.st_uid, st.st_gid) == (
            "0o640", int(m.run("id", "-u", "mirrorcap").stdout), int(m.run("getent", "group", "pcap").stdout.split(":")[2])), name
    # Nothing reached the root volume under the mount point.
    assert not list((m.workdir / "overlay/upper" / DIR.lstrip("/")).glob("*.pcap"))


def test_health_is_healthy_counts_only_the_units_tcpdump_and_sees_other_vnis(host):
    m, traffic = host, Traffic(host)
    traffic.replay([traffic.frame(VNI, inner_ipv4(tag(40000 + i))) for i in range(10)])
    code, report = health(m, sample=1)
    assert code == 0, report
    assert {c["name"]: c["status"] for c in report["checks"]} == {
        "services": "ok", "tcpdump": "ok", "writing": "ok", "newest-pcap": "ok", "drops": "ok", "unmatched": "ok", "disk": "ok"}
    # A person's tcpdump on the same interface is neither counted nor signalled.
    foreign = m.run("sh", "-c", f"tcpdump -i vxlan{VNI} -w /dev/null >/tmp/foreign.log 2>&1 & echo $!").stdout.strip()
    try:
        time.sleep(1)
        code, report = health(m)
        assert check(report, "tcpdump")["pids"] == [tcpdump_pid(m)] and int(foreign) not in check(report, "tcpdump")["pids"]
        assert "packets captured" not in m.read_file("/tmp/foreign.log")  # SIGUSR1 would make it print its counters
    finally:
        m.run("kill", foreign)
    # A session stamping another VNI: the kernel drops its packets; health samples the ENI and says so.
    sender = traffic.background([traffic.frame(OTHER_VNI, inner_ipv4(tag(50000)))], pps=50)
    try:
        code, report = health(m, sample=2)
    finally:
        stop(sender)
    unmatched = check(report, "unmatched")
    assert code == 1 and unmatched["status"] == "fail" and unmatched["vnis"].keys() == {str(OTHER_VNI)}, unmatched


def test_a_killed_tcpdump_is_restarted_and_its_gap_reported(host):
    m, traffic = host, Traffic(host)
    health(m)  # a fresh baseline for "since the last check"
    before = capture_state(m)
    sender = traffic.background([traffic.frame(VNI, inner_ipv4(tag(60000 + i))) for i in range(100)], pps=1000)
    try:
        time.sleep(2)
        old = tcpdump_pid(m)
        assert m.run("kill", "-9", str(old)).returncode == 0
        new = wait_for(lambda: (lambda p: p if p and p != old else None)(tcpdump_pid(m)), 10, "a new tcpdump")
        time.sleep(2)
    finally:
        stop(sender)
    state = capture_state(m)
    assert state["writing"] and state["pid"] == new and state["gaps_total"] == before.get("gaps_total", 0) + 1
    gap = state["gaps"][-1]
    assert "killed by signal 9" in gap["reason"] and gap["end"] - gap["start"] < 5 and gap["lost_packets_max"] > 0, gap
    code, report = health(m)
    writing = check(report, "writing")
    assert code == 1 and writing["status"] == "fail" and writing["lost_since_last_check"] == gap["lost_packets_max"], writing
    assert check(health(m)[1], "writing")["status"] == "ok"  # reported once
    traffic.replay([traffic.frame(VNI, inner_ipv4(tag(70000 + i))) for i in range(20)])
    wait_for(lambda: set(range(70000, 70020)) <= set(captured(m)), 10, "capture after the restart")
    assert m.unit_state(UNIT) == "active"


def test_a_full_disk_is_a_reported_gap_that_ends_when_retention_frees_it(host):
    m, traffic = host, Traffic(host)
    health(m)
    # Filled by a file retention may not touch (in a root-owned subdirectory) until the gap is seen,
    # then handed to retention as the 10-month-old pcap of a VNI no longer configured.
    hold, filler = f"{DIR}/hold/filler", f"{DIR}/vni{OTHER_VNI}_2026-01-01T00-00-00Z.pcap"
    avail = int(m.run("df", "-B1", "--output=avail", DIR).stdout.split()[1])
    fill = m.run("sh", "-c", f"mkdir -p {DIR}/hold && fallocate -l {avail - (256 << 10)} {hold}")
    assert fill.returncode == 0, fill.stderr
    sender = traffic.background([traffic.frame(VNI, inner_ipv4(tag(80000 + i))) for i in range(100)], pps=500)
    try:
        wait_for(lambda: capture_state(m).get("gap"), 60, "the capture to notice it is not writing")
        code, report = health(m)
        writing = check(report, "writing")
        assert code == 1 and writing["status"] == "fail" and "NOT WRITING" in writing["detail"], writing
        assert "disk full" in writing["detail"] or "No space" in writing["detail"], writing
        handed = m.run("sh", "-c", f"mv {hold} {filler} && chown mirrorcap:pcap {filler} && touch -d 2026-01-01 {filler}")
        assert handed.returncode == 0, handed.stderr
        # Retention (every minute) deletes it; capture resumes within about a second of the room.
        wait_for(lambda: not m.path(filler).exists(), 90, "retention to delete the filler")
        freed = time.monotonic()
        wait_for(lambda: capture_state(m).get("writing"), 10, "capture to resume", step=0.2)
        resumed_after = time.monotonic() - freed
    finally:
        stop(sender)
        m.run("rm", "-rf", f"{DIR}/hold")
    assert resumed_after < 3, resumed_after
    assert f"deleted {Path(filler).name} (older than 15 days)" in m.journal("mirrorcap-retention.service")
    gap = capture_state(m)["gaps"][-1]
    assert "disk full" in gap["reason"] and gap["lost_packets_max"] > 0, gap
    code, report = health(m)
    assert code == 1 and check(report, "writing")["lost_since_last_check"] == gap["lost_packets_max"]
    traffic.replay([traffic.frame(VNI, inner_ipv4(tag(90000 + i))) for i in range(20)])
    wait_for(lambda: set(range(90000, 90020)) <= set(captured(m)), 10, "capture after the disk was freed")
    assert health(m)[0] == 0


def test_retention_in_its_unit_keeps_what_it_must(host):
    m = host
    old = "2026-01-01"
    keep = ["notes.txt", "sub/vni12345_2026-01-01T00-00-00Z.pcap", "vni12345_2026-01-01T00-00-00Z.pcapng"]
    script = ["set -e", f"cd {DIR}", "mkdir -p sub"]
    for name in keep + ["vni12345_2026-01-01T00-10-00Z.pcap", "vni7_2026-01-01T00-00-00Z.pcap"]:
        script.append(f"echo x > {name} && touch -d {old} {name}")
    newest = max(n for n in pcaps(m) if n.startswith(f"vni{VNI}_"))  # the file tcpdump writes now
    r = m.run("setpriv", "--reuid=mirrorcap", "--regid=pcap", "--clear-groups", "sh", "-c", "; ".join(script))
    assert r.returncode == 0, r.stderr
    assert m.run("systemctl", "start", "mirrorcap-retention.service").returncode == 0
    names = set(pcaps(m)) | {str(p.relative_to(m.path(DIR))) for p in m.path(DIR).rglob("*") if p.is_file()}
    assert set(keep) <= names and newest in names
    assert "vni12345_2026-01-01T00-10-00Z.pcap" not in names and "vni7_2026-01-01T00-00-00Z.pcap" not in names


def test_health_reports_kernel_drops_once(host):
    """An operator shrinks tcpdump's kernel buffer (the env file, then a restart): a flood overruns it."""
    m, traffic = host, Traffic(host)
    env = m.read_file("/etc/mirrorcap/mirrorcap.env")
    m.write_file("/etc/mirrorcap/mirrorcap.env", re.sub(r"MIRRORCAP_BUFFER_KIB=\d+", "MIRRORCAP_BUFFER_KIB=32", env))
    try:
        m.run("systemctl", "restart", UNIT, check=True)
        wait_capturing(m)
        health(m)
        flood = [traffic.frame(VNI, inner_ipv4(tag(99000), 1400))] * 50000
        for _ in range(5):
            traffic.replay(flood)
            code, report = health(m)
            if check(report, "drops")["dropped_since_last_check"]:
                break
        drops = check(report, "drops")
        assert code == 1 and drops["status"] == "fail" and "buffer_kib" in drops["detail"], drops
        assert check(health(m)[1], "drops")["dropped_since_last_check"] == 0  # reported once
    finally:
        m.write_file("/etc/mirrorcap/mirrorcap.env", env)
        m.run("systemctl", "restart", UNIT, check=True)
        wait_capturing(m)


def test_a_second_boot_keeps_the_volume_and_captures_again(host):
    m, traffic = host, Traffic(host)
    uuid = m.run("blkid", "-p", "-o", "value", "-s", "UUID", m.volume_node).stdout.strip()
    before = pcaps(m)
    m.reboot()
    wait_capturing(m)
    assert m.run("blkid", "-p", "-o", "value", "-s", "UUID", m.volume_node).stdout.strip() == uuid  # not reformatted
    after = pcaps(m)
    assert all(name in after and after[name].st_size >= st.st_size for name, st in before.items())
    assert "is blank: creating xfs" not in m.journal("mirrorcap-storage.service", boot="0")
    traffic.replay([traffic.frame(VNI, inner_ipv4(tag(95000 + i))) for i in range(20)])
    wait_for(lambda: set(range(95000, 95020)) <= set(captured(m)), 10, "capture after the reboot")
    # The user data again, by hand: nothing lost, nothing reformatted, still capturing.
    again = m.run("bash", "/var/lib/cloud/instance/user-data.txt", timeout=120)
    assert again.returncode == 0, again.stderr
    wait_capturing(m)
    assert m.run("blkid", "-p", "-o", "value", "-s", "UUID", m.volume_node).stdout.strip() == uuid
    assert set(after) <= set(pcaps(m))


def test_without_its_volume_the_host_captures_nothing_until_it_is_attached(tmp_path):
    with Machine(rootfs(), tmp_path, "novolume", eni_id=ENI, volume_id=None) as m:
        m.install_user_data(user_data())
        m.boot(until=("starting", "running", "degraded"))  # boot is not finished while storage waits
        wait_for(lambda: m.unit_state("mirrorcap-storage.service") == "activating", 60, "storage waiting for the volume")
        time.sleep(3)
        assert m.unit_state(UNIT) != "active" and not m.run("pgrep", "-x", "tcpdump").stdout
        assert not m.run("findmnt", DIR).stdout
        assert m.run("sh", "-c", f"ls -A {DIR} 2>/dev/null").stdout == ""  # nothing on the root volume
        assert not m.run("pgrep", "-x", "tcpdump").stdout
        code, report = health(m)
        assert code == 1 and check(report, "disk")["status"] == "fail" and check(report, "services")["status"] == "fail"
        # The trap the capture's own check must see through: in a sandbox with ReadWritePaths= (as in its
        # unit) mountpoint(1) calls a plain directory of the root volume "mounted". The watcher refuses it.
        m.run("install", "-d", "-o", "mirrorcap", "-g", "pcap", "-m", "2750", DIR, check=True)
        sandbox = ["systemd-run", "--wait", "--pipe", "--quiet", "-p", "User=mirrorcap", "-p", "Group=pcap",
                   "-p", "AmbientCapabilities=CAP_NET_RAW", "-p", "ProtectSystem=strict", "-p", f"ReadWritePaths={DIR}",
                   "-p", "RuntimeDirectory=mirrorcap/probe"]
        assert m.run(*sandbox, "mountpoint", "-q", DIR).returncode == 0
        probe = m.run(*sandbox, "/usr/local/libexec/mirrorcap/capture", str(VNI))
        assert probe.returncode != 0 and f"{DIR} is not a mounted volume" in probe.stderr, probe
        assert m.run("ls", "-A", DIR).stdout == ""
        # Terraform's attachment arrives late: storage finds it and capture starts.
        m.attach_volume(VOLUME)
        wait_capturing(m)
        traffic = Traffic(m)
        traffic.replay([traffic.frame(VNI, inner_ipv4(tag(i))) for i in range(20)])
        wait_for(lambda: set(range(20)) <= set(captured(m)), 10, "capture once the volume is attached")


def dos_partition_table(image: Path) -> None:
    """One Linux partition in an MBR (what `fdisk` writes), no file system."""
    entry = struct.pack("<B3sB3sII", 0, b"\0\0\0", 0x83, b"\0\0\0", 2048, image.stat().st_size // 512 - 2048)
    with open(image, "r+b") as f:
        f.seek(446)
        f.write(entry + bytes(48) + b"\x55\xaa")


@pytest.mark.parametrize("kind", ["ext4", "partition table"])
def test_a_volume_holding_something_else_is_never_formatted(tmp_path, kind):
    """A re-attached or wrong volume with another file system or a partition table: storage refuses, capture never starts."""
    image = tmp_path / f"volume-{VOLUME}.img"
    with open(image, "wb") as f:
        f.truncate(400 << 20)
    if kind == "ext4":
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    else:
        dos_partition_table(image)
    before = image.read_bytes()[:1 << 20]
    with Machine(rootfs(), tmp_path, "foreign", eni_id=ENI, volume_id=VOLUME) as m:
        m.install_user_data(user_data())
        m.boot()
        assert m.wait_unit("mirrorcap-storage.service", ("failed",), timeout=60) == "failed"
        why = m.journal("mirrorcap-storage.service")
        assert "refusing" in why and kind.replace("partition table", "dos partition table") in why, why
        assert m.unit_state(UNIT) != "active" and not m.run("findmnt", DIR).stdout
    assert image.read_bytes()[:1 << 20] == before  # not a byte of it changed
