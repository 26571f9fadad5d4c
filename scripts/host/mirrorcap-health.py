#!/usr/bin/python3
"""mirrorcap-health: is this capture host capturing? For people and for alarms.

Checks services, tcpdump (the capture unit's own), writing (gaps and what they
lost), newest-pcap, drops (kernel), unmatched (VNIs no interface accepts) and
disk (mounted, above the floor): see the README. Exit 0 when healthy (warnings
allowed), 1 when not, 2 when it cannot run. Runs as root (signals tcpdump,
samples the mirror ENI). Python 3.9 stdlib only: Amazon Linux 2023's system Python.
"""
import argparse
import glob
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

# The shared module: /usr/local/lib/mirrorcap, from /usr/local/sbin.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "lib", "mirrorcap"))
import mirrorcap_host as host  # noqa: E402

RUN_DIR = "/run/mirrorcap"
PCAP_HEADER_BYTES = 24
DROPS = re.compile(r"(\d+) packets? captured, (\d+) packets? received by filter, (\d+) packets? dropped by kernel")


class Report:
    def __init__(self):
        self.checks = []

    def add(self, name, status, detail, **data):
        self.checks.append(dict(name=name, status=status, detail=detail, **data))

    @property
    def healthy(self):
        return all(c["status"] != "fail" for c in self.checks)


def capture_unit(vni):
    return "mirrorcap-capture@%s.service" % vni


def check_services(report, vnis):
    units = ["mirrorcap-storage.service", "mirrorcap-decap.service"]
    units += [capture_unit(v) for v in vnis] + ["mirrorcap-retention.timer"]
    out = subprocess.run(["systemctl", "is-active"] + units, capture_output=True, text=True).stdout.split()
    states = dict(zip(units, out + ["unknown"] * (len(units) - len(out))))
    down = sorted(u for u, s in states.items() if s != "active")
    if down:
        report.add("services", "fail", "not active: " + ", ".join("%s (%s)" % (u, states[u]) for u in down), units=states)
    else:
        report.add("services", "ok", "%d units active" % len(units), units=states)


def unit_main_pid(unit):
    out = subprocess.run(["systemctl", "show", "--property=MainPID", "--value", unit], capture_output=True, text=True)
    try:
        return int(out.stdout.strip() or 0)
    except ValueError:
        return 0


def children(pid, comm):
    """PIDs of the processes named `comm` whose parent is `pid`."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2:].split()[1])
        if ppid == pid and name == comm:
            found.append(int(stat.split("/")[2]))
    return sorted(found)


def check_tcpdump(report, vni):
    """The tcpdump the capture unit runs: a child of the unit's main process (its watcher)."""
    unit = capture_unit(vni)
    main_pid = unit_main_pid(unit)
    pids = children(main_pid, "tcpdump") if main_pid else []
    if pids:
        report.add("tcpdump", "ok", "VNI %s: running (pid %s, %s)" % (vni, ",".join(map(str, pids)), unit), vni=vni, pids=pids)
    else:
        report.add("tcpdump", "fail", "VNI %s: %s runs no tcpdump (systemctl status %s)" % (vni, unit, unit), vni=vni, pids=[])
    return pids


def check_writing(report, vni, state):
    """The capture's own record of gaps (state.json, written by its watcher)."""
    path = os.path.join(RUN_DIR, "capture-%s" % vni, "state.json")
    try:
        with open(path) as f:
            capture = json.load(f)
    except (OSError, ValueError):
        report.add("writing", "fail", "VNI %s: no capture state in %s: is %s running?" % (vni, path, capture_unit(vni)), vni=vni)
        return
    key = "lost:%s" % vni
    lost, before = capture.get("lost_packets_total", 0), state.get(key, 0)
    new_lost = lost - before if lost >= before else lost  # a smaller total: the capture's state started over
    state[key] = lost
    gap = capture.get("gap")
    data = dict(vni=vni, writing=bool(capture.get("writing")), lost_packets_max=lost, lost_since_last_check=new_lost,
                gaps_total=capture.get("gaps_total", 0), last_gaps=capture.get("gaps", [])[-3:], gap=gap)
    if gap:
        report.add("writing", "fail", "VNI %s: NOT WRITING for %ds: %s" % (vni, time.time() - gap["start"], gap["reason"]), **data)
    elif new_lost:
        last = capture["gaps"][-1] if capture.get("gaps") else {}
        report.add("writing", "fail", "VNI %s: up to %d packets lost in gaps since the last check (last: %s, %.1fs)"
                   % (vni, new_lost, last.get("reason", "?"), last.get("end", 0) - last.get("start", 0)), **data)
    else:
        report.add("writing", "ok", "VNI %s: writing (%d gap(s) since the unit started, none since the last check)"
                   % (vni, capture.get("gaps_total", 0)), **data)


