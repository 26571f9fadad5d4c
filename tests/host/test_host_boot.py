"""The capture host as production makes it: rendered/prod/bake.sh baked into the image,
then the committed user data, under a real systemd 252 as PID 1.

This is the proof of the host's normal path. The boot lab (tests/bootlab/) gives a
Debian bookworm root (systemd 252, the major version Amazon Linux 2023 ships), a
veth as the mirror ENI (MTU 9001) with a fake IMDSv2 at 169.254.169.254, and a loop
device under the NVMe by-id name of the volume. From there on everything is the
real thing: the units exactly as rendered, the distribution's tcpdump, no switch of
any kind. The faults (a full volume, kills, late volumes, a slow metadata service...)
are in test_host_faults.py.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import time
from pathlib import Path

import pytest

from bootlab import Machine, needs_lab, rootfs
from capturehost import (DIR, ENI, VNI, VOLUME, Traffic, baked, captured, capture_state, check, health, pcaps,
                         rendered_user_data, stop, tag, tcpdump_pid, unit, wait_capturing, wait_for)
from helpers import EXAMPLE
from mirrorcap.host import render
from mirrorcap.inventory import load
from bootlab.traffic import inner_ipv4, inner_ipv6, read_pcap

pytestmark = needs_lab

OTHER_VNI = 999
UNIT = unit()
CAP_NET_RAW = 1 << 13
JUMBO = 8947  # the largest inner IP packet a 9001-MTU source mirrors whole


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with baked(tmp_path_factory.mktemp("host"), "capture") as m:
        m.boot()
        wait_capturing(m)
        yield m


def test_first_boot_mounts_the_volume_for_everyone_and_starts_capture_after_it(host):
    m = host
    for u in ["mirrorcap.target", "mirrorcap-storage.service", "mirrorcap-decap.service", UNIT, "mirrorcap-retention.timer"]:
        assert m.unit_state(u) == "active", m.journal(u)
    # In order: capture's process started after storage's and decap's had finished.
    started = int(m.unit_show(UNIT, "ExecMainStartTimestampMonotonic")["ExecMainStartTimestampMonotonic"])
    for u in ["mirrorcap-storage.service", "mirrorcap-decap.service"]:
        done = int(m.unit_show(u, "ExecMainExitTimestampMonotonic")["ExecMainExitTimestampMonotonic"])
        assert 0 < done <= started, u
    # Boot is never held up by the capture: multi-user.target does not wait for it.
    assert "mirrorcap.target" not in m.unit_show("multi-user.target", "After")["After"].split()
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
    # vxlan on the ENI found through IMDSv2, MTU = 9001 - 50, marked as mirrorcap's.
    details = m.run("ip", "-d", "link", "show", f"vxlan{VNI}").stdout
    assert f"vxlan id {VNI} " in details and f"dev {m.mirror_iface} " in details and "mtu 8951 " in details
    assert "alias mirrorcap" in details
    # The bake installed every host file as rendered.
    (capture,) = load(EXAMPLE).captures
    for f in render.host_files(capture):
        assert m.read_file(f.path) == f.content, f.path


def test_replayed_vxlan_is_captured_whole_and_only_its_vni(host):
    m, traffic = host, Traffic(host)
    ordinary = traffic.frames(0, 200)
    jumbo = [traffic.frame(VNI, inner_ipv4(tag(1000 + i), JUMBO)) for i in range(20)]
    v6 = [traffic.frame(VNI, inner_ipv6(tag(2000 + i))) for i in range(50)]
    wrong = traffic.frames(3000, 50, vni=OTHER_VNI)
    traffic.replay(ordinary + jumbo + v6 + wrong, "--pps=5000")
    burst = traffic.frames(10000, 30000)
    traffic.replay(burst)  # top speed
    expected = {**{i: 14 + 500 for i in range(200)}, **{1000 + i: 14 + JUMBO for i in range(20)},
                **{2000 + i: 14 + 500 for i in range(50)}, **{10000 + i: 14 + 500 for i in range(30000)}}
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


def test_a_lone_packet_reaches_its_pcap_without_more_traffic(host):
    """tcpdump writes buffered (4 KiB at a time): only the capture's flush puts a lone packet on disk."""
    m, traffic = host, Traffic(host)
    assert 600000 not in captured(m)
    traffic.replay(traffic.frames(600000, 1))
    wait_for(lambda: 600000 in captured(m), 10, "the lone packet in its pcap", step=0.2)
    assert tcpdump_pid(m) and capture_state(m)["gaps_total"] == 0


