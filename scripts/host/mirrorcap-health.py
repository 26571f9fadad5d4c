#!/usr/bin/python3
"""mirrorcap-health: is this capture host capturing? For people and for alarms.

Checks storage (the volume: mounted, or what it waits for), decap (the vxlan
interfaces: made, or what they wait for), mtu (the NIC's, against what mirrored
traffic needs), services, and per VNI: tcpdump, writing (the capture's loss
record: an open gap, gaps and what they lost), restarts (flapping), newest-pcap,
drops (kernel), truncated (packets cut short before they arrived); then
unmatched (VNIs no interface accepts), disk and metrics (is mirrorcap-metrics
publishing to CloudWatch: a warning, never a failure): see the README. Losses are
reported once to each reader ("since the last check", remembered across reboots:
a person, mirrorcap-metrics and the NLB probe each keep their own). Exit 0 when
healthy (warnings allowed), 1 when not, 2 when it cannot run. Runs as root
(signals tcpdump, samples the mirror ENI). Python 3.9 stdlib only.
"""
import argparse
import errno
import glob
import json
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import time

# The shared module: /usr/local/lib/mirrorcap, from /usr/local/sbin.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "lib", "mirrorcap"))
import mirrorcap_host as host  # noqa: E402

PCAP_HEADER_BYTES = 24
COUNTERS = re.compile(r"(\d+) packets? captured[,\s]+(\d+) packets? received by filter[,\s]+(\d+) packets? dropped by kernel")
HEARTBEAT_SECONDS = 5  # the capture's watcher writes its heartbeat four times a second
FLAPPING = (3, 600)  # this many restarts in this many seconds
BACKOFF_HISTORY = "/run/mirrorcap/capture-backoff.%s"  # mirrorcap-capture-backoff's HISTORY
STATE_FILE = os.path.join(host.STATE_DIR, "health-state.json")  # what was reported already (to a person)
# Every reader of the verdict keeps its own "since the last check": mirrorcap-metrics' run a minute
# after a reboot once took the reboot's gap, and the person who asked next was told all was well.
READER = re.compile(r"[a-z][a-z0-9-]{0,31}\Z")
METRICS_FILE = os.path.join(host.STATE_DIR, "metrics.json")  # mirrorcap-metrics' last runs
METRICS_FAILURES = 2  # one failed publish can be a blip; two in a row are worth saying
AGAIN = "systemctl start mirrorcap.target"


# Which failed check names the cause when several fail: the volume before what it stops (a shut-down
# file system also fails disk and writing; foreign files filling it also stop the writing).
CAUSE_ORDER = ("storage", "decap", "disk", "mtu", "services", "writing", "tcpdump", "restarts")


class Report:
    def __init__(self):
        self.checks = []

    def add(self, name, status, detail, **data):
        self.checks.append(dict(name=name, status=status, detail=detail, **data))

    def run(self, name, check, *args):
        """A check that breaks is a failed check saying so: an alarm always gets a verdict."""
        try:
            return check(self, *args)
        except Exception as e:  # noqa: BLE001 - whatever it was, the verdict must still be printed
            self.add(name, "fail", "the %s check could not run: %s: %s" % (name, type(e).__name__, e))

    @property
    def healthy(self):
        return all(c["status"] != "fail" for c in self.checks)

    def cause(self):
        """The check that says why the host is unhealthy (or, healthy, the first warning): None when all is well."""
        for status in ("fail", "warn"):
            found = [c for c in self.checks if c["status"] == status]
            if found:
                rank = {name: i for i, name in enumerate(CAUSE_ORDER)}
                return min(found, key=lambda c: rank.get(c["name"], len(rank)))
        return None


def capture_unit(vni):
    return "mirrorcap-capture@%s.service" % vni