def check_newest_pcap(report, directory, pattern, vni, stale_after, now):
    files = []
    for path in glob.glob(os.path.join(directory, host.pcap_glob(pattern, vni))):
        try:
            st = os.stat(path)
        except OSError:
            continue
        files.append((path, st.st_mtime, st.st_size))
    if not files:
        report.add("newest-pcap", "fail", "VNI %s: no pcap in %s" % (vni, directory), vni=vni)
        return
    files.sort()  # names carry the UTC start time: the last one is being written
    path, mtime, size = files[-1]
    age = max(0, int(now - mtime))
    # Rotated files holding only the header: normal for the first file after a
    # quiet start (tcpdump opens it before any packet); many of them mean output
    # is not packet-buffered. Reported, not judged.
    header_only = sum(1 for _, _, s in files[:-1] if s <= PCAP_HEADER_BYTES)
    data = dict(vni=vni, file=os.path.basename(path), age_seconds=age, size_bytes=size, header_only_rotated=header_only)
    detail = "VNI %s: %s, %d bytes, %ds old" % (vni, data["file"], size, age)
    if header_only:
        detail += "; %d rotated file(s) hold only a pcap header" % header_only
    if age > stale_after:
        what = "holds no packet and was opened" if size <= PCAP_HEADER_BYTES else "was last written"
        report.add("newest-pcap", "fail", "VNI %s: %s %s %ds ago (stale after %ds): is mirrored traffic arriving?"
                   % (vni, data["file"], what, age, stale_after), **data)
    else:
        report.add("newest-pcap", "ok", detail, **data)


def tcpdump_counters(pid, log, timeout=2.0):
    """Ask tcpdump for its counters (SIGUSR1) and read them from its log."""
    try:
        start = os.path.getsize(log)
    except OSError:
        return None
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        with open(log, "rb") as f:
            f.seek(start)
            found = DROPS.findall(f.read().decode(errors="replace"))
        if found:
            return tuple(int(x) for x in found[-1])
    return None


def check_drops(report, vni, pids, state):
    if not pids:
        return
    pid = pids[0]
    log = os.path.join(RUN_DIR, "capture-%s" % vni, "tcpdump.log")
    counters = tcpdump_counters(pid, log)
    if counters is None:
        report.add("drops", "warn", "VNI %s: tcpdump (pid %d) gave no counters in %s" % (vni, pid, log), vni=vni)
        return
    captured, received, dropped = counters
    key = "%s:%d" % (vni, pid)  # counters restart with the process
    new = dropped - state.get(key, 0)
    state[key] = dropped
    data = dict(vni=vni, captured=captured, received=received, dropped=dropped, dropped_since_last_check=new)
    if new > 0:
        report.add("drops", "fail", "VNI %s: kernel dropped %d packets since the last check (%d since tcpdump started): "
                   "raise buffer_kib or capture less" % (vni, new, dropped), **data)
    else:
        report.add("drops", "ok", "VNI %s: 0 new kernel drops (%d captured)" % (vni, captured), **data)
    if os.path.getsize(log) > 1 << 20:
        open(log, "w").close()  # tee appends (O_APPEND), so truncating is safe


def vxlan_lower_iface(vni):
    out = subprocess.run(["ip", "-d", "-j", "link", "show", "dev", "vxlan%s" % vni], capture_output=True, text=True)
    try:
        return json.loads(out.stdout)[0]["linkinfo"]["info_data"]["link"]
    except (ValueError, LookupError, TypeError):
        return None