def test_health_is_healthy_counts_only_the_units_tcpdump_and_sees_other_vnis(host):
    m, traffic = host, Traffic(host)
    traffic.replay(traffic.frames(40000, 10))
    code, report = health(m, sample=1)
    assert code == 0, report
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    # This lab serves no CloudWatch: whether the publisher failed twice yet depends on the clock (never a failure).
    assert statuses.pop("metrics") in ("ok", "warn")
    assert statuses == {
        "storage": "ok", "decap": "ok", "mtu": "ok", "services": "ok", "tcpdump": "ok", "writing": "ok", "restarts": "ok",
        "newest-pcap": "ok", "index": "ok", "drops": "ok", "truncated": "ok", "unmatched": "ok", "disk": "ok"}
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
    sender = traffic.background(traffic.frames(50000, 1, vni=OTHER_VNI), pps=50)
    try:
        code, report = health(m, sample=2)
    finally:
        stop(sender)
    unmatched = check(report, "unmatched")
    assert code == 1 and unmatched["status"] == "fail" and unmatched["vnis"].keys() == {str(OTHER_VNI)}, unmatched


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
    """An operator shrinks tcpdump's kernel buffer (the env file, then a reload): a flood overruns it."""
    m, traffic = host, Traffic(host)
    env = m.read_file("/etc/mirrorcap/mirrorcap.env")
    m.write_file("/etc/mirrorcap/mirrorcap.env", re.sub(r"MIRRORCAP_BUFFER_KIB=\d+", "MIRRORCAP_BUFFER_KIB=32", env))
    try:
        m.run("systemctl", "reload", UNIT, check=True)  # the watcher restarts tcpdump: its command changed
        wait_for(lambda: "-B 32 " in m.run("ps", "-o", "args=", "-p", str(tcpdump_pid(m))).stdout, 15, "tcpdump -B 32")
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
        # The drops survive the tcpdump that counted them: its last counters go to the loss record.
        m.run("systemctl", "restart", UNIT, check=True)
        wait_capturing(m)
        assert capture_state(m)["kernel_drops_total"] >= drops["dropped"]
    finally:
        m.write_file("/etc/mirrorcap/mirrorcap.env", env)
        m.run("systemctl", "reload", UNIT, check=True)
        wait_for(lambda: "-B 8192 " in m.run("ps", "-o", "args=", "-p", str(tcpdump_pid(m))).stdout, 15, "tcpdump -B 8192")
        wait_capturing(m)
        health(m)


def test_a_second_boot_keeps_the_volume_and_captures_again(host):
    m, traffic = host, Traffic(host)
    uuid = m.run("blkid", "-p", "-o", "value", "-s", "UUID", m.volume_node).stdout.strip()
    before = {name: m.path(f"{DIR}/{name}").read_bytes() for name in pcaps(m)}
    gaps = capture_state(m)["gaps_total"]
    m.reboot()  # a power cut: what tcpdump held in its buffer is gone, its last record may be torn
    wait_capturing(m)
    assert m.run("blkid", "-p", "-o", "value", "-s", "UUID", m.volume_node).stdout.strip() == uuid  # not reformatted
    for name, data in before.items():  # every whole record kept, byte for byte (a torn tail cut off)
        if len(data) < 24:
            continue  # not even a whole header: it held no packet, and went (a new pcap may have its name)
        now = m.path(f"{DIR}/{name}").read_bytes()
        whole = 24 + sum(16 + c for c, _, _ in read_pcap(data))
        assert data[:whole] == now[:whole] and len(now) in (whole, len(data)), name
    assert "is blank: creating xfs" not in m.journal("mirrorcap-storage.service", boot="0")
    # The reboot is a gap whose loss the host cannot count (it was down): recorded and reported once.
    state = capture_state(m)
    assert state["gaps_total"] == gaps + 1 and state["gaps"][-1]["lost_packets_max"] is None
    assert state["gaps"][-1]["reason"] == "the host restarted"
    # mirrorcap-metrics' timer runs health too (once a minute, from boot): it is told of the gap on its own
    # account and the person who asks next still is (it once took the report, and health said all was well).
    assert m.run("systemctl", "start", "mirrorcap-metrics.service", timeout=120).returncode == 0
    seen = json.loads(m.read_file("/var/lib/mirrorcap/health-state.metrics.json"))
    assert seen[f"gaps:{VNI}"] == gaps + 1, seen
    code, report = health(m)
    assert code == 1 and "unknown number" in check(report, "writing")["detail"], report
    assert health(m)[0] == 0
    traffic.replay(traffic.frames(95000, 20))
    wait_for(lambda: set(range(95000, 95020)) <= set(captured(m)), 10, "capture after the reboot")
    # The user data again, by hand: nothing lost, nothing reformatted, still capturing, no gap.
    held = {name: m.path(f"{DIR}/{name}").read_bytes() for name in pcaps(m)}
    again = m.run("bash", "/var/lib/cloud/instance/user-data.txt", timeout=120)
    assert again.returncode == 0, again.stderr
    wait_capturing(m)
    assert m.run("blkid", "-p", "-o", "value", "-s", "UUID", m.volume_node).stdout.strip() == uuid
    evidence = "\n".join(m.journal(u, boot="0")[-3000:] for u in (UNIT, "mirrorcap-retention.service", "mirrorcap-boot.service"))
    for name, data in held.items():  # every packet the pcaps held is still there, byte for byte
        whole = 24 + sum(16 + c for c, _, _ in read_pcap(data))
        if whole > 24:
            assert m.path(f"{DIR}/{name}").exists() and m.path(f"{DIR}/{name}").read_bytes()[:whole] == data[:whole], \
                f"{name} ({len(data)} bytes before the user data ran again): {sorted(pcaps(m))}\n{evidence}"
    assert set(range(95000, 95020)) <= set(captured(m)), evidence
    time.sleep(2)
    assert capture_state(m)["gaps_total"] == gaps + 1, f"{capture_state(m)['gaps'][-1]}\n{evidence}"