def unit_props(unit, *props):
    out = subprocess.run(["systemctl", "show", unit] + ["--property=" + p for p in props], capture_output=True, text=True)
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def check_stage(report, name, unit, directory=None):
    """storage or decap: active, or what its script waits for, or why it failed (its status file).
    Storage (`directory`): also whether the mounted volume reads, and what mirrorcap-recover did."""
    state = unit_props(unit, "ActiveState").get("ActiveState", "unknown")
    error = volume_error(directory) if directory else None
    if error is not None:
        recover = host.read_json(os.path.join(host.RUN_DIR, "recover.json"), {}) or {}
        doing = (" (mirrorcap-recover: %s)" % recover["detail"]) if recover.get("state") in ("recovering", "backing-off") \
            else ""
        report.add(name, "fail", "%s: %s: the pcap volume's file system failed (shut down, or the volume is impaired): "
                   "nothing can be written until it is mounted again%s; mirrorcap-recover remounts it when a capture "
                   "notices; by hand: systemctl start mirrorcap-recover.service (it stops what holds the volume, "
                   "unmounts it, mounts it again and starts capture)" % (directory, error.strerror or error, doing),
                   unit=unit, unit_state=state,
                   state="io-error", errno=error.errno)
        return
    status = host.read_json(os.path.join(host.RUN_DIR, name + ".json"), {}) or {}
    detail = status.get("detail") or ""
    data = dict(unit=unit, unit_state=state, state=status.get("state"), since=status.get("since"))
    if state == "active":
        report.add(name, "ok", detail or "%s active" % unit, **data)
    elif state == "activating" and status.get("state", "").startswith("waiting"):
        report.add(name, "fail", "%s %s" % (detail, "(%ds)" % (time.time() - status["since"]) if status.get("since") else ""),
                   **data)
    elif state == "failed" and status.get("state") == "failed":
        report.add(name, "fail", "%s failed: %s" % (unit, detail), **data)
    else:
        report.add(name, "fail", "%s is %s (journalctl -u %s); then: %s" % (unit, state, unit, AGAIN), **data)


def check_services(report, vnis):
    units = ["mirrorcap.target", "mirrorcap-settings.service", "mirrorcap-storage.service", "mirrorcap-decap.service"]
    units += [capture_unit(v) for v in vnis] + ["mirrorcap-retention.timer", "mirrorcap-recover.path",
                                                       "mirrorcap-recover.timer"]
    out = subprocess.run(["systemctl", "is-active"] + units, capture_output=True, text=True).stdout.split()
    states = dict(zip(units, out + ["unknown"] * (len(units) - len(out))))
    down = sorted(u for u, s in states.items() if s != "active")
    if down:
        report.add("services", "fail", "not active: %s (%s starts what is not running)"
                   % (", ".join("%s (%s)" % (u, states[u]) for u in down), AGAIN), units=states)
    else:
        report.add("services", "ok", "%d units active" % len(units), units=states)


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
    main_pid = int(unit_props(unit, "MainPID").get("MainPID") or 0)
    pids = children(main_pid, "tcpdump") if main_pid else []
    if pids:
        report.add("tcpdump", "ok", "VNI %s: running (pid %s, %s)" % (vni, ",".join(map(str, pids)), unit), vni=vni, pids=pids)
    else:
        report.add("tcpdump", "fail", "VNI %s: %s runs no tcpdump (systemctl status %s)" % (vni, unit, unit), vni=vni, pids=[])
    return pids


def since_last(state, key, total):
    """How much `total` grew since the last check (all of it when it shrank: the record started over)."""
    before = state.get(key, 0)
    state[key] = total
    return total - before if total >= before else total


def when(t):
    return time.strftime("%H:%M:%S", time.gmtime(t)) if t else "?"


