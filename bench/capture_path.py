"""Capture-path benchmark: the capture unit as systemd runs it, against the alternatives.

    sudo make bench-capture          # or: .venv/bin/python bench/capture_path.py [--rounds 5] [--packets 300000]

Bakes and boots the example host in the boot lab as production makes it
(tests/capturehost.py: rendered/prod/bake.sh into the image, then the user data;
systemd 252 as PID 1, a veth mirror ENI, a loop-device xfs volume), so the capture
runs exactly as on a host. Per round, tcpreplay sends RFC 7348 VXLAN (500-byte
inner IPv4 packets) at top speed from the sender namespace into each of:
  - "unit":      mirrorcap-capture@<VNI>.service as rendered: buffered tcpdump, its
                 watcher's flush (SIGUSR2 while tcpdump waits in poll()), its sandbox;
  - "unit -B64": the same with a 64 MiB kernel ring instead of 8 (MIRRORCAP_BUFFER_KIB);
  - "bare":      tcpdump -w FILE, a transient unit (the capture user with CAP_NET_RAW, no
                 sandbox, nothing watching; so are the two below);
  - "-U":        tcpdump -U -w FILE (a write per packet: the unit's engine before);
  - "dumpcap":   Wireshark's dumpcap -P (pcap), ring buffer by time, 8 MiB buffer.
CPU is each unit's cgroup cpu.stat usage (every process of it: tcpdump and the
watcher) over the packets sent, taken after the burst and two seconds of ticks.
Drops and captures are the engine's own counters. The rounds are round robin and
the first is a warm-up. Freshness: how long a lone packet takes to reach the pcap
on the volume (what mirrorcap-window and health see), per variant, over --probes
probes sent at varying points of the watcher's tick (10 s: "never", the packet
waits in a buffer for more traffic). Writes bench/out/capture_path.json (or --out).
Needs root.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "modules")]

from bootlab import Machine  # noqa: E402
from capturehost import DIR, VNI, Traffic, baked, unit, wait_capturing  # noqa: E402
from bootlab.traffic import read_pcap, write_pcap  # noqa: E402

UNIT = unit()
ENV = "/etc/mirrorcap/mirrorcap.env"
COUNTERS = re.compile(r"(\d+) packets? captured[,\s]+(\d+) packets? received by filter[,\s]+(\d+) packets? dropped by kernel")
DUMPCAP = re.compile(r"Packets received/dropped on interface '[^']+': (\d+)/(\d+)")
NEVER = 10.0


class Variant:
    """How to run one capture engine in the machine and read its counters and its newest pcap."""

    def __init__(self, name: str, command: list[str] | None = None, glob: str = "", buffer_kib: int | None = None):
        self.name, self.command, self.glob, self.buffer_kib = name, command, glob, buffer_kib
        self.unit = UNIT if command is None else f"bench-{re.sub(r'[^a-z0-9]', '', name)}.service"
        self.log = f"/run/mirrorcap/capture-{VNI}/tcpdump.log" if command is None else f"/run/{self.unit}.log"

    def start(self, m: Machine) -> None:
        if self.command is None:
            env = m.read_file(ENV)
            m.write_file(ENV, re.sub(r"MIRRORCAP_BUFFER_KIB=\d+", f"MIRRORCAP_BUFFER_KIB={self.buffer_kib}", env))
            m.run("systemctl", "start", UNIT, check=True)
            wait_capturing(m)
        else:
            m.run("systemctl", "reset-failed", self.unit)
            # As the unit runs its tcpdump: the capture user, CAP_NET_RAW only (no sandbox, no watcher).
            m.run("systemd-run", f"--unit={self.unit}", "-p", f"StandardError=file:{self.log}", "-p", "User=mirrorcap",
                  "-p", "Group=pcap", "-p", "AmbientCapabilities=CAP_NET_RAW", "-p", "CapabilityBoundingSet=CAP_NET_RAW",
                  "-p", "UMask=0027", *self.command, check=True)
            time.sleep(1)

    def stop(self, m: Machine) -> None:
        m.run("systemctl", "stop", self.unit)

    def counters(self, m: Machine) -> tuple[int, int]:
        """(captured, dropped by the kernel), as the engine printed them when it stopped."""
        text = m.read_file(self.log)
        if self.name == "dumpcap":
            received, dropped = map(int, DUMPCAP.findall(text)[-1])
            return received, dropped
        captured, _, dropped = map(int, COUNTERS.findall(text)[-1])
        return captured, dropped

    def newest(self, m: Machine) -> Path | None:
        files = sorted(m.path(DIR).glob(self.glob or f"vni{VNI}_*.pcap"), key=lambda p: p.stat().st_mtime)
        return files[-1] if files else None


def variants() -> list[Variant]:
    iface = f"vxlan{VNI}"
    return [Variant("unit", buffer_kib=8192), Variant("unit -B64", buffer_kib=65536),
            Variant("bare", ["tcpdump", "-i", iface, "-Q", "in", "-n", "-B", "8192", "-s", "0", "-w", f"{DIR}/bench-bare.pcap"],
                    "bench-bare.pcap"),
            Variant("-U", ["tcpdump", "-i", iface, "-Q", "in", "-n", "-U", "-B", "8192", "-s", "0", "-w", f"{DIR}/bench-U.pcap"],
                    "bench-U.pcap"),
            Variant("dumpcap", ["dumpcap", "-i", iface, "-q", "-P", "-B", "8", "-s", "262144", "-b", "duration:600",
                                "-w", f"{DIR}/bench-dumpcap.pcap"], "bench-dumpcap_*.pcap")]


def cgroup_usec(m: Machine, name: str) -> int:
    slice_ = "system.slice/system-mirrorcap\\x2dcapture.slice" if name.startswith("mirrorcap-capture@") else "system.slice"
    text = (m.cgroup / slice_ / name / "cpu.stat").read_text()
    return int(re.search(r"^usage_usec (\d+)", text, re.M).group(1))


def quiesce(m: Machine, all_: list[Variant]) -> None:
    """Every variant starts alike: nothing capturing, an emptied volume, nothing left to write back."""
    for v in all_:
        v.stop(m)
    m.run("sh", "-c", f"rm -f {DIR}/*.pcap && sync")


def measure(m: Machine, v: Variant, all_: list[Variant], pcap: Path, packets: int) -> dict:
    quiesce(m, all_)
    v.start(m)
    cpu0 = cgroup_usec(m, v.unit)
    out = m.sender("tcpreplay", "-i", m.sender_iface, "--topspeed", "--preload-pcap", str(pcap), check=True).stdout
    pps = float(re.search(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps", out).group(1))
    time.sleep(2.5)  # the watcher's ticks after the burst are part of its cost
    cpu = cgroup_usec(m, v.unit) - cpu0
    v.stop(m)
    captured, dropped = v.counters(m)
    return dict(pps=pps, cpu_us_per_packet=cpu / packets, captured=captured, dropped=dropped)


def freshness(m: Machine, v: Variant, all_: list[Variant], probes: int) -> list[float]:
    """Seconds from sending one packet to seeing it in the variant's pcap on the volume."""
    quiesce(m, all_)
    v.start(m)
    traffic, waits = Traffic(m), []
    for i in range(probes):
        tag = b"MCT%08d" % (90000000 + i)
        probe = traffic.pcap(traffic.frames(90000000 + i, 1))
        time.sleep(1.37)  # land at varying points of the watcher's tick and the kernel's block timer
        m.sender("tcpreplay", "-q", "-i", m.sender_iface, str(probe), check=True)
        sent = time.monotonic()
        while time.monotonic() - sent < NEVER:
            newest = v.newest(m)
            if newest and any(tag in data for _, _, data in read_pcap(newest.read_bytes())):
                break
            time.sleep(0.02)
        waits.append(round(min(time.monotonic() - sent, NEVER), 2))
    v.stop(m)
    return waits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--packets", type=int, default=300_000)
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "capture_path.json")
    args = parser.parse_args()
    work = args.out.parent / "capture-lab"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    all_ = variants()
    results: dict[str, list[dict]] = {v.name: [] for v in all_}
    with baked(work, "bench", volume_mib=4096) as m:
        m.boot()
        wait_capturing(m)
        pcap = write_pcap(m.workdir / "burst.pcap", Traffic(m).frames(0, args.packets))
        for v in all_:  # warm-up, not counted: the first writes into the fresh volume image cost more
            measure(m, v, all_, pcap, args.packets)
        for r in range(args.rounds):  # round robin: the machine's speed drifts
            for v in all_:
                results[v.name].append(measure(m, v, all_, pcap, args.packets))
            print(f"round {r + 1}: " + ", ".join(f"{k} {x[-1]['cpu_us_per_packet']:.2f} us/pkt at {x[-1]['pps']:.0f} pps"
                                                  for k, x in results.items()), flush=True)
        waits = {v.name: freshness(m, v, all_, args.probes) for v in all_}
        quiesce(m, all_)
    median = {k: statistics.median(x["cpu_us_per_packet"] for x in runs) for k, runs in results.items()}
    ratio = {k: statistics.median(a["cpu_us_per_packet"] / b["cpu_us_per_packet"] for a, b in zip(runs, results["bare"]))
             for k, runs in results.items()}
    drops = {k: sum(x["dropped"] for x in runs) for k, runs in results.items()}
    summary = dict(packets_per_round=args.packets, rounds=args.rounds, median_cpu_us_per_packet=median,
                   to_bare_ratio_median=ratio, kernel_drops=drops,
                   freshness_seconds={k: dict(median=statistics.median(w), worst=max(w), probes=w) for k, w in waits.items()},
                   runs=results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"{'variant':<10} {'CPU us/pkt':>10} {'x bare':>7} {'drops':>8} {'fresh median':>13} {'worst':>6}")
    for k in results:
        f = summary["freshness_seconds"][k]
        print(f"{k:<10} {median[k]:>10.2f} {ratio[k]:>7.2f} {drops[k]:>8} {f['median']:>12.2f}s {f['worst']:>5.2f}s")
    print(f"goal: unit <= 1.5x bare with a packet on disk within a bounded time; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