def test_concurrent_bootstrap_two_at_once_take_turns_and_both_succeed(host):
    """concurrent_bootstrap: the user data run twice at the same moment (cloud-init and a person, or a boot's
    mirrorcap-settings) once raced on the env file's temporary copy and one ended in `mv: cannot move`."""
    m = host
    env = m.read_file("/etc/mirrorcap/mirrorcap.env")
    pid = tcpdump_pid(m)
    for _ in range(3):
        r = m.run("bash", "-c", "bash /var/lib/cloud/instance/user-data.txt > /tmp/a.log 2>&1 & a=$!; "
                  "bash /var/lib/cloud/instance/user-data.txt > /tmp/b.log 2>&1 & b=$!; "
                  "wait $a; ra=$?; wait $b; rb=$?; cat /tmp/a.log /tmp/b.log; echo \"rc $ra $rb\"", timeout=300)
        assert r.stdout.strip().endswith("rc 0 0"), r.stdout + r.stderr
    assert m.read_file("/etc/mirrorcap/mirrorcap.env") == env and not m.path("/etc/mirrorcap/mirrorcap.env.tmp").exists()
    wait_capturing(m)
    assert tcpdump_pid(m) == pid  # converged on the same settings: the capture never restarted


def dos_partition_table(image: Path) -> None:
    """One Linux partition in an MBR (what `fdisk` writes), no file system."""
    entry = struct.pack("<B3sB3sII", 0, b"\0\0\0", 0x83, b"\0\0\0", 2048, image.stat().st_size // 512 - 2048)
    with open(image, "r+b") as f:
        f.seek(446)
        f.write(entry + bytes(48) + b"\x55\xaa")


@pytest.mark.parametrize("kind", ["ext4", "partition table"])
def test_a_volume_holding_something_else_is_never_formatted_and_its_remedy_works(tmp_path, kind):
    """A re-attached or wrong volume with another file system or a partition table: storage refuses,
    capture never starts, health says why; the remedy storage prints (wipe it deliberately, then start
    the target) captures."""
    image = tmp_path / f"volume-{VOLUME}.img"
    with open(image, "wb") as f:
        f.truncate(400 << 20)
    if kind == "ext4":
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    else:
        dos_partition_table(image)
    before = image.read_bytes()[:1 << 20]
    with baked(tmp_path, "foreign") as m:
        m.boot()
        assert m.wait_unit("mirrorcap-storage.service", ("failed",), timeout=60) == "failed"
        why = m.journal("mirrorcap-storage.service")
        assert "refusing" in why and kind.replace("partition table", "dos partition table") in why, why
        assert m.unit_state(UNIT) != "active" and not m.run("findmnt", DIR).stdout
        assert image.read_bytes()[:1 << 20] == before  # not a byte of it changed
        code, report = health(m)
        storage = check(report, "storage")
        assert code == 1 and storage["status"] == "fail" and "refusing" in storage["detail"], storage
        remedy = re.search(r"\(wipefs -a (\S+)\), then: (systemctl start mirrorcap\.target)", storage["detail"])
        assert remedy, storage["detail"]
        assert m.run("wipefs", "-a", remedy.group(1)).returncode == 0
        assert m.run(*remedy.group(2).split()).returncode == 0
        wait_capturing(m)
        traffic = Traffic(m)
        traffic.replay(traffic.frames(0, 20))
        wait_for(lambda: set(range(20)) <= set(captured(m)), 10, "capture after the remedy")
        assert health(m)[0] == 0


def test_user_data_without_a_baked_image_says_what_to_do(tmp_path):
    with Machine(rootfs(), tmp_path, "unbaked", eni_id=ENI, volume_id=VOLUME) as m:
        m.install_user_data(rendered_user_data())
        m.boot()
        assert "bake the AMI (rendered/prod/bake.sh) first" in m.journal("lab-cloud-init.service")
