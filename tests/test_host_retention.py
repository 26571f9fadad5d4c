"""The rendered retention script on a real (small) xfs: age, free-space floor, and what it must never touch."""

from __future__ import annotations

import os
import time

import pytest

from hostenv import LIBEXEC, loop_device, needs_root, run, write_env

pytestmark = needs_root
DAY = 86400


@pytest.fixture
def volume(tmp_path):
    with loop_device(tmp_path, size_mb=320) as dev:
        run("mkfs.xfs", "-q", dev)
        mnt = tmp_path / "pcaps"
        mnt.mkdir()
        run("mount", dev, str(mnt))
        try:
            yield tmp_path, mnt
        finally:
            run("umount", str(mnt), check=False)


def make(d, name, age_days, mib=1):
    p = d / name
    with open(p, "wb") as f:
        f.write(os.urandom(mib * 1024 * 1024))
    t = time.time() - age_days * DAY
    os.utime(p, (t, t))
    return p


def retention(tmp, mnt, **settings):
    env_file = write_env(tmp / "mirrorcap.env", capture_dir=mnt, **settings)
    return run(str(LIBEXEC / "retention"), env={**os.environ, "MIRRORCAP_ENV_FILE": str(env_file)}, check=False)


def test_deletes_by_age_but_keeps_the_newest_and_everything_not_a_pcap(volume):
    tmp, mnt = volume
    old = make(mnt, "vni1_2026-10-01T00-00-00Z.pcap", 30)
    recent = make(mnt, "vni1_2026-11-20T00-00-00Z.pcap", 2)
    lone_old = make(mnt, "vni7_2026-10-01T00-00-00Z.pcap", 30)  # newest (only) file of VNI 7: tcpdump may be writing it
    notes = make(mnt, "notes.txt", 60)
    (mnt / "keep").mkdir()
    nested = make(mnt / "keep", "vni1_2026-01-01T00-00-00Z.pcap", 300)
    (mnt / "vni1_2026-09-01T00-00-00Z.pcap").symlink_to(notes)
    r = retention(tmp, mnt, retention_days=15, min_free_percent=1)
    assert r.returncode == 0, r.stderr
    assert not old.exists() and recent.exists() and lone_old.exists()
    assert notes.exists() and nested.exists() and (mnt / "vni1_2026-09-01T00-00-00Z.pcap").is_symlink()
    assert f"deleted {old.name} (older than 15 days)" in r.stdout


def test_free_space_floor_deletes_oldest_first_until_above_it(volume):
    tmp, mnt = volume
    files = [make(mnt, f"vni5_2026-11-2{i}T00-00-00Z.pcap", 5 - i * 0.1, mib=40) for i in range(5)]
    r = retention(tmp, mnt, retention_days=15, min_free_percent=30)
    assert r.returncode == 0, r.stderr
    kept = [f for f in files if f.exists()]
    assert kept == files[len(files) - len(kept):], "oldest must go first"
    assert files[-1].exists() and 0 < len(kept) < len(files)
    size, avail = (int(x) for x in run("df", "-P", "-B1", str(mnt)).stdout.splitlines()[1].split()[1:4:2])
    assert avail * 100 >= size * 30
    assert "free space under 30%" in r.stdout


def test_gib_floor_that_cannot_be_met_keeps_the_newest_and_warns(volume):
    tmp, mnt = volume
    files = [make(mnt, f"vni5_2026-11-2{i}T00-00-00Z.pcap", 5 - i * 0.1, mib=20) for i in range(3)]
    # 1 GiB free is impossible on a 320 MB volume: everything but the newest goes, and it says so.
    r = retention(tmp, mnt, retention_days=15, min_free_percent=1, min_free_gib=1)
    assert r.returncode == 0, r.stderr
    assert [f.exists() for f in files] == [False, False, True]
    assert "free space under 1% / 1 GiB" in r.stdout and "WARNING: free space still under the floor" in r.stdout
