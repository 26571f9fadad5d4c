#!/usr/bin/python3
"""mirrorcap-capture VNI: tcpdump on vxlan<VNI> into rotating pcaps, watched.

Run by mirrorcap-capture@<VNI>.service as the capture user with CAP_NET_RAW only.
tcpdump runs with -U: each packet is written as it arrives (never a file left
at its 24-byte header). Not SIGUSR2 instead (cheaper): tcpdump's handler calls
fflush() inside a signal, which can write buffered bytes twice (a corrupt pcap).
After one failed write (full disk, I/O error) libpcap never writes that file
again while tcpdump keeps counting packets: when the interface receives packets
and the file stops growing, tcpdump is replaced by a new one (a new file) as soon
as the volume has room. A tcpdump that dies is started again at once. Each gap
and the most it can have lost (the interface's receive counter) go to state.json
in the unit's RuntimeDirectory, for mirrorcap-health.
Exits 1 when the interface or the volume is missing, or tcpdump keeps failing.
Python 3.9 stdlib only (Amazon Linux 2023's system Python).
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

# The shared module: /usr/local/lib/mirrorcap, from /usr/local/libexec/mirrorcap.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "lib", "mirrorcap"))
import mirrorcap_host as host  # noqa: E402

TICK_SECONDS = 1.0
STUCK_SECONDS = 5.0  # packets seen on the interface this long without the file growing
RESUME_FREE_BYTES = 64 << 20  # room needed before a new file is started after a full disk
RESTARTS_PER_MINUTE = 5
KEEP_GAPS = 20


def log(message):
    print("mirrorcap-capture: " + message, file=sys.stderr, flush=True)


def die(message):
    log(message)
    sys.exit(1)


def free_bytes(directory):
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def rx_packets(iface):
    with open("/sys/class/net/%s/statistics/rx_packets" % iface) as f:
        return int(f.read())


def open_pcap(pid, directory):
    """(path, size) of the pcap tcpdump `pid` has open, or None."""
    fd_dir = "/proc/%d/fd" % pid
    try:
        for fd in os.listdir(fd_dir):
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target.startswith(directory + "/") and target.endswith(".pcap"):
                return target, os.stat(target).st_size
    except OSError:
        pass
    return None


class State:
    """state.json for mirrorcap-health: is tcpdump writing, and what was lost when not."""

    def __init__(self, path):
        self.path = path
        try:
            with open(path) as f:
                self.data = json.load(f)  # kept across unit restarts (RuntimeDirectoryPreserve=restart)
        except (OSError, ValueError):
            self.data = {}
        self.data.setdefault("gaps", [])
        self.data.setdefault("lost_packets_total", 0)
        self.data.setdefault("gaps_total", 0)
        self.data.setdefault("gap", None)  # a gap the previous run of the unit left open ends when this one writes

    def save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f)
        os.replace(tmp, self.path)

    def writing(self, pid):
        self.data.update(writing=True, pid=pid, since=time.time())
        self.save()

    def open_gap(self, reason, rx_at_last_write):
        if self.data["gap"] is None:
            self.data["gap"] = dict(start=time.time(), reason=reason, rx_at_last_write=rx_at_last_write)
            log("NOT WRITING: %s" % reason)
        self.data.update(writing=False, pid=None)
        self.save()

    def close_gap(self, rx_now):
        gap, self.data["gap"] = self.data["gap"], None
        if gap is None:
            return
        lost = max(0, rx_now - gap.pop("rx_at_last_write"))
        gap.update(end=time.time(), lost_packets_max=lost)
        self.data["gaps"] = (self.data["gaps"] + [gap])[-KEEP_GAPS:]
        self.data["gaps_total"] += 1
        self.data["lost_packets_total"] += lost
        log("writing again after %.1fs (%s): at most %d packets lost" % (gap["end"] - gap["start"], gap["reason"], lost))


class Capture:
    def __init__(self, vni, env, run_dir):
        self.vni = vni
        self.iface = "vxlan%s" % vni
        self.directory = env["MIRRORCAP_CAPTURE_DIR"]
        self.command = ["tcpdump", "-i", self.iface, "-Q", "in", "-n", "-U",
                        "-B", env["MIRRORCAP_BUFFER_KIB"], "-s", env["MIRRORCAP_SNAPLEN"],
                        "-G", env["MIRRORCAP_ROTATE_SECONDS"],
                        # strftime, in UTC (the unit sets TZ=UTC)
                        "-w", os.path.join(self.directory, host.pcap_pattern(env["MIRRORCAP_PCAP_PATTERN"], vni))]
        self.log_path = os.path.join(run_dir, "tcpdump.log")
        self.state = State(os.path.join(run_dir, "state.json"))
        self.proc = None
        self.stopping = False
        self.restarts = []

    # -- tcpdump ---------------------------------------------------------------
    def start(self):
        self.preflight()
        with open(self.log_path, "ab") as logf:
            start_offset = logf.tell()
            self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=logf)
        # A signal before tcpdump installs its handlers (health's SIGUSR1) would
        # kill it: wait for "listening on", which it prints after setting them up.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            with open(self.log_path, "rb") as f:
                f.seek(start_offset)
                if b"listening on" in f.read():
                    break
            time.sleep(0.05)
        log("tcpdump (pid %d) capturing %s into %s" % (self.proc.pid, self.iface, self.directory))

    def stop_tcpdump(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def preflight(self):
        if not os.path.isdir("/sys/class/net/" + self.iface):
            die("%s does not exist: check mirrorcap-decap.service" % self.iface)
        if not host.on_its_own_volume(self.directory):
            die("%s is not a mounted volume: check mirrorcap-storage.service "
                "(refusing to write pcaps to the root volume)" % self.directory)

    def tail_of_log(self):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - 400))
                return f.read().decode(errors="replace").strip().splitlines()[-1:]
        except OSError:
            return []

    # -- the watch ---------------------------------------------------------------
    def run(self):
        signal.signal(signal.SIGTERM, self.on_stop)
        signal.signal(signal.SIGINT, self.on_stop)
        self.start()
        rx = rx_packets(self.iface)
        self.state.close_gap(rx)
        self.state.writing(self.proc.pid)
        self.reset_watch(rx)
        while not self.stopping:
            time.sleep(TICK_SECONDS)
            if self.stopping:
                break
            code = self.proc.poll()
            if code is not None:
                self.restarts = [t for t in self.restarts if time.monotonic() - t < 60] + [time.monotonic()]
                how = "killed by signal %d" % -code if code < 0 else "exited with %d" % code
                self.resume("tcpdump %s: %s" % (how, " ".join(self.tail_of_log())))
                continue
            rx = rx_packets(self.iface)
            current = open_pcap(self.proc.pid, self.directory)
            if current is not None and current != self.last_write:
                self.last_write, self.rx_at_last_write, self.waiting_since = current, rx, None
            elif rx > self.rx_at_last_write:
                self.waiting_since = self.waiting_since or time.monotonic()
                if time.monotonic() - self.waiting_since >= STUCK_SECONDS:
                    self.resume("%s stopped growing while %s received %d packets (%d MiB free): disk full or I/O error"
                                % (current[0] if current else "the pcap", self.iface, rx - self.rx_at_last_write,
                                   free_bytes(self.directory) >> 20))
        self.stop_tcpdump()
        log("stopped")

    def reset_watch(self, rx):
        self.last_write, self.rx_at_last_write, self.waiting_since = None, rx, None

    def resume(self, reason):
        """A gap: record it, stop tcpdump, wait for room, start a new one (a new file)."""
        self.state.open_gap(reason, self.rx_at_last_write)
        self.stop_tcpdump()
        if len(self.restarts) > RESTARTS_PER_MINUTE:
            die("tcpdump failed %d times in a minute: giving up (systemd restarts the unit)" % len(self.restarts))
        while not (self.stopping or (host.on_its_own_volume(self.directory) and free_bytes(self.directory) >= RESUME_FREE_BYTES)):
            time.sleep(TICK_SECONDS)  # retention frees the volume
        if self.stopping:
            return
        self.start()
        rx = rx_packets(self.iface)
        self.state.close_gap(rx)
        self.state.writing(self.proc.pid)
        self.reset_watch(rx)

    def on_stop(self, signum, frame):
        self.stopping = True


def main(argv):
    if len(argv) != 2 or not re.fullmatch(r"[0-9]{1,8}", argv[1]):
        print("usage: mirrorcap-capture VNI (run by mirrorcap-capture@VNI.service)", file=sys.stderr)
        return 2
    run_dir = os.environ.get("RUNTIME_DIRECTORY")
    if not run_dir:
        die("RUNTIME_DIRECTORY is not set: start me with systemctl start mirrorcap-capture@%s" % argv[1])
    try:
        env = host.read_env()
        Capture(argv[1], env, run_dir).run()
    except (OSError, KeyError) as e:
        die("cannot capture: %s" % e)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
