"""Smoke test of the boot lab itself (tests/bootlab/): systemd 252 boots as
PID 1, the fake IMDS, the EBS by-id link, user data once per instance, a disk
that survives a reboot, sandboxing that is enforced, mounts that land where
they would on a host, and nothing left behind. Needs root; ~5 s once the
rootfs is cached (tools/bootlab-rootfs.sh builds it once: about a minute)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bootlab import STATE_DIR, USER_DATA_UNIT, Machine, needs_lab, rootfs

pytestmark = needs_lab

ENI = "eni-0123456789abcdef0"
VOLUME = "vol-0fedcba9876543210"
LINK = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0fedcba9876543210"
USER_DATA = """#!/bin/bash
set -euo pipefail
mkdir -p /var/lib/lab-smoke
echo "run at $(date +%s)" >> /var/lib/lab-smoke/user-data-runs
echo "lab-smoke: user data ran"
"""


def failed(m: Machine) -> str:
    units = m.failed_units()
    return f"failed units: {units}\n" + "\n".join(m.run("systemctl", "status", "--no-pager", "-n", "20", u).stdout
                                                 for u in units)


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    with Machine(rootfs(), tmp_path_factory.mktemp("bootlab"), "smoke", eni_id=ENI, volume_id=VOLUME) as m:
        m.install_user_data(USER_DATA)
        m.first_state = m.boot(timeout=120)
        yield m


def test_systemd_is_pid1_and_the_system_is_up(machine):
    exe = machine.run("readlink", "/proc/1/exe", check=True).stdout.strip()
    assert exe in ("/lib/systemd/systemd", "/usr/lib/systemd/systemd")
    assert machine.run("cat", "/proc/1/comm").stdout.strip() == "systemd"
    state = machine.run("systemctl", "is-system-running").stdout.strip()
    assert machine.first_state in ("running", "degraded") and state in ("running", "degraded"), failed(machine)
    assert state == "running", failed(machine)  # the stock root boots clean: no unit fails in the lab
    assert machine.run("hostname").stdout.strip() == "smoke"
    # Its own cgroup tree, pure cgroup2, systemd's layout.
    assert machine.run("cat", "/proc/1/cgroup").stdout.strip().splitlines()[-1] == "0::/init.scope"
    assert machine.run("stat", "-f", "-c", "%T", "/sys/fs/cgroup").stdout.strip() == "cgroup2fs"


def test_imds_v2_answers_inside_at_the_real_address(machine):
    script = """set -eu
