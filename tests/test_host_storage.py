"""The rendered storage script on a real loop device with a real xfs."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from hostenv import LIBEXEC, loop_device, needs_root, run, write_env

pytestmark = needs_root
VOLUME = "vol-0123456789abcdef0"


@pytest.fixture
def host(tmp_path):
    with loop_device(tmp_path) as dev:
        by_id = tmp_path / "by-id"
        by_id.mkdir()
        (by_id / f"nvme-Amazon_Elastic_Block_Store_{VOLUME.replace('-', '')}").symlink_to(dev)
        fstab = tmp_path / "fstab"
        fstab.write_text("UUID=1111-2222 / xfs defaults 0 1\n")
        pcaps = tmp_path / "pcaps"
        env_file = write_env(tmp_path / "mirrorcap.env", volume_id=VOLUME, capture_dir=pcaps)
        env = {**os.environ, "MIRRORCAP_ENV_FILE": str(env_file), "MIRRORCAP_BY_ID_DIR": str(by_id),
               "MIRRORCAP_FSTAB": str(fstab), "MIRRORCAP_USER": "nobody", "MIRRORCAP_GROUP": "nogroup",
               "MIRRORCAP_DEVICE_WAIT_SECONDS": "2"}
        yield dev, pcaps, fstab, env
        run("umount", str(pcaps), check=False)


def storage(env):
    return run(str(LIBEXEC / "storage"), env=env, check=False)


def test_formats_an_empty_volume_once_and_mounts_it_by_uuid_with_nofail(host):
    dev, pcaps, fstab, env = host
    r = storage(env)
    assert r.returncode == 0, r.stderr
    assert "creating xfs" in r.stdout
    assert run("findmnt", "-n", "-o", "SOURCE,FSTYPE", str(pcaps)).stdout.split() == [dev, "xfs"]
    uuid = run("blkid", "-p", "-o", "value", "-s", "UUID", dev).stdout.strip()
    lines = fstab.read_text().splitlines()
    assert lines[0] == "UUID=1111-2222 / xfs defaults 0 1"
    assert lines[1:] == [f"UUID={uuid} {pcaps} xfs defaults,noatime,nofail,x-systemd.device-timeout=30s 0 2"]
    st = os.stat(pcaps)
    assert stat.S_IMODE(st.st_mode) == 0o2750 and stat.S_IMODE(st.st_mode) & 0o007 == 0


def test_rerun_and_reboot_keep_existing_pcaps_byte_identical(host):
    dev, pcaps, fstab, env = host
    assert storage(env).returncode == 0
    pcap = pcaps / "vni12345_2026-11-24T10-00-00Z.pcap"
    pcap.write_bytes(os.urandom(4096))
    digest = hashlib.sha256(pcap.read_bytes()).hexdigest()
    fstab_before = fstab.read_text()

    again = storage(env)  # a second run while mounted
    assert again.returncode == 0 and "creating xfs" not in again.stdout
    run("umount", str(pcaps))  # a reboot: volume attached, file system present, not mounted
    rebooted = storage(env)
    assert rebooted.returncode == 0 and "creating xfs" not in rebooted.stdout
    assert hashlib.sha256(pcap.read_bytes()).hexdigest() == digest
    assert fstab.read_text() == fstab_before


def test_refuses_to_format_a_volume_with_another_file_system(host):
    dev, pcaps, fstab, env = host
    run("mkfs.ext4", "-q", "-F", dev)
    r = storage(env)
    assert r.returncode == 1 and "holds a ext4 file system, not xfs: refusing" in r.stderr
    assert run("blkid", "-p", "-o", "value", "-s", "TYPE", dev).stdout.strip() == "ext4"


def test_missing_volume_fails_clearly_after_a_bounded_wait(host):
    dev, pcaps, fstab, env = host
    env = {**env, "MIRRORCAP_ENV_FILE": str(write_env(pcaps.parent / "other.env", volume_id="vol-0fffffffffffffff0", capture_dir=pcaps))}
    r = storage(env)
    assert r.returncode == 1 and "did not appear" in r.stderr and "is it attached" in r.stderr
    assert fstab.read_text() == "UUID=1111-2222 / xfs defaults 0 1\n"