def check_writing(report, vni, record, state, now):
    """The capture's own record: is it writing now, and what did its gaps lose since the last check."""
    heartbeat = (host.read_json(os.path.join(host.capture_run_dir(vni), "rx.json"), {}) or {}).get("heartbeat")
    new_gaps = since_last(state, "gaps:%s" % vni, record.get("gaps_total", 0))
    new_lost = since_last(state, "lost:%s" % vni, record.get("lost_packets_total", 0))
    new_unknown = since_last(state, "unknown:%s" % vni, record.get("lost_unknown_gaps", 0))
    gap, last = record.get("gap"), (record.get("gaps") or [{}])[-1]
    data = dict(vni=vni, writing=bool(record.get("writing")) and gap is None, gap=gap, gaps_total=record.get("gaps_total", 0),
                lost_packets_max=record.get("lost_packets_total", 0), lost_unknown_gaps=record.get("lost_unknown_gaps", 0),
                lost_since_last_check=new_lost, gaps_since_last_check=new_gaps, last_gaps=(record.get("gaps") or [])[-3:],
                heartbeat_age=None if heartbeat is None else round(now - heartbeat, 1))
    lost = "at most %d packets lost" % new_lost + (" (and an unknown number in %d gap(s) the host could not count: "
                                                   "it was down)" % new_unknown if new_unknown else "")
    if gap:
        report.add("writing", "fail", "VNI %s: NOT WRITING since %s (%ds): %s" % (vni, when(gap["start"]), now - gap["start"],
                                                                               gap["reason"]), **data)
    elif record.get("waiting"):
        report.add("writing", "fail", "VNI %s: NOT WRITING: waiting for %s (mirrorcap-decap makes it)" % (vni, record["waiting"]),
                   **data)
    elif not record.get("writing") or heartbeat is None or now - heartbeat > HEARTBEAT_SECONDS:
        report.add("writing", "fail", "VNI %s: NOT WRITING: the capture's watcher %s (journalctl -u %s)"
                   % (vni, "is not running" if heartbeat is None else "last reported %ds ago" % (now - heartbeat),
                      capture_unit(vni)), **data)
    elif new_gaps:
        report.add("writing", "fail", "VNI %s: %d gap(s) since the last check, %s (last: %s, %s-%s, %.1fs)"
                   % (vni, new_gaps, lost, last.get("reason", "?"), when(last.get("start")), when(last.get("end")),
                      (last.get("end") or 0) - (last.get("start") or 0)), **data)
    else:
        report.add("writing", "ok", "VNI %s: writing (%d gap(s) in all, none since the last check)"
                   % (vni, record.get("gaps_total", 0)), **data)


def backoff_starts(vni, now, window):
    """When mirrorcap-capture-backoff started the unit again (its sandbox could not be set up, 226/NAMESPACE):
    those starts are no automatic restart, so NRestarts does not count them."""
    try:
        with open(BACKOFF_HISTORY % vni) as f:
            times = [int(line) for line in f if line.strip().isdigit()]
    except OSError:
        return []
    return [t for t in times if now - t <= window]


