"""The pcap volume: a loop device under EC2's NVMe by-id name, attached at boot or later,
and udev's coldplug of it (nodes, /dev/disk links, the udev database systemd reads)."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

from .lab import _sh


class Volume:
    """Machine's volume (a mixin)."""

    def _attach_volume(self) -> None:
        img = self.volume_image
        if not img.exists():
            with open(img, "wb") as f:
                f.truncate(self.volume_mib * 1024 * 1024)  # sparse
        for _ in range(10):  # another process may grab the same free loop device
            p = _sh("losetup", "--find", "--show", str(img), check=False)
            if p.returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"losetup {img}: {p.stderr.strip()}")
        self.loop_device = p.stdout.strip()
        self._save_state()
        self.volume_node = "/dev/" + Path(self.loop_device).name

    def _device_script(self, probe: bool = True) -> str:
        """Shell commands (on $D = the machine's /dev, $U = its /run/udev or empty) that do what udev
        does on EC2 for the volume and the mirror ENI: the node, /dev/disk/by-id (the NVMe EBS name),
        by-uuid and by-label (from a blkid probe), /dev/block/MAJ:MIN, and the udev database entries
        tagged "systemd" from which systemd makes its .device units."""
        lines = []
        now = time.monotonic_ns() // 1000
        if self.loop_device:
            node = Path(self.loop_device).name
            major, minor = Path(f"/sys/block/{node}/dev").read_text().strip().split(":")
            links = [f"disk/by-id/{Path(self.by_id_link).name}"]
            props = {"DEVTYPE": "disk", "ID_MODEL": "Amazon Elastic Block Store",
                     "ID_SERIAL_SHORT": self.volume_id.replace("-", "")}
            fs = {}
            if probe:
                out = _sh("blkid", "-p", "-o", "export", self.loop_device, check=False).stdout
                fs = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
            if re.fullmatch(r"[0-9a-fA-F-]+", fs.get("UUID", "")):
                links.append(f"disk/by-uuid/{fs['UUID']}")
            if re.fullmatch(r"[A-Za-z0-9._-]+", fs.get("LABEL", "")):
                links.append(f"disk/by-label/{fs['LABEL']}")
            for key in ("UUID", "TYPE", "LABEL", "USAGE", "VERSION"):
                if key in fs:
                    props[f"ID_FS_{key}"] = fs[key]
            lines += [f'[ -b "$D/{node}" ] || mknod -m 0660 "$D/{node}" b {major} {minor}',
                      f'chgrp 6 "$D/{node}"', 'mkdir -p "$D/block"', f'ln -sfn ../{node} "$D/block/{major}:{minor}"']
            for link in links:
                lines += [f'mkdir -p "$D/{Path(link).parent}"', f'ln -sfn ../../{node} "$D/{link}"']
            if self.ebs_device_name:
                lines.append(f'ln -sfn {node} "$D/{self.ebs_device_name}"')
            db = [*(f"S:{link}" for link in links), f"I:{now}", *(f"E:{k}={v}" for k, v in props.items()),
                  "G:systemd", "Q:systemd", "V:1"]
            lines.append(f'if [ -n "$U" ]; then printf "%s\\n" {shlex.join(db)} > "$U/data/b{major}:{minor}"; '
                         f': > "$U/tags/systemd/b{major}:{minor}"; fi')
        ifindex = self._ifindex(self.mirror_iface)
        if ifindex:
            db = [f"I:{now}", "E:ID_NET_DRIVER=veth", "G:systemd", "Q:systemd", "V:1"]
            lines.append(f'if [ -n "$U" ]; then printf "%s\\n" {shlex.join(db)} > "$U/data/n{ifindex}"; '
                         f': > "$U/tags/systemd/n{ifindex}"; fi')
        return "\n".join(lines) + "\n"

    def attach_volume(self, volume_id: str | None = None) -> None:
        """Attach the pcap volume, also to a running machine (an EBS attachment arriving after boot).
        volume_id: for a machine made with volume_id=None (its image: workdir/volume-<id>.img, volume_mib)."""
        if volume_id and volume_id != self.volume_id:
            if self.loop_device:
                raise ValueError(f"volume {self.volume_id} is already attached")
            self.volume_id = volume_id
            self.volume_image = self.workdir / f"volume-{volume_id}.img"
            self.by_id_link = f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}"
        if not self.volume_id:
            raise ValueError("no volume_id")
        self.open()
        if not self.loop_device:
            self._attach_volume()
        if self.pid:
            script = 'D=/dev; U=""; [ -w /sys ] && U=/run/udev && mkdir -p $U/data $U/tags/systemd\n'
            self.run("sh", "-ec", script + self._device_script(), check=True)

if __name__ == "__main__":  # pragma: no cover
    print(__doc__)
