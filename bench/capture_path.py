"""Capture-path benchmark: tcpreplay VXLAN into the rendered decap + capture, on real Linux.

    sudo .venv/bin/python bench/capture_path.py [--seconds 5] [--rates 50000,100000,...]

Builds the lab the integration tests use (netns + veth + fake IMDSv2), runs the
rendered decap script, then at each rate replays an RFC 7348 VXLAN pcap (flags
0x08, reserved bits zero, 500-byte inner IPv4 packets) from the source namespace
with tcpreplay while capturing with
  - "bare":     tcpdump -i vxlan<VNI> -w FILE
  - "rendered": the capture script of rendered/prod, unchanged (rotation, -Z,
                -U, -B, -Q in, ...) with the example inventory's settings.
For each it reports packets sent (tcpreplay), decapsulated (vxlan rx counter),
captured and dropped by the kernel (tcpdump's own counters), then the flag-by-
flag cost at the top rate. Writes bench/out/capture_path.json. Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RENDERED = ROOT / "rendered" / "prod"
CAPTURE = RENDERED / "files/usr/local/libexec/mirrorcap/capture"
DECAP = RENDERED / "files/usr/local/libexec/mirrorcap/decap"
FAKE_IMDS = ROOT / "tests" / "fake_imds.py"
ENI = "eni-0aaaaaaaaaaaaaaaa"
SRC_IP, HOST_IP = "192.0.2.1", "192.0.2.2"
IMDS_PORT = 18081
STATS = re.compile(r"(\d+) packets? captured\s+(\d+) packets? received by filter\s+(\d+) packets? dropped by kernel")


def run(*cmd, check=True, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=check, **kw)


def env_value(name: str) -> str:
    for line in (RENDERED / "mirrorcap.env").read_text().splitlines():
        if line.startswith(name + "="):
            return line.split("=", 1)[1].strip('"')
    raise KeyError(name)


def checksum(header: bytes) -> int:
    s = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0, 64, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:] + payload


def vxlan_pcap(path: Path, vni: int, dst_mac: str, src_mac: str, count: int, inner_ip_bytes: int = 500) -> int:
    """count distinct VXLAN frames as AWS sends them; returns the outer frame size."""
    frames = []
    for i in range(count):
        udp_payload = bytes(inner_ip_bytes - 20 - 8)
        inner_udp = struct.pack("!HHHH", 40000 + i % 1000, 8080, 8 + len(udp_payload), 0) + udp_payload
        inner = bytes.fromhex("0a0000000002" "0a0000000001" "0800") + ipv4("10.9.0.1", "10.9.0.2", 17, inner_udp, i)
        # RFC 7348: flags 0x08 (I bit), 24 reserved bits zero, 24-bit VNI, 8 reserved bits zero.
        vx = struct.pack("!B3xI", 0x08, vni << 8) + inner
        outer_udp = struct.pack("!HHHH", 49152 + i % 16384, 4789, 8 + len(vx), 0) + vx
        frames.append(bytes.fromhex(dst_mac.replace(":", "") + src_mac.replace(":", "")) + b"\x08\x00"
                      + ipv4(SRC_IP, HOST_IP, 17, outer_udp, i))
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for fr in frames:
            f.write(struct.pack("<IIII", 0, 0, len(fr), len(fr)) + fr)
    return len(frames[0])


class Lab:
    def __init__(self, work: Path):
        self.work, self.tag = work, os.urandom(3).hex()
        self.src, self.host = f"bsrc{self.tag}", f"bhost{self.tag}"
        self.src_if = f"vs{self.tag}"

    def __enter__(self):
        run("ip", "netns", "add", self.src)
        run("ip", "netns", "add", self.host)
        run("ip", "link", "add", self.src_if, "netns", self.src, "type", "veth", "peer", "name", "mirror0", "netns", self.host)
        run("ip", "-n", self.src, "addr", "add", f"{SRC_IP}/24", "dev", self.src_if)
        run("ip", "-n", self.src, "link", "set", self.src_if, "up")
        run("ip", "-n", self.host, "addr", "add", f"{HOST_IP}/24", "dev", "mirror0")
        run("ip", "-n", self.host, "link", "set", "lo", "up")
        self.mirror_mac = run("ip", "netns", "exec", self.host, "cat", "/sys/class/net/mirror0/address").stdout.strip()
        self.src_mac = run("ip", "netns", "exec", self.src, "cat", f"/sys/class/net/{self.src_if}/address").stdout.strip()
        self.imds = subprocess.Popen(["ip", "netns", "exec", self.host, sys.executable, FAKE_IMDS, str(IMDS_PORT),
                                      json.dumps({self.mirror_mac: ENI})])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.imds.kill()
        run("ip", "netns", "del", self.src, check=False)
        run("ip", "netns", "del", self.host, check=False)

    def in_host(self, *cmd, **kw):
        return ["ip", "netns", "exec", self.host, *map(str, cmd)]

    def vxlan_rx(self, vni: int) -> tuple[int, int]:
        stats = json.loads(run(*self.in_host("ip", "-s", "-j", "link", "show", f"vxlan{vni}")).stdout)[0]["stats64"]["rx"]
        return stats["packets"], stats["dropped"]


def tcpdump_cpu_seconds(pid: int) -> float:
    """user+system CPU of the tcpdump process (the launcher execs into it: same PID)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(lab: Lab, pcap: Path, rate: int | None, seconds: float, capture_cmd: list[str], env: dict, vni: int) -> dict:
    rx0, rxdrop0 = lab.vxlan_rx(vni)
    cap = subprocess.Popen(lab.in_host(*capture_cmd), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    speed = ["--topspeed"] if rate is None else ["--pps", str(rate), "--pps-multi", str(max(1, rate // 10000))]
    replay = run("ip", "netns", "exec", lab.src, "tcpreplay", "-i", lab.src_if, "--preload-pcap", "--loop", "0",
                 "--duration", str(int(seconds)), "--no-flow-stats", *speed, pcap, check=False)
    # TPACKET_V3 hands a partly filled block to tcpdump only after its 1 s
    # timeout: wait for it, or the last packets count as lost at shutdown.
    time.sleep(2.0)
    cpu_seconds = tcpdump_cpu_seconds(cap.pid)
    cap.send_signal(signal.SIGTERM)
    _, err = cap.communicate(timeout=30)
    rx1, rxdrop1 = lab.vxlan_rx(vni)
    m = STATS.search(" ".join(err.split()))
    sent = re.search(r"Actual: (\d+) packets .* in ([\d.]+) seconds", replay.stdout)
    if not m or not sent:
        raise RuntimeError(f"could not read counters\ntcpdump: {err}\ntcpreplay: {replay.stdout}{replay.stderr}")
    captured, received, dropped = map(int, m.groups())
    sent_n, secs = int(sent.group(1)), float(sent.group(2))
    return dict(target_pps=rate or "top", sent=sent_n, achieved_pps=round(sent_n / secs), decapsulated=rx1 - rx0,
                vxlan_rx_dropped=rxdrop1 - rxdrop0, received=received, captured=captured, dropped_by_kernel=dropped,
                captured_over_sent=round(captured / sent_n, 5) if sent_n else 0.0,
                tcpdump_cpu_us_per_packet=round(cpu_seconds * 1e6 / captured, 3) if captured else None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rates", default="50000,100000,150000,200000,250000")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (network namespaces)")
    for tool in ("tcpreplay", "tcpdump", "ip"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: run .ci/run once, or apt-get install tcpreplay tcpdump iproute2")

    vni = int(env_value("MIRRORCAP_VNIS").split()[0])
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mirrorcap-bench-", dir=out_dir))
    os.chmod(work, 0o755)
    results: dict = {"vni": vni, "seconds_per_run": args.seconds, "cpus": os.cpu_count(), "runs": [], "flags": []}
    try:
        with Lab(work) as lab:
            pcaps = work / "pcaps"
            pcaps.mkdir()
            shutil.chown(pcaps, "nobody", run("id", "-gn", "nobody").stdout.strip())
            os.chmod(pcaps, 0o2770)
            env_file = work / "mirrorcap.env"
            env_file.write_text((RENDERED / "mirrorcap.env").read_text()
                                .replace(f"MIRRORCAP_MIRROR_ENI_ID={env_value('MIRRORCAP_MIRROR_ENI_ID')}", f"MIRRORCAP_MIRROR_ENI_ID={ENI}")
                                .replace(f"MIRRORCAP_CAPTURE_DIR={env_value('MIRRORCAP_CAPTURE_DIR')}", f"MIRRORCAP_CAPTURE_DIR={pcaps}"))
            env = {**os.environ, "MIRRORCAP_ENV_FILE": str(env_file), "MIRRORCAP_IMDS_ENDPOINT": f"http://127.0.0.1:{IMDS_PORT}",
                   "MIRRORCAP_USER": "nobody", "MIRRORCAP_SKIP_MOUNT_CHECK": "1", "MIRRORCAP_RUN_DIR": str(work / "run"),
                   "TZ": "UTC"}
            decap = run(*lab.in_host(DECAP), env=env, check=False)
            if decap.returncode:
                sys.exit(f"decap failed: {decap.stderr}")
            pcap = work / "vxlan.pcap"
            size = vxlan_pcap(pcap, vni, lab.mirror_mac, lab.src_mac, 2000)
            results["outer_frame_bytes"], results["inner_ip_bytes"] = size, 500

            bare = ["tcpdump", "-i", f"vxlan{vni}", "-w", str(pcaps / "bare.pcap")]
            rendered = ["bash", "-c", f"umask 0027; exec {CAPTURE} {vni}"]
            for rate in [int(r) for r in args.rates.split(",")] + [None]:
                for name, cmd in (("bare", bare), ("rendered", rendered)):
                    r = measure(lab, pcap, rate, args.seconds, cmd, env, vni)
                    r["capture"] = name
                    results["runs"].append(r)
                    print(json.dumps(r), flush=True)
                    for f in pcaps.iterdir():
                        f.unlink()

            # Which flag costs what: the bare command plus one flag at a time, at top speed.
            buffer_kib, snap, rotate = env_value("MIRRORCAP_BUFFER_KIB"), env_value("MIRRORCAP_SNAPLEN"), env_value("MIRRORCAP_ROTATE_SECONDS")
            variants = {"bare": [], "-U": ["-U"], "-Q in": ["-Q", "in"], "-n": ["-n"], f"-B {buffer_kib}": ["-B", buffer_kib],
                        f"-s {snap}": ["-s", snap], f"-G {rotate} + strftime name": ["-G", rotate],
                        "-Z nobody": ["-Z", "nobody"]}
            for label, extra in variants.items():
                name = "v_%Y-%m-%dT%H-%M-%SZ.pcap" if "-G" in extra else "v.pcap"
                cmd = ["tcpdump", "-i", f"vxlan{vni}", *extra, "-w", str(pcaps / name)]
                r = measure(lab, pcap, None, args.seconds, cmd, env, vni)
                r["variant"] = label
                results["flags"].append(r)
                print(json.dumps(r), flush=True)
                for f in pcaps.iterdir():
                    f.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    (out_dir / "capture_path.json").write_text(json.dumps(results, indent=2))
    zero = [r for r in results["runs"] if r["capture"] == "rendered" and r["dropped_by_kernel"] == 0 and r["captured"] == r["sent"]]
    best = max(zero, key=lambda r: r["achieved_pps"], default=None)
    print(f"\nhighest rate with zero kernel drops, rendered capture: {best['achieved_pps'] if best else 'none'} pps")
    top = {r["capture"]: r for r in results["runs"] if r["target_pps"] == "top"}
    print(f"top speed: bare {top['bare']['captured_over_sent']:.4%} captured, rendered {top['rendered']['captured_over_sent']:.4%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