imds=http://169.254.169.254
code=$(curl -s -o /dev/null -w '%{http_code}' $imds/latest/meta-data/network/interfaces/macs/)
t=$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' $imds/latest/api/token)
macs=$(curl -fsS -H "X-aws-ec2-metadata-token: $t" $imds/latest/meta-data/network/interfaces/macs/)
eni=$(curl -fsS -H "X-aws-ec2-metadata-token: $t" "$imds/latest/meta-data/network/interfaces/macs/${macs%/}/interface-id")
echo "$code $macs $eni $(cat /sys/class/net/ens6/address) $(cat /sys/class/net/ens6/mtu)"
"""
    p = machine.run("bash", "-c", script)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["401", f"{machine.mirror_mac}/", ENI, machine.mirror_mac, "9001"]


def test_volume_by_id_link_is_a_block_device(machine):
    p = machine.run("sh", "-c", f'd=$(readlink -f {LINK}) && test -b "$d" && echo "$d"')
    assert p.returncode == 0, machine.run("ls", "-lR", "/dev/disk").stdout
    assert p.stdout.strip() == machine.volume_node
    # udev's coldplug as the lab does it: systemd has a plugged .device unit for the link.
    unit = machine.run("systemd-escape", "--path", "--suffix=device", LINK).stdout.strip()
    assert machine.unit_state(unit) == "active"


def test_sandboxing_is_enforced(machine):
    def run(*props: str, cmd: str) -> subprocess.CompletedProcess:
        return machine.run("systemd-run", "--wait", "--pipe", "--quiet", *(f"-p{p}" for p in props), "sh", "-c", cmd)

    assert run("User=nobody", cmd="id -u").stdout.strip() == "65534"
    strict = run("ProtectSystem=strict", cmd="touch /usr/lab-smoke")
    assert strict.returncode != 0 and "Read-only file system" in strict.stderr
    assert machine.run("test", "-e", "/usr/lab-smoke").returncode != 0
    status = run("CapabilityBoundingSet=CAP_NET_RAW", "NoNewPrivileges=yes", cmd="grep -E '^(CapBnd|NoNewPrivs)' /proc/self/status")
    assert status.stdout.split() == ["CapBnd:", "0000000000002000", "NoNewPrivs:", "1"]
    assert run("PrivateTmp=yes", cmd="echo x > /tmp/lab-smoke").returncode == 0
    assert machine.run("test", "-e", "/tmp/lab-smoke").returncode != 0


def test_a_mount_made_by_a_unit_without_namespacing_is_the_hosts(machine):
    machine.run("mkdir", "-p", "/mnt/x", "/mnt/private", check=True)
    p = machine.run("systemd-run", "--wait", "--quiet", "mount", "-t", "tmpfs", "none", "/mnt/x")
    assert p.returncode == 0, p.stderr
    assert machine.run("findmnt", "-n", "-o", "FSTYPE", "/mnt/x").stdout.strip() == "tmpfs"
    assert machine.unit_state("mnt-x.mount") == "active"
    # With a namespacing option the mount stays in the unit's own namespace, as on a host.
    p = machine.run("systemd-run", "--wait", "--quiet", "-p", "PrivateTmp=yes", "mount", "-t", "tmpfs", "none", "/mnt/private")
    assert p.returncode == 0, p.stderr
    assert machine.run("findmnt", "/mnt/private").returncode != 0


def test_reboot_keeps_the_disk_and_user_data_runs_once(machine):
    assert machine.run("cat", "/var/lib/lab-smoke/user-data-runs").stdout.count("run at") == 1
    assert "lab-smoke: user data ran" in machine.journal(USER_DATA_UNIT)
    machine.write_file("/root/first-boot", "written on the first boot\n", 0o600)
    machine_id = machine.run("cat", "/etc/machine-id").stdout.strip()
    assert len(machine_id) == 32

    state = machine.reboot(timeout=120)
    assert state == "running", failed(machine)
    assert machine.boots == 2
    assert machine.run("cat", "/root/first-boot").stdout == "written on the first boot\n"
    assert machine.run("cat", "/etc/machine-id").stdout.strip() == machine_id
    assert machine.run("cat", "/var/lib/lab-smoke/user-data-runs").stdout.count("run at") == 1
    result = machine.unit_show(USER_DATA_UNIT, "ActiveState", "ConditionResult")
    assert result == {"ActiveState": "inactive", "ConditionResult": "no"}
    assert len(machine.run("journalctl", "--list-boots", "--no-pager", "-q").stdout.splitlines()) == 2
    assert machine.run("sh", "-c", f"test -b $(readlink -f {LINK})").returncode == 0
    # The cached rootfs (the overlay's lower layer) is never written.
    assert not (machine.rootfs / "root" / "first-boot").exists()
    assert (machine.workdir / "overlay" / "upper" / "root" / "first-boot").exists()


def test_no_volume_and_nothing_left_behind(tmp_path):
    with Machine(rootfs(), tmp_path, "novol", eni_id=ENI, volume_id=None) as m:
        assert m.boot(timeout=120) == "running", failed(m)
        assert m.run("ls", "/dev/disk/by-id").returncode != 0
        pid1, netns, cgroup = m.pid, [m.netns, m.sender_netns], m.cgroup
        assert m.path("/etc/os-release").read_text().startswith('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"')
        assert cgroup.is_dir()
    assert not Path(f"/proc/{pid1}").exists()
    assert not any(Path("/run/netns", ns).exists() for ns in netns)
    assert not cgroup.exists()
    assert not (STATE_DIR / f"{m.id}.json").exists()
    loops = json.loads(subprocess.run(["losetup", "-J", "-l"], capture_output=True, text=True).stdout or '{"loopdevices": []}')
    assert not [d for d in loops["loopdevices"] if str(tmp_path) in (d.get("back-file") or "")]
    assert (tmp_path / "console.log").read_text().count("Welcome to") == 1
    assert os.listdir(tmp_path / "root") == []  # the overlay was only ever mounted inside the machine
