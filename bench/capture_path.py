"""Capture-path benchmark: the capture unit as systemd runs it, against bare tcpdump.

    sudo make bench-capture          # or: .venv/bin/python bench/capture_path.py [--rounds 3] [--packets 300000]

Boots the committed user data (rendered/prod/user-data.sh) in the boot lab
(tests/bootlab.py: systemd 252 as PID 1, a veth mirror ENI, a loop-device
volume), so the capture runs exactly as on a host: mirrorcap-capture@<VNI> as
the capture user with CAP_NET_RAW, its sandbox and its watcher. Then, per round,
tcpreplay sends RFC 7348 VXLAN (500-byte inner IPv4 packets) at top speed from
the sender namespace into each of:
  - "unit":  mirrorcap-capture@<VNI>.service, as rendered (tcpdump -U and its watcher);
  - "bare":  tcpdump -i vxlan<VNI> -w FILE, as a transient unit (root, no sandbox);
  - "-U":    the same with -U (packet-buffered): the unit's tcpdump without its sandbox and watcher.
CPU is the unit's cgroup cpu.stat usage (every process of the unit: tcpdump and
the watcher), divided by the packets sent. Drops and captures are
tcpdump's own counters. One warm-up round is not counted. Freshness: how long a lone packet takes to appear in
the pcap on disk (what mirrorcap-window and health can see), over a few probes.
Writes bench/out/capture_path.json. Needs root.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]

from bootlab import Machine, rootfs  # noqa: E402
from vxlan import inner_ipv4, read_pcap, vxlan_frame, write_pcap  # noqa: E402

from mirrorcap import render  # noqa: E402

VOLUME, ENI, VNI = "vol-0123456789abcdef0", "eni-0123456789abcdef0", 12345
UNIT = f"mirrorcap-capture@{VNI}.service"
DIR = "/var/log/tcpdump"
COUNTERS = re.compile(r"(\d+) packets? captured,?\s+(\d+) packets? received by filter,?\s+(\d+) packets? dropped by kernel")


def cgroup_usec(m: Machine, unit: str) -> int:
    slice_ = "system.slice/system-mirrorcap\\x2dcapture.slice" if unit.startswith("mirrorcap-capture@") else "system.slice"
    text = (m.cgroup / slice_ / unit / "cpu.stat").read_text()
    return int(re.search(r"^usage_usec (\d+)", text, re.M).group(1))


def frames(m: Machine, count: int, first_tag: int = 0) -> list[bytes]:
    dst_ip, src_ip = m.mirror_ip.split("/")[0], m.sender_ip.split("/")[0]
    return [vxlan_frame(VNI, inner_ipv4(b"MCT%08d" % (first_tag + i)), dst_mac=m.mirror_mac, src_mac=m.sender_mac,
                        dst_ip=dst_ip, src_ip=src_ip, ident=i) for i in range(count)]


def replay(m: Machine, pcap: Path) -> float:
    out = m.sender("tcpreplay", "-i", m.sender_iface, "--topspeed", "--preload-pcap", str(pcap), check=True).stdout
    return float(re.search(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps", out).group(1))


def rx(m: Machine) -> int:
    return int(m.read_file(f"/sys/class/net/vxlan{VNI}/statistics/rx_packets"))


def quiesce(m: Machine) -> None:
    """Every variant starts alike: no capture running, an emptied volume, nothing left to write back."""
    m.run("systemctl", "stop", UNIT, "bench-bare.service", "bench-U.service")
    m.run("sh", "-c", f"rm -f {DIR}/*.pcap")
    subprocess.run(["sync"], check=True)


def start_unit(m: Machine) -> None:
    m.run("systemctl", "reset-failed", UNIT)  # the benchmark restarts it more often than StartLimitBurst allows
    m.run("systemctl", "start", UNIT, check=True)
    state = m.path(f"/run/mirrorcap/capture-{VNI}/state.json")
    while not (state.exists() and json.loads(state.read_text() or "{}").get("writing")):
        time.sleep(0.2)


def measure(m: Machine, pcap: Path, packets: int, variant: str) -> dict:
    quiesce(m)
    if variant == "unit":
        unit, log = UNIT, f"/run/mirrorcap/capture-{VNI}/tcpdump.log"
        start_unit(m)
    else:
        unit = f"bench-{variant.strip('-')}.service"
        log = f"/run/{unit}.log"
        m.run("systemctl", "reset-failed", unit)
        m.run("systemd-run", f"--unit={unit}", "-p", f"StandardError=file:{log}", "tcpdump", "-i", f"vxlan{VNI}",
              *([variant] if variant.startswith("-") else []), "-w", f"{DIR}/bench-{variant}.pcap", check=True)
    time.sleep(1)
    cpu0, rx0 = cgroup_usec(m, unit), rx(m)
    pps = replay(m, pcap)
    time.sleep(2.5)  # the watcher's ticks after the burst are part of its cost
    cpu = cgroup_usec(m, unit) - cpu0
    if variant == "unit":
        m.run("mirrorcap-health", "--sample-seconds", "0")  # SIGUSR1: tcpdump prints its counters to its log
    else:
        m.run("systemctl", "stop", unit)
    captured, _, dropped = map(int, COUNTERS.findall(m.read_file(log))[-1])
    return dict(pps=pps, decapsulated=rx(m) - rx0, cpu_us_per_packet=cpu / packets, dropped=dropped, captured=captured)


def freshness(m: Machine, probes: int) -> list[float]:
    """Seconds from sending one packet to seeing it in a pcap on the volume."""
    waits = []
    for i in range(probes):
        tag = b"MCT%08d" % (90000000 + i)
        pcap = write_pcap(m.workdir / "probe.pcap", frames(m, 1, 90000000 + i))
        time.sleep(1.37)  # land at varying points of the watcher's 1 s tick
        m.sender("tcpreplay", "-q", "-i", m.sender_iface, str(pcap), check=True)
        sent = time.monotonic()
        while time.monotonic() - sent < 10:
            newest = max(m.path(DIR).glob(f"vni{VNI}_*.pcap"))
            if any(tag in data for _, _, data in read_pcap(newest.read_bytes())):
                break
            time.sleep(0.02)
        waits.append(round(time.monotonic() - sent, 2))
    return waits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--packets", type=int, default=300_000)
    parser.add_argument("--probes", type=int, default=8)
    args = parser.parse_args()
    # A new machine every run: the user data runs once per instance, so a disk kept
    # from an earlier run would still hold the host files of that run's render.
    work = ROOT / "bench" / "out" / "capture-lab"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    user_data = (ROOT / "rendered/prod/user-data.sh").read_text()
    user_data = user_data.replace(render.VOLUME_PLACEHOLDER, VOLUME).replace(render.ENI_PLACEHOLDER, ENI)
    results: dict[str, list[dict]] = {"unit": [], "bare": [], "-U": []}
    with Machine(rootfs(), work, "bench", eni_id=ENI, volume_id=VOLUME, volume_mib=4096) as m:
        m.install_user_data(user_data)
        m.boot()
        start_unit(m)
        pcap = write_pcap(m.workdir / "burst.pcap", frames(m, args.packets))
        for variant in results:  # warm-up, not counted: the first writes into the fresh volume image cost more
            measure(m, pcap, args.packets, variant)
        for r in range(args.rounds):  # round-robin: the machine's speed drifts
            for variant in results:
                results[variant].append(measure(m, pcap, args.packets, variant))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]['cpu_us_per_packet']:.2f} us/pkt at {v[-1]['pps']:.0f} pps"
                                                  for k, v in results.items()), flush=True)
        quiesce(m)
        start_unit(m)
        waits = freshness(m, args.probes)
        drops = {k: sum(x["dropped"] for x in v) for k, v in results.items()}
    median = {k: statistics.median(x["cpu_us_per_packet"] for x in v) for k, v in results.items()}
    ratios = [u["cpu_us_per_packet"] / b["cpu_us_per_packet"] for u, b in zip(results["unit"], results["bare"])]
    summary = dict(packets_per_round=args.packets, rounds=args.rounds, median_cpu_us_per_packet=median,
                   unit_to_bare_ratio_median=statistics.median(ratios), kernel_drops=drops,
                   freshness_seconds=waits, runs=results)
    out = ROOT / "bench" / "out" / "capture_path.json"
    out.write_text(json.dumps(summary, indent=2))
    print(f"CPU per packet (median of {args.rounds}): unit {median['unit']:.2f} us, bare {median['bare']:.2f} us, "
          f"-U {median['-U']:.2f} us; unit/bare {summary['unit_to_bare_ratio_median']:.2f}x (goal <= 1.5x)")
    print(f"kernel drops: {drops}; a lone packet reaches the pcap within {max(waits):.2f} s (probes: {waits})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