def pcap_vnis(raw):
    """VNIs of the VXLAN packets (Ethernet/IPv4/UDP) in a pcap byte string."""
    vnis = {}
    if len(raw) < PCAP_HEADER_BYTES:
        return vnis
    endian = "<" if raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    pos = PCAP_HEADER_BYTES
    while pos + 16 <= len(raw):
        incl = struct.unpack(endian + "I", raw[pos + 8:pos + 12])[0]
        pkt = raw[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        if len(pkt) < 14 + 20 or pkt[12:14] != b"\x08\x00":
            continue
        ihl = (pkt[14] & 0x0F) * 4
        vxlan = pkt[14 + ihl + 8:14 + ihl + 16]
        if len(vxlan) == 8:
            vni = struct.unpack("!I", vxlan[4:8])[0] >> 8
            vnis[vni] = vnis.get(vni, 0) + 1
    return vnis


def check_unmatched(report, vnis, vxlan_port, seconds):
    if seconds <= 0:
        report.add("unmatched", "skip", "sampling disabled (--sample-seconds 0)")
        return
    iface = vxlan_lower_iface(vnis[0]) if vnis else None
    if not iface:
        report.add("unmatched", "fail", "cannot tell the mirror ENI: vxlan%s is missing (check mirrorcap-decap)" % vnis[0])
        return
    # The kernel filter keeps only VXLAN packets whose VNI (UDP payload bytes 4-6)
    # is not configured, so the sample is small even under heavy mirroring.
    accepted = " or ".join("udp[12:4] >> 8 = %s" % v for v in vnis)
    expr = "udp dst port %d and not (%s)" % (vxlan_port, accepted)
    # -Z root: distribution builds otherwise switch users; -w -: no file to create.
    proc = subprocess.run(["timeout", str(seconds), "tcpdump", "-i", iface, "-n", "-p", "-s", "64", "-c", "10000",
                           "-Z", "root", "-w", "-", expr], capture_output=True)
    seen = pcap_vnis(proc.stdout)
    if proc.returncode not in (0, 124) and not proc.stdout:
        report.add("unmatched", "warn", "could not sample %s: %s" % (iface, proc.stderr.decode(errors="replace").strip()))
    elif seen:
        listing = ", ".join("VNI %d (%d pkts)" % kv for kv in sorted(seen.items()))
        report.add("unmatched", "fail", "%s: VXLAN with a VNI no interface accepts, dropped by the kernel: %s. "
                   "Fix the session's VNI or add it to the capture" % (iface, listing), iface=iface,
                   vnis={str(k): n for k, n in seen.items()}, sample_seconds=seconds)
    else:
        report.add("unmatched", "ok", "%s: no VXLAN with other VNIs in %ss" % (iface, seconds), iface=iface, vnis={},
                   sample_seconds=seconds)


def check_disk(report, directory, min_free_percent, min_free_gib):
    if not os.path.ismount(directory):
        report.add("disk", "fail", "%s is not a mount point: the pcap volume is not mounted" % directory)
        return
    try:
        usage = shutil.disk_usage(directory)
    except OSError as e:
        report.add("disk", "fail", "%s: %s" % (directory, e))
        return
    percent = 100.0 * usage.free / usage.total if usage.total else 0.0
    gib = usage.free / (1 << 30)
    data = dict(free_bytes=usage.free, total_bytes=usage.total, free_percent=round(percent, 1))
    if percent < min_free_percent or gib < min_free_gib:
        report.add("disk", "fail", "%s: %.1f%% (%.1f GiB) free, under the floor (%s%% / %s GiB): is retention running?"
                   % (directory, percent, gib, min_free_percent, min_free_gib), **data)
    else:
        report.add("disk", "ok", "%s: %.1f%% (%.1f GiB) free" % (directory, percent, gib), **data)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="mirrorcap-health", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--sample-seconds", type=float, default=3.0,
                        help="how long to watch the mirror ENI for unmatched VNIs (0 = skip)")
    args = parser.parse_args(argv)
    try:
        env = host.read_env()
        vnis = env["MIRRORCAP_VNIS"].split()
        directory, pattern = env["MIRRORCAP_CAPTURE_DIR"], env["MIRRORCAP_PCAP_PATTERN"]
        stale_after = int(env["MIRRORCAP_STALE_AFTER_SECONDS"])
        vxlan_port = int(env["MIRRORCAP_VXLAN_PORT"])
        min_free_percent = float(env.get("MIRRORCAP_MIN_FREE_PERCENT", "0"))
        min_free_gib = float(env.get("MIRRORCAP_MIN_FREE_GIB", "0"))
    except (OSError, KeyError, ValueError) as e:
        print("mirrorcap-health: cannot read %s: %s" % (host.ENV_FILE, e), file=sys.stderr)
        return 2

    state_file = os.path.join(RUN_DIR, "health-state.json")
    try:
        with open(state_file) as f:
            state = json.load(f)
    except (OSError, ValueError):
        state = {}

    report = Report()
    now = time.time()
    check_services(report, vnis)
    for vni in vnis:
        pids = check_tcpdump(report, vni)
        check_writing(report, vni, state)
        check_newest_pcap(report, directory, pattern, vni, stale_after, now)
        check_drops(report, vni, pids, state)
    check_unmatched(report, vnis, vxlan_port, args.sample_seconds)
    check_disk(report, directory, min_free_percent, min_free_gib)

    os.makedirs(RUN_DIR, exist_ok=True)
    with open(state_file + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(state_file + ".tmp", state_file)

    if args.json:
        json.dump(dict(healthy=report.healthy, capture=env.get("MIRRORCAP_CAPTURE"), checks=report.checks), sys.stdout, indent=2)
        print()
    else:
        for c in report.checks:
            print("%-4s  %-11s  %s" % (c["status"].upper(), c["name"], c["detail"]))
        print("mirrorcap-health: %s" % ("healthy" if report.healthy else "UNHEALTHY"))
    return 0 if report.healthy else 1


if __name__ == "__main__":
    sys.exit(main())
