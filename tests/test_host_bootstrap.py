"""An unbaked Amazon Linux host runs bake then boot from its user data alone.

The rendered user data runs as root in a private mount namespace: /usr/local is
a fresh tmpfs and /etc a scratch copy, so the real system is untouched while the
script installs for real (users, groups, files, modes). Package installation is
skipped (no dnf here), and systemd cannot run as PID 1 in this sandbox, so a
stand-in `systemctl` records what boot asks of it.
"""

from __future__ import annotations

import subprocess
import tarfile

from hostenv import RENDERED, needs_root

pytestmark = needs_root
USER_DATA = RENDERED.parent / "user-data.sh"

INSIDE = r"""
set -euo pipefail
mount --make-rprivate /
mount -t tmpfs tmpfs /usr/local
cp -a /etc "$S/etc" && mount --bind "$S/etc" /etc
for run in 1 2; do  # cloud-init runs it once; people re-run it: both must work
  MIRRORCAP_SKIP_PACKAGES=1 PATH="$S/bin:$PATH" bash "$USER_DATA" > "$S/run$run.log" 2>&1
done
tar -C / -cf "$S/installed.tar" usr/local/libexec/mirrorcap usr/local/sbin usr/local/bin etc/mirrorcap \
  $(cd / && ls -d etc/systemd/system/mirrorcap-*)
getent passwd mirrorcap > "$S/passwd"
getent group pcap > "$S/group"
"""


def test_user_data_bakes_and_boots_an_unbaked_host(tmp_path):
    (tmp_path / "bin").mkdir()
    systemctl = tmp_path / "bin" / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/systemctl.log\n')
    systemctl.chmod(0o755)
    r = subprocess.run(["unshare", "--mount", "bash", "-c", INSIDE], capture_output=True, text=True,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "S": str(tmp_path), "USER_DATA": str(USER_DATA)})
    assert r.returncode == 0, r.stderr + "".join(p.read_text() for p in tmp_path.glob("run*.log"))

    with tarfile.open(tmp_path / "installed.tar") as tar:
        installed = {"/" + m.name: (tar.extractfile(m).read(), m.mode) for m in tar.getmembers() if m.isfile()}
    expected = {"/" + str(p.relative_to(RENDERED)): (p.read_bytes(), p.stat().st_mode & 0o777)
                for p in RENDERED.rglob("*") if p.is_file()}
    expected["/etc/mirrorcap/mirrorcap.env"] = ((RENDERED.parent / "mirrorcap.env").read_bytes(), 0o644)
    assert installed == expected

    assert (tmp_path / "passwd").read_text().split(":")[6].strip() == "/sbin/nologin"
    assert (tmp_path / "group").read_text().startswith("pcap:")
    calls = (tmp_path / "systemctl.log").read_text().splitlines()
    boot = ["daemon-reload", "enable --now mirrorcap-storage.service mirrorcap-decap.service",
            "list-units --all --plain --no-legend mirrorcap-capture@*.service",
            "enable --now mirrorcap-capture@12345.service", "enable --now mirrorcap-retention.timer"]
    assert calls == boot + boot
    for log in ("run1.log", "run2.log"):
        text = (tmp_path / log).read_text()
        assert f"mirrorcap bake: installed ({len(expected) - 1} files)" in text and "mirrorcap-boot: capturing VNI(s) 12345" in text
