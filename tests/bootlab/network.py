"""The machine's network: its namespace with lo (and the IMDS address) and the mirror ENI,
a veth whose peer is the sender's (the side AWS's mirroring sends from)."""

from __future__ import annotations

import json
import subprocess

from .lab import IMDS_ADDR, _sh


class Network:
    """Machine's network (a mixin)."""

    def _make_network(self) -> None:
        m, s = self.netns, self.sender_netns
        _sh("ip", "netns", "add", m)
        _sh("ip", "netns", "add", s)
        _sh("ip", "-n", m, "link", "set", "lo", "up")
        _sh("ip", "-n", s, "link", "set", "lo", "up")
        _sh("ip", "-n", m, "addr", "add", f"{IMDS_ADDR}/32", "dev", "lo")
        # The sender only replays: no IPv6 autoconf/DAD/MLD of its own on the wire.
        _sh("nsenter", f"--net=/run/netns/{s}", "sh", "-c",
            "for c in all default; do echo 1 > /proc/sys/net/ipv6/conf/$c/disable_ipv6; done", check=False)
        _sh("ip", "-n", m, "link", "add", self.mirror_iface, "type", "veth", "peer", "name", self.sender_iface, "netns", s)
        _sh("ip", "-n", m, "link", "set", self.mirror_iface, "address", self.mirror_mac, "mtu", str(self.mirror_mtu))
        _sh("ip", "-n", s, "link", "set", self.sender_iface, "address", self.sender_mac, "mtu", str(self.sender_mtu), "up")
        if self.sender_ip:
            _sh("ip", "-n", s, "addr", "add", self.sender_ip, "dev", self.sender_iface)
        if self.mirror_ip:
            _sh("ip", "-n", m, "addr", "add", self.mirror_ip, "dev", self.mirror_iface)
            _sh("ip", "-n", m, "link", "set", self.mirror_iface, "up")

    def _ifindex(self, iface: str) -> int | None:
        out = _sh("ip", "-n", self.netns, "-j", "link", "show", "dev", iface, check=False).stdout
        return json.loads(out)[0]["ifindex"] if out.strip() else None

    def sender(self, *cmd: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a host command in the sender's network namespace (tcpreplay -i m.sender_iface ...)."""
        return _sh("ip", "netns", "exec", self.sender_netns, *cmd, check=check, timeout=timeout)