def check_restarts(report, vni, record, now, state):
    """Restarts the watcher recorded (tcpdump's, the unit's) and the unit's restarts systemd counts
    (NRestarts, sampled at each check): a unit that fails before its watcher runs (its mount
    namespace cannot be set up) records nothing itself."""
    count, window = FLAPPING
    recent = [r for r in record.get("restarts", []) if now - r[0] <= window]
    props = unit_props(capture_unit(vni), "NRestarts", "Result", "ExecMainStatus", "ActiveState", "SubState")
    seen = [p for p in state.get("nrestarts:%s" % vni, []) if now - p[0] <= window]
    nrestarts = int(props.get("NRestarts") or 0)
    if seen and nrestarts < seen[-1][1]:
        seen = []  # the unit was loaded again: its count started over
    state["nrestarts:%s" % vni] = (seen + [[now, nrestarts]])[-50:]
    by_systemd = (nrestarts - seen[0][1] if seen else 0) + len(backoff_starts(vni, now, window))
    data = dict(vni=vni, restarts_recent=max(len(recent), by_systemd), window_seconds=window, nrestarts=nrestarts)
    if by_systemd >= count and by_systemd > len(recent):
        report.add("restarts", "fail", "VNI %s: flapping: systemd restarted %s %d times in %d minutes (now %s/%s, last "
                   "result %s, status %s; journalctl -u %s)"
                   % (vni, capture_unit(vni), by_systemd, window // 60, props.get("ActiveState"), props.get("SubState"),
                      props.get("Result"), props.get("ExecMainStatus"), capture_unit(vni)), **data)
    elif len(recent) >= count:
        report.add("restarts", "fail", "VNI %s: flapping: %d restarts in %d minutes (last: %s)"
                   % (vni, len(recent), window // 60, recent[-1][1]), **data)
    else:
        report.add("restarts", "ok", "VNI %s: %d restart(s) in the last %d minutes" % (vni, len(recent), window // 60), **data)


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
    # quiet start (tcpdump opens it before any packet). Reported, not judged.
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


INDEX_SUFFIX, INDEX_FAILED_SUFFIX = host.INDEX_SUFFIX, host.INDEX_FAILED_SUFFIX
INDEX_PARTIAL = host.INDEX_PARTIAL  # the marker of a damaged pcap, indexed around the damage
INDEX_LATE_SECONDS = 600  # a closed pcap is indexed within seconds of its rotation


def marker(path):
    try:
        with open(path + INDEX_FAILED_SUFFIX) as f:
            return f.read().strip()
    except OSError:
        return "?"


def check_index(report, directory, pattern, vni, now):
    """Closed pcaps without their packet index: still kept, archived and found by time, but
    `mirrorcap find` reads them whole. A warning, never a failed host."""
    pcaps = sorted(glob.glob(os.path.join(directory, host.pcap_glob(pattern, vni))))[:-1]  # the newest is being written
    failed, late, damaged = [], [], []
    for path in pcaps:
        if os.path.exists(path + INDEX_FAILED_SUFFIX):
            why = marker(path)
            (damaged if why.startswith(INDEX_PARTIAL) else failed).append((path, why))
        elif not os.path.exists(path + INDEX_SUFFIX):
            try:
                if now - os.stat(path).st_mtime > INDEX_LATE_SECONDS:
                    late.append(path)
            except OSError:
                pass
    data = dict(vni=vni, closed=len(pcaps), index_failed=len(failed), index_late=len(late), index_partial=len(damaged),
                damaged=[os.path.basename(p) for p, _ in damaged[-5:]])
    if not failed and not late and not damaged:
        report.add("index", "ok", "VNI %s: every closed pcap (%d) has its packet index" % (vni, len(pcaps)), **data)
        return
    parts = []
    if damaged:
        # Bytes in the middle that are no record: what lies around them is indexed, they are not.
        parts.append("%d pcap(s) damaged, indexed only in part (latest %s: %s)" % (len(damaged),
                                                                                   os.path.basename(damaged[-1][0]), damaged[-1][1]))
    if failed:
        parts.append("%d pcap(s) could not be indexed (latest %s: %s)" % (len(failed), os.path.basename(failed[-1][0]),
                                                                          failed[-1][1]))
    if late:
        parts.append("%d closed more than %ds ago have no index yet (journalctl -u %s)" % (len(late), INDEX_LATE_SECONDS, capture_unit(vni)))
    report.add("index", "warn", "VNI %s: %s; they are kept and found by time, and read whole" % (vni, "; ".join(parts)), **data)


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
            found = COUNTERS.findall(f.read().decode(errors="replace"))
        if found:
            return tuple(int(x) for x in found[-1])
    return None


def check_drops(report, vni, pids, record, state):
    """Kernel drops of every tcpdump the capture ran: the record's (those that ended) plus the live one's."""
    log = os.path.join(host.capture_run_dir(vni), "tcpdump.log")
    counters = tcpdump_counters(pids[0], log) if pids else None
    if pids and counters is None:
        report.add("drops", "warn", "VNI %s: tcpdump (pid %d) gave no counters in %s" % (vni, pids[0], log), vni=vni)
        return
    captured, received, dropped = counters or (0, 0, 0)
    total = record.get("kernel_drops_total", 0) + dropped
    new = since_last(state, "drops:%s" % vni, total)
    data = dict(vni=vni, captured=captured, received=received, dropped=dropped, dropped_total=total, dropped_since_last_check=new)
    if new > 0:
        report.add("drops", "fail", "VNI %s: kernel dropped %d packets since the last check (%d in all): "
                   "raise buffer_kib or capture less" % (vni, new, total), **data)
    else:
        report.add("drops", "ok", "VNI %s: 0 new kernel drops (%d captured by this tcpdump)" % (vni, captured), **data)
    if pids and os.path.getsize(log) > 1 << 20:
        open(log, "w").close()  # appended to (O_APPEND), so truncating is safe


def check_truncated(report, vni, record, state):
    total = record.get("truncated_total", 0)
    new = since_last(state, "truncated:%s" % vni, total)
    data = dict(vni=vni, truncated_total=total, truncated_since_last_check=new)
    if new:
        report.add("truncated", "fail", "VNI %s: %d packets arrived cut short since the last check (%d in all; their IP "
                   "length runs past the frame): a source's packet_length, or packets over the target's MTU"
                   % (vni, new, total), **data)
    else:
        report.add("truncated", "ok", "VNI %s: no packet cut short since the last check (%d in all)" % (vni, total), **data)


def lower_iface(iface):
    """The interface a vxlan interface receives on: the one mirrored traffic reaches."""
    out = subprocess.run(["ip", "-d", "-j", "link", "show", "dev", iface], capture_output=True, text=True)
    try:
        return json.loads(out.stdout)[0]["linkinfo"]["info_data"]["link"]
    except (ValueError, LookupError, TypeError):
        return None


def check_mtu(report, iface, needed, overhead, state):
    """The NIC mirrored traffic reaches: a frame over its MTU is dropped there, before it is
    decapsulated; its receive drops are shown (the only count of them)."""
    if not iface:
        report.add("mtu", "fail", "cannot tell the interface mirrored traffic reaches: no vxlan interface (see decap)")
        return
    try:
        with open("/sys/class/net/%s/mtu" % iface) as f:
            mtu = int(f.read())
        with open("/sys/class/net/%s/statistics/rx_dropped" % iface) as f:
            dropped = since_last(state, "nic_dropped:%s" % iface, int(f.read()))
    except (OSError, ValueError) as e:
        report.add("mtu", "fail", "cannot read %s's MTU and counters: %s" % (iface, e))
        return
    data = dict(iface=iface, mtu=mtu, needed=needed, nic_dropped_since_last_check=dropped)
    drops = "; %d frames dropped by %s since the last check" % (dropped, iface) if dropped else ""
    if mtu < needed:
        report.add("mtu", "fail", "%s: MTU %d, under the %d mirrored traffic needs: mirrored packets over %d bytes (%d inside "
                   "the VXLAN) are dropped before they are decapsulated%s; fix: systemctl reload mirrorcap-decap (it sets %d)"
                   % (iface, mtu, needed, mtu, mtu - overhead, drops, needed), **data)
    elif dropped:
        report.add("mtu", "warn", "%s: MTU %d%s (rx_dropped: frames the NIC or the kernel refused)" % (iface, mtu, drops), **data)
    else:
        report.add("mtu", "ok", "%s: MTU %d: mirrored packets up to %d bytes inside the VXLAN arrive whole"
                   % (iface, mtu, mtu - overhead), **data)


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


def check_unmatched(report, iface, vnis, vxlan, vxlan_port, seconds):
    if seconds <= 0:
        report.add("unmatched", "skip", "sampling disabled (--sample-seconds 0)")
        return
    if not iface:
        report.add("unmatched", "fail", "cannot tell the mirror ENI: %s is missing (check mirrorcap-decap)" % vxlan)
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


FOREIGN_SHOWN = 5  # the largest files mirrorcap did not write, named in the disk check


def printable(text):
    """A name from the volume, safe in a terminal: control characters as escapes."""
    return "".join(c if c.isprintable() else "\\x%02x" % ord(c) for c in text)


def foreign_files(directory, pattern):
    """[(size, path)] of the files under `directory` that mirrorcap did not write (its pcaps, their
    packet index or index failure marker and the temporary files of those), largest first. Walked
    without following links."""
    own = re.compile(re.sub(r"\\\*", ".*", re.escape(host.pcap_glob(pattern))) + r"(%s|%s)?(\.\d+\.tmp)?" % (re.escape(INDEX_SUFFIX), re.escape(INDEX_FAILED_SUFFIX)))
    found = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            if root == directory and own.fullmatch(name):
                continue
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            found.append((st.st_blocks * 512, path))
    return sorted(found, reverse=True)


def volume_error(directory):
    """Why the mounted volume cannot be read (an OSError such as EIO: the file system shut down), or None."""
    try:
        os.stat(directory)
    except OSError as e:
        return None if e.errno in (errno.ENOENT, errno.ENOTDIR) else e
    return None


def check_disk(report, directory, min_free_percent, min_free_gib, pattern):
    error = volume_error(directory)
    if error is not None:
        report.add("disk", "fail", "%s: %s" % (directory, error.strerror or error), errno=error.errno)
        return
    if not os.path.ismount(directory):
        report.add("disk", "fail", "%s is not a mount point: the pcap volume is not mounted" % directory)
        return
    usage = shutil.disk_usage(directory)
    percent = 100.0 * usage.free / usage.total if usage.total else 0.0
    gib = usage.free / (1 << 30)
    data = dict(free_bytes=usage.free, total_bytes=usage.total, free_percent=round(percent, 1))
    if percent < min_free_percent or gib < min_free_gib:
        foreign = foreign_files(directory, pattern)
        others = sum(size for size, _ in foreign)
        pcaps = max(0, usage.used - others)
        data.update(foreign_bytes=others, foreign_files=[dict(path=p, bytes=b) for b, p in foreign[:FOREIGN_SHOWN]])
        floor = "%s: %.1f%% (%.1f GiB) free, under the floor (%s%% / %s GiB)" % (directory, percent, gib, min_free_percent,
                                                                              min_free_gib)
        if foreign and others >= pcaps:
            # Retention deletes only pcaps: it cannot make this room, and never deletes what it did not write.
            shown = ", ".join("%s (%s)" % (printable(p), human(b)) for b, p in foreign[:FOREIGN_SHOWN])
            more = " and %d more" % (len(foreign) - FOREIGN_SHOWN) if len(foreign) > FOREIGN_SHOWN else ""
            report.add("disk", "fail", "%s: files mirrorcap did not write fill it (%s in %d file(s): %s%s), and retention "
                       "deletes only pcaps: delete them (rm -- %s) or move them off the volume; capture resumes by itself"
                       % (floor, human(others), len(foreign), shown, more,
                          " ".join(shlex.quote(printable(p)) for _, p in foreign[:FOREIGN_SHOWN])), **data)
        else:
            report.add("disk", "fail", "%s: is retention running? (pcaps %.1f GiB; other files %.1f GiB, which retention "
                       "never deletes)" % (floor, pcaps / (1 << 30), others / (1 << 30)), **data)
    else:
        report.add("disk", "ok", "%s: %.1f%% (%.1f GiB) free" % (directory, percent, gib), **data)


def human(n):
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return "%d %s" % (n, unit) if unit == "bytes" else "%.1f %s" % (n, unit)
        n /= 1024.0


def check_metrics(report, path=METRICS_FILE):
    """Whether the alarms get their datapoints. A warning at most: publishing is never the capture's health."""
    m = host.read_json(path, {}) or {}
    failures, last = int(m.get("failures") or 0), m.get("last_published")
    data = dict(last_published=last, failures=failures, last_error=m.get("last_error"))
    if failures >= METRICS_FAILURES:
        since = "%s UTC" % time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(last)) if last else "this host started"
        report.add("metrics", "warn", "not published since %s (%d attempts in a row failed; the last: %s; "
                   "journalctl -u mirrorcap-metrics.service): the capture's alarms see no data"
                   % (since, failures, m.get("last_error")), **data)
    elif last:
        report.add("metrics", "ok", "published to CloudWatch at %s" % when(last), **data)
    else:
        report.add("metrics", "ok", "not published yet (mirrorcap-metrics.timer runs every minute)", **data)


def reader(name):
    if not READER.match(name):
        raise argparse.ArgumentTypeError("%r: a reader is a lowercase name (letters, digits, '-'), e.g. person" % name)
    return name


def state_file_of(name):
    """The person's record keeps its old name; every other reader has its own."""
    return STATE_FILE if name == "person" else os.path.join(host.STATE_DIR, "health-state.%s.json" % name)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="mirrorcap-health", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--sample-seconds", type=float, default=3.0,
                        help="how long to watch the mirror ENI for unmatched VNIs (0 = skip)")
    parser.add_argument("--reader", default="person", type=reader,
                        help="whose \"since the last check\" this is (each is told of a loss once): "
                             "mirrorcap-metrics and the NLB probe have their own; default: person")
    args = parser.parse_args(argv)
    try:
        env = host.read_env()
        vnis = env["MIRRORCAP_VNIS"].split()
        directory, pattern = env["MIRRORCAP_CAPTURE_DIR"], env["MIRRORCAP_PCAP_PATTERN"]
        stale_after = int(env["MIRRORCAP_STALE_AFTER_SECONDS"])
        vxlan_port, overhead = int(env["MIRRORCAP_VXLAN_PORT"]), int(env["MIRRORCAP_VXLAN_OVERHEAD"])
        mirror_mtu = int(env["MIRRORCAP_MIRROR_MTU"])
        min_free_percent = float(env.get("MIRRORCAP_MIN_FREE_PERCENT", "0"))
        min_free_gib = float(env.get("MIRRORCAP_MIN_FREE_GIB", "0"))
    except (OSError, KeyError, ValueError) as e:
        print("mirrorcap-health: cannot read %s: %s" % (host.ENV_FILE, e), file=sys.stderr)
        return 2

    state_file = state_file_of(args.reader)
    state = host.read_json(state_file, None)
    if state is None:  # a reader new to this host starts where the shared record was: no old loss told again
        state = host.read_json(STATE_FILE, {}) or {}
    report = Report()
    now = time.time()
    vxlan = host.vxlan_iface(env, vnis[0]) if vnis else None
    iface = lower_iface(vxlan) if vxlan else None
    report.run("storage", check_stage, "storage", "mirrorcap-storage.service", directory)
    report.run("decap", check_stage, "decap", "mirrorcap-decap.service")
    report.run("mtu", check_mtu, iface, mirror_mtu, overhead, state)
    report.run("services", check_services, vnis)
    for vni in vnis:
        record = host.read_json(host.capture_state_file(vni), {}) or {}
        pids = report.run("tcpdump", check_tcpdump, vni) or []
        report.run("writing", check_writing, vni, record, state, now)
        report.run("restarts", check_restarts, vni, record, now, state)
        report.run("newest-pcap", check_newest_pcap, directory, pattern, vni, stale_after, now)
        report.run("index", check_index, directory, pattern, vni, now)
        report.run("drops", check_drops, vni, pids, record, state)
        report.run("truncated", check_truncated, vni, record, state)
    report.run("unmatched", check_unmatched, iface, vnis, vxlan, vxlan_port, args.sample_seconds)
    report.run("disk", check_disk, directory, min_free_percent, min_free_gib, pattern)
    report.run("metrics", check_metrics)

    os.makedirs(host.STATE_DIR, exist_ok=True)
    host.write_json(state_file, state)
    cause = report.cause()
    first = "mirrorcap-health: %s%s" % ("healthy" if report.healthy else "UNHEALTHY",
                                        ": %s: %s" % (cause["name"], cause["detail"]) if cause else "")
    if args.json:
        json.dump(dict(healthy=report.healthy, capture=env.get("MIRRORCAP_CAPTURE"), summary=first, checks=report.checks),
                  sys.stdout, indent=2)
        print()
    else:
        print(first)  # the cause first: what an alarm or a person reads of it
        for c in report.checks:
            print("%-4s  %-11s  %s" % (c["status"].upper(), c["name"], c["detail"]))
        print("mirrorcap-health: %s" % ("healthy" if report.healthy else "UNHEALTHY"))
    return 0 if report.healthy else 1


if __name__ == "__main__":
    sys.exit(main())
