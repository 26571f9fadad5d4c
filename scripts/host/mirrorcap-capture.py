#!/usr/bin/python3
"""mirrorcap-capture VNI: tcpdump on vxlan<VNI> into rotating pcaps, watched; every loss counted.

Run by mirrorcap-capture@<VNI>.service as the capture user with CAP_NET_RAW only.

tcpdump writes buffered (a write per 4 KiB, not per packet: -U costs about
three times the CPU). Every tick the watcher pushes what tcpdump holds to the
pcap with SIGUSR2, but only while tcpdump is stopped inside poll(), waiting for
packets: its handler calls fflush(), which corrupts the pcap if it lands inside
an fwrite(), and a tcpdump parked in poll() is in no fwrite().

Not writing: after one failed write (a full volume, an I/O error) tcpdump never
writes that pcap again, and goes on. A flush delivered while tcpdump waits in
poll() leaves its pcap ending on a whole record; when the interface received,
the pcap did not grow and still ends torn a tick after such a flush, its writes
fail (otherwise: no growth for 2 s while packets arrive). tcpdump is then
stopped, the pcap's torn last record cut off, retention asked for room, and a
new tcpdump started once the volume has room. A tcpdump that dies is started
again at once, after a back-off when it keeps dying young; nothing makes this
give up while the host runs.

Every gap goes to the loss record (state.json in the unit's StateDirectory, which
restarts, failures and reboots keep): from the last packet in the pcap to the
new tcpdump, and at most how many packets it lost (what the interface received
since that packet, from per-tick samples kept in the RuntimeDirectory). Kernel
drops of each tcpdump and truncated packets (an IP length beyond the frame, as
AWS cuts packets over the target's MTU) are counted there too.
Exit 1 when the volume is not mounted (systemd starts the unit again).

Every pcap tcpdump closes (it rotated, or stopped) gets its packet index beside it
(mirrorcap_index.py in a child: niced, without CAP_NET_RAW, one at a time); the
closed pcaps a previous run left without one get it when the watcher starts.
Python 3.9 stdlib only (Amazon Linux 2023's system Python).
"""
import ctypes
import errno
import fnmatch
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time

# The shared module: /usr/local/lib/mirrorcap, from /usr/local/libexec/mirrorcap.
HOST_LIB = os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "lib", "mirrorcap")
sys.path.insert(0, HOST_LIB)
import mirrorcap_host as host  # noqa: E402

TICK = 0.25
FLUSH_SECONDS = 2.0  # flush while packets arrived this recently: the kernel hands a block over within 1 s
STUCK_SECONDS = 2.0  # packets received, none reaching the pcap (and no flush told sooner): not writing
RESUME_FREE_BYTES = 64 << 20  # room needed before a new pcap is started after a full volume
RETENTION_EVERY = 5.0  # how often retention is asked for room while the volume is full
YOUNG_SECONDS = 10.0  # a tcpdump that dies younger than this starts again after a back-off
BACKOFF = (0, 1, 2, 4, 8, 16, 30)
SAMPLES_SECONDS = 120
COARSE_SECONDS = 10  # samples older than SAMPLES_SECONDS: one per this many seconds, back two rotations
KEEP_GAPS = 20
KEEP_RESTARTS = 50
POLL_SYSCALLS = {"x86_64": (7, 271), "aarch64": (73,)}  # poll, ppoll: where libpcap waits
COUNTERS = re.compile(r"(\d+) packets? captured[,\s]+(\d+) packets? received by filter[,\s]+(\d+) packets? dropped by kernel")
TRUNCATED = "(ip and ip[2:2] + 14 > len) or (ip6 and ip6[4:2] + 54 > len)"


def log(message):
    print("mirrorcap-capture: " + message, file=sys.stderr, flush=True)


def die(message):
    log(message)
    sys.exit(1)


def free_bytes(directory):
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def volume_error(directory):
    """The error reading the mounted volume gives (EIO: its file system shut down, the volume is
    impaired), None when it reads (or is simply not there: not this function's business)."""
    try:
        os.stat(directory)
        return None
    except OSError as e:
        return None if e.errno in (errno.ENOENT, errno.ENOTDIR) else e


def iface_counter(iface, name):
    try:
        with open("/sys/class/net/%s/%s" % (iface, name)) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


class Samples:
    """(time, packets received by the interface) every tick: how many arrived since any
    recent moment. In the RuntimeDirectory, for the next run after a crash; the
    tick's save is also the heartbeat health reads."""

    def __init__(self, path, iface, keep=SAMPLES_SECONDS):
        self.path, self.iface, self.keep = path, iface, max(keep, SAMPLES_SECONDS)
        old = host.read_json(path, {})
        self.points = [tuple(p) for p in old.get("points", [])] if old.get("ifindex") == iface_counter(iface, "ifindex") else []

    def add(self, t, rx):
        # Fine for the last SAMPLES_SECONDS, coarse back to `keep`: a gap can start where the last
        # durable packet was, long before it was seen (a file system that shut down loses its pcap).
        fine, kept = t - SAMPLES_SECONDS, []
        for point in self.points:
            if point[0] >= t - self.keep and (point[0] >= fine or not kept or point[0] - kept[-1][0] >= COARSE_SECONDS):
                kept.append(point)
        self.points = kept + [(t, rx)]
        host.write_json(self.path, dict(ifindex=iface_counter(self.iface, "ifindex"), heartbeat=t, points=self.points))

    def before(self, t):
        """(time, count) of the last sample at or before t, None when none is that old."""
        found = None
        for point in self.points:
            if point[0] > t:
                break
            found = point
        return found

    def quiet_until(self, t, rx):
        """The last sample time from t on at which the count was still rx: nothing arrived before it."""
        last = t
        for point in self.points:
            if point[0] >= t and point[1] <= rx:
                last = point[0]
        return last


class Record:
    """The loss record: state.json in the StateDirectory (restarts, failures and reboots keep it)."""

    def __init__(self, path):
        self.path = path
        self.data = host.read_json(path, {})
        for key, value in (("gaps", []), ("gaps_total", 0), ("lost_packets_total", 0), ("lost_unknown_gaps", 0),
                           ("kernel_drops_total", 0), ("truncated_total", 0), ("restarts", []), ("gap", None)):
            self.data.setdefault(key, value)

    def save(self):
        host.write_json(self.path, self.data)

    def open_gap(self, reason, start, rx_start, ifindex):
        if self.data["gap"] is None:
            self.data["gap"] = dict(start=start, reason=reason, rx_start=rx_start, ifindex=ifindex)
            log("NOT WRITING since %s: %s" % (time.strftime("%H:%M:%S", time.gmtime(start)), reason))
        self.data.update(writing=False, pid=None)
        self.save()

    def close_gap(self, end, rx_end, ifindex):
        gap, self.data["gap"] = self.data["gap"], None
        if gap is not None:
            rx_start = gap.pop("rx_start")
            known = rx_start is not None and gap.pop("ifindex") == ifindex and rx_end >= rx_start
            lost = rx_end - rx_start if known else None
            gap.update(end=end, lost_packets_max=lost)
            self.data["gaps"] = (self.data["gaps"] + [gap])[-KEEP_GAPS:]
            self.data["gaps_total"] += 1
            if known:
                self.data["lost_packets_total"] += lost
            else:
                self.data["lost_unknown_gaps"] += 1
            log("writing again after %.1fs (%s): %s packets lost" % (end - gap["start"], gap["reason"],
                                                                    "at most %d" % lost if known else "an unknown number of"))
        self.save()

    def restarted(self, reason):
        self.data["restarts"] = (self.data["restarts"] + [[time.time(), reason[:200]]])[-KEEP_RESTARTS:]


class Tcpdump:
    def __init__(self, command, log_path):
        self.command, self.log_path = command, log_path
        with open(log_path, "ab") as logf:
            self.log_offset = logf.tell()
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=logf,
                                         preexec_fn=self.die_with_parent)
        self.pid, self.started, self.switches_at_flush = self.proc.pid, time.monotonic(), -1
        # A signal before tcpdump installs its handlers (health's SIGUSR1, the flush's
        # SIGUSR2) would kill it: wait for "listening on", printed after it set them up.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None and not self.listening():
            time.sleep(0.02)

    def listening(self):
        return b"listening on" in self.log()

    @staticmethod
    def die_with_parent():  # PR_SET_PDEATHSIG: a killed watcher takes its tcpdump with it (flushed)
        ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                return f.read()
        except OSError:
            return b""

    def counters(self):
        """(captured, received, dropped) as tcpdump last printed them, None before it did."""
        found = COUNTERS.findall(self.log().decode(errors="replace"))
        return tuple(int(x) for x in found[-1]) if found else None

    def open_pcap(self, directory):
        """(path, size) of the pcap tcpdump has open, or None."""
        fd_dir = "/proc/%d/fd" % self.pid
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

    def state(self):
        """tcpdump's process state (R, S, D, T, t...), None when it is gone."""
        try:
            with open("/proc/%d/stat" % self.pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return None

    def flush(self):
        """SIGUSR2 (flush) while tcpdump is stopped in poll(): never inside an fwrite(). A tcpdump
        someone else stopped (SIGSTOP, a debugger) is left as it is: continuing it is not ours to do."""
        if self.state() in ("T", "t"):
            return False
        try:
            os.kill(self.pid, signal.SIGSTOP)
        except OSError:
            return False
        try:
            for _ in range(200):
                with open("/proc/%d/stat" % self.pid) as f:
                    if f.read().rsplit(")", 1)[1].split()[0] in ("T", "t"):
                        break
                time.sleep(0.0005)
            else:
                return False
            with open("/proc/%d/syscall" % self.pid) as f:
                nr = f.read().split()[0]
            if nr.isdigit() and int(nr) in POLL_SYSCALLS.get(os.uname().machine, ()):
                os.kill(self.pid, signal.SIGUSR2)
                return True
            return False
        except OSError:
            return False
        finally:
            try:
                os.kill(self.pid, signal.SIGCONT)
                self.switches_at_flush = self.switches()
            except OSError:
                pass

    def switches(self):
        """Times tcpdump blocked (it blocks in poll() again once its flush handler ran)."""
        try:
            with open("/proc/%d/status" % self.pid) as f:
                return int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", f.read(), re.M).group(1))
        except (OSError, AttributeError):
            return -1

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            if self.state() in ("T", "t"):  # held stopped: it takes the SIGTERM once continued
                try:
                    os.kill(self.pid, signal.SIGCONT)
                except OSError:
                    pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self):
        return " ".join(self.log().decode(errors="replace").strip().splitlines()[-1:])


class TruncationCounter:
    """Packets whose IP length runs past the frame (cut short before they reached the host),
    counted by the kernel on a packet socket with a filter that keeps only those."""

    def __init__(self, iface):
        lines = subprocess.run(["tcpdump", "-ddd", "-y", "EN10MB", TRUNCATED], capture_output=True, text=True,
                               check=True).stdout.split("\n")
        program = b"".join(struct.pack("HBBI", *map(int, line.split())) for line in lines[1:int(lines[0]) + 1])
        self.program = ctypes.create_string_buffer(program)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: nothing until bound
        self.sock.setsockopt(socket.SOL_SOCKET, 26, struct.pack("HL", int(lines[0]), ctypes.addressof(self.program)))
        self.sock.bind((iface, 3))  # ETH_P_ALL on this interface only
        self.sock.setblocking(False)

    def count(self):
        """Matching packets since the last call (PACKET_STATISTICS resets on read)."""
        for _ in range(10000):
            try:
                self.sock.recv(1)
            except OSError:
                break
        packets, _drops = struct.unpack("II", self.sock.getsockopt(263, 6, 8))  # SOL_PACKET, PACKET_STATISTICS
        return packets


class Indexer:
    """The packet index of each closed pcap, written by one child at a time: a burst of
    rotations never takes more than one core from tcpdump. A pcap it could not index
    gets NAME.idx-failed (mirrorcap_index.py writes it), which health reports."""

    SUFFIXES = (host.INDEX_SUFFIX, host.INDEX_FAILED_SUFFIX)
    # numpy's BLAS would start a thread per CPU at import: the indexer needs none (one core at most)
    ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")

    RETRY = (30, 60, 120, 300, 600)  # seconds before indexing again a pcap whose index could not be written

    def __init__(self, vni):
        self.vni = vni  # what the index says its packets came in on (not read back from the name)
        self.queue, self.proc, self.current, self.retries = [], None, None, {}  # retries: path -> (due, attempts)

    def add(self, path, again=False):
        """Index `path` when it has none; `again`: even then (it was just closed: an index written
        while tcpdump still wrote it, by `mirrorcap find --dir` on the host, is of part of it)."""
        if path and path not in self.queue and (again or not any(os.path.exists(path + s) for s in self.SUFFIXES)):
            self.queue.append(path)

    def tick(self):
        if self.proc is not None and self.proc.poll() is None:
            return
        if self.proc is not None:
            self.finished(self.current, self.proc.returncode)
        self.proc = self.current = None
        now = time.monotonic()
        for path, (due, _) in list(self.retries.items()):
            if due <= now:
                self.add(path, again=True)
        while self.queue:
            path = self.queue.pop(0)
            if os.path.exists(path):
                self.current = path
                try:
                    self.proc = subprocess.Popen([sys.executable, os.path.join(HOST_LIB, "mirrorcap_index.py"), "--vni", str(self.vni), path],
                                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=self.weaken,
                                                 env=self.ENV)
                except OSError as e:
                    log("cannot index %s: %s" % (os.path.basename(path), e))
                    continue
                return

    def finished(self, path, code):
        """A pcap the child could not index for want of room (a full volume: its index, or even its
        failure marker, could not be written) is indexed again later, with a back-off; one it could
        not index for what it holds is not (the marker says why)."""
        try:
            with open(path + self.SUFFIXES[1]) as f:
                why = f.read()
        except OSError:
            why = None if os.path.exists(path + self.SUFFIXES[0]) else "no index and no marker"
        if code == 0 or why is None or not ("No space left" in why or "Disk quota" in why or why == "no index and no marker"):
            self.retries.pop(path, None)
            return
        if not os.path.exists(path):
            self.retries.pop(path, None)
            return
        attempts = self.retries.get(path, (0, 0))[1]
        self.retries[path] = (time.monotonic() + self.RETRY[min(attempts, len(self.RETRY) - 1)], attempts + 1)
        log("%s: not indexed (%s): trying again in %ds" % (os.path.basename(path), why.strip()[:200],
                                                            self.RETRY[min(attempts, len(self.RETRY) - 1)]))

    @staticmethod
    def weaken():
        """The child parses what the network sent: lower priority than tcpdump, no capability
        (PR_CAP_AMBIENT_CLEAR_ALL: a user's exec keeps none), gone with the watcher."""
        os.nice(10)
        libc = ctypes.CDLL(None)
        libc.prctl(47, 4, 0, 0, 0)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


class Capture:
    def __init__(self, vni, run_dir):
        self.vni, self.iface, self.run_dir = vni, host.vxlan_iface(host.read_env(), vni), run_dir
        self.log_path = os.path.join(run_dir, "tcpdump.log")
        self.flag = os.path.join(run_dir, "not-writing")  # retention may then take this VNI's newest pcap
        # mirrorcap-recover.path starts the root repair when this directory holds a file
        self.recover_flag = os.path.join(os.path.dirname(run_dir), "recover", vni)
        self.failed_volume = None
        self.record = Record(host.capture_state_file(vni))
        self.tcpdump = self.truncation = self.samples = self.watched = None
        self.indexer = Indexer(vni)
        self.stopping = self.reload_requested = False
        self.need_room = False
        self.young_deaths = 0
        self.next_start = self.last_retention = 0.0
        self.load_settings()

    def load_settings(self):
        env = host.read_env()
        self.directory = env["MIRRORCAP_CAPTURE_DIR"]
        self.rotate_seconds = int(env["MIRRORCAP_ROTATE_SECONDS"])
        self.retention = env["MIRRORCAP_RETENTION_COMMAND"].split()
        self.name_pattern = host.pcap_pattern(env["MIRRORCAP_PCAP_PATTERN"], self.vni)
        self.name_glob = host.pcap_glob(env["MIRRORCAP_PCAP_PATTERN"], self.vni)
        self.command = ["tcpdump", "-i", self.iface, "-Q", "in", "-n",
                        "-B", env["MIRRORCAP_BUFFER_KIB"], "-s", env["MIRRORCAP_SNAPLEN"],
                        "-G", env["MIRRORCAP_ROTATE_SECONDS"],
                        # strftime, in UTC (the unit sets TZ=UTC)
                        "-w", os.path.join(self.directory, host.pcap_pattern(env["MIRRORCAP_PCAP_PATTERN"], self.vni))]

    # -- the loss record -------------------------------------------------------------
    def last_packet(self, path):
        """Time of the last whole packet in `path` (or, if none, in the VNI's previous pcap)."""
        try:
            names = self.pcaps()
        except OSError:
            return None  # the volume cannot be read: the gap is moved back when it can (start)
        if path:
            names = [n for n in names if n <= os.path.basename(path)]
        for name in reversed(names[-2:]):
            try:
                ts = host.pcap_end(os.path.join(self.directory, name))[1]
            except OSError:
                continue
            if ts is not None:
                return ts
        return None

    def open_gap(self, reason, path):
        """From the last packet written: the first lost one arrived after it, and after the
        interface's count last stood where it stood then."""
        if self.record.data["gap"] is not None:
            return
        now, last = time.time(), self.last_packet(path)
        point = self.samples.before(last if last is not None else now)
        start = self.samples.quiet_until(point[0], point[1]) if point else (last or now)
        self.record.open_gap(reason, max(start, last or 0), point[1] if point else None, iface_counter(self.iface, "ifindex"))

    def back_to_durable(self):
        """An open gap starts where the last packet still on the volume ends: packets a tcpdump wrote
        that did not last (a file system that shut down drops what it had not written out, and the
        pcap with it) were lost too."""
        gap, last = self.record.data["gap"], self.last_packet(None)
        if last is None:  # not one packet left: the last tcpdump's pcaps are gone from its start on
            last = self.record.data.get("since")
        if gap is None or last is None or last >= gap["start"] or gap.get("rx_start") is None:
            return
        point = self.samples.before(last)
        # No sample that old: the gap lost an unknown number (counted as such, never as too few).
        start, rx_start = (max(self.samples.quiet_until(point[0], point[1]), last), point[1]) if point else (last, None)
        if (start, rx_start) != (gap["start"], gap["rx_start"]):
            gap.update(start=start, rx_start=rx_start)
            log("the gap starts at %s: the last packet still on the volume" % time.strftime("%H:%M:%S", time.gmtime(start)))
            self.record.save()

    def volume_failed(self):
        """True while the volume does not read (EIO: its file system shut down). tcpdump is stopped,
        the gap opened, and mirrorcap-recover asked to remount it (it stops this unit first); the
        watcher waits for that, beating, instead of dying into a restart loop."""
        error = volume_error(self.directory)
        if error is None:
            return False
        if self.failed_volume is None:
            self.failed_volume = error
            reason = ("the pcap volume's file system failed (%s: shut down, or the volume is impaired); "
                      "mirrorcap-recover remounts it" % (error.strerror or error))
            log("%s: %s" % (self.directory, reason))
            if self.tcpdump is not None:
                tcpdump, self.tcpdump = self.tcpdump, None
                tcpdump.stop()
                self.account(tcpdump)
            self.open_gap(reason, (self.watched or (None,))[0])
            self.record.restarted(reason)
            self.record.save()
            try:
                with open(self.recover_flag, "w") as f:
                    f.write("%s\n" % error)
            except OSError as e:
                log("cannot ask mirrorcap-recover for the remount (%s): systemctl start mirrorcap-recover.service" % e)
        return True

    def account(self, tcpdump):
        """A tcpdump that is gone: its kernel drops, as it last printed them."""
        counters = tcpdump.counters()
        if counters:
            self.record.data["kernel_drops_total"] += counters[2]

    def set_flag(self, on):
        if on:
            with open(self.flag, "w") as f:
                f.write("%d\n" % RESUME_FREE_BYTES)
        elif os.path.exists(self.flag):
            os.unlink(self.flag)

    # -- tcpdump -----------------------------------------------------------------------
    def start(self):
        if not os.path.isdir("/sys/class/net/" + self.iface):
            if self.record.data.get("waiting") != self.iface:
                log("%s does not exist yet: waiting for it (mirrorcap-decap creates it)" % self.iface)
                self.record.data["waiting"] = self.iface
                self.record.save()
            return
        if not host.on_its_own_volume(self.directory):
            die("%s is not a mounted volume: waiting for mirrorcap-storage (refusing to write pcaps to the root "
                "volume); systemd starts this unit again" % self.directory)
        self.record.data["waiting"] = None
        self.back_to_durable()
        ifindex = iface_counter(self.iface, "ifindex")
        if self.truncation is None or self.truncation[0] != ifindex:
            try:
                self.truncation = (ifindex, TruncationCounter(self.iface))
            except (OSError, subprocess.CalledProcessError) as e:
                self.truncation = None
                log("truncated packets are not counted: %s" % e)
        # tcpdump names its file by the second it opens it, and opens it for writing: started
        # twice in one second (a kill, a restart) it would empty the file it wrote a moment ago.
        while os.path.exists(os.path.join(self.directory, time.strftime(self.name_pattern, time.gmtime()))):
            time.sleep(1.02 - time.time() % 1)
        self.tcpdump = Tcpdump(self.command, self.log_path)
        if not self.tcpdump.listening():
            return  # the next tick sees it die
        rx = iface_counter(self.iface, "statistics/rx_packets")
        self.record.close_gap(time.time(), rx, ifindex)
        self.record.data.update(writing=True, pid=self.tcpdump.pid, since=time.time())
        self.record.save()
        self.set_flag(False)
        self.watched, self.rx_at_growth, self.pending = None, rx, None
        self.last_rx, self.rx_changed, self.flushed = rx, 0.0, False
        log("tcpdump (pid %d) capturing %s into %s" % (self.tcpdump.pid, self.iface, self.directory))

    def lose(self, reason, restart_in=0.0, room=False):
        """tcpdump is gone or no longer writes: stop it, record the gap, repair its pcap."""
        tcpdump, self.tcpdump = self.tcpdump, None
        path = (self.watched or (None,))[0]
        tcpdump.stop()
        self.account(tcpdump)
        self.open_gap(reason, path)
        self.record.restarted(reason)
        self.record.save()
        try:
            self.repair(path)
            self.need_room = room or free_bytes(self.directory) < RESUME_FREE_BYTES
        except OSError as e:  # the volume failed under it: the next tick's volume_failed() says so
            log("cannot repair %s: %s" % (path, e))
            self.need_room = room
        if path and os.path.exists(path):
            self.indexer.add(path, again=True)
        self.set_flag(self.need_room)
        self.next_start = time.monotonic() + restart_in

    def room(self):
        """True once the volume has room again; asks retention for it meanwhile."""
        if not host.on_its_own_volume(self.directory):
            die("%s is no longer a mounted volume" % self.directory)
        if free_bytes(self.directory) >= RESUME_FREE_BYTES:
            self.need_room = False
            return True
        if time.monotonic() - self.last_retention >= RETENTION_EVERY:
            self.last_retention = time.monotonic()
            try:
                subprocess.run(self.retention, stdin=subprocess.DEVNULL, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as e:
                log("retention failed: %s" % e)
        return False

    def beat(self):
        """Every tick, whatever the state: the interface's count (the heartbeat health reads)
        and the truncated packets."""
        rx = iface_counter(self.iface, "statistics/rx_packets")
        if rx is not None:
            self.samples.add(time.time(), rx)
        if self.truncation:
            n = self.truncation[1].count()
            if n:
                self.record.data["truncated_total"] += n
                self.record.save()
        return rx

    def why_stuck(self, free):
        """Why the pcap stopped growing, from what can be seen: the room left, tcpdump's state."""
        state = self.tcpdump.state()
        if free < RESUME_FREE_BYTES:
            return "volume full"
        if state in ("T", "t"):
            return ("tcpdump (pid %d) is held stopped (state %s: a SIGSTOP or a debugger not from mirrorcap); "
                    "it is replaced" % (self.tcpdump.pid, state))
        if state == "D":
            return ("tcpdump (pid %d) hangs in the kernel (state D: a write the volume does not complete); it is replaced"
                    % self.tcpdump.pid)
        return "tcpdump (pid %d, state %s) writes nothing with room left: a write error (I/O) or a hung tcpdump; " \
               "it is replaced" % (self.tcpdump.pid, state)

    def tick(self):
        if self.volume_failed():
            return
        now, rx = time.time(), self.beat()
        if rx is None:  # the interface is gone (decap recreated or removed it)
            return self.lose("%s disappeared" % self.iface)
        code = self.tcpdump.proc.poll()
        if code is not None:
            how = "killed by signal %d" % -code if code < 0 else "exited with %d" % code
            young = time.monotonic() - self.tcpdump.started < YOUNG_SECONDS
            self.young_deaths = self.young_deaths + 1 if young else 0
            return self.lose("tcpdump %s: %s" % (how, self.tcpdump.tail()),
                             BACKOFF[min(self.young_deaths, len(BACKOFF) - 1)])
        current = self.tcpdump.open_pcap(self.directory)
        if current is not None and current != self.watched:
            if self.watched is not None and self.watched[0] != current[0]:
                self.indexer.add(self.watched[0], again=True)  # rotated: tcpdump closed it
            self.watched, self.rx_at_growth, self.pending = current, rx, None
        elif rx > self.rx_at_growth:
            self.pending = self.pending or now
            # Torn after a flush that ran (tcpdump blocked again since): the flush could not write.
            torn = (self.flushed and current is not None and self.tcpdump.switches() > self.tcpdump.switches_at_flush
                    and host.pcap_end(current[0])[0] < current[1])
            if torn or now - self.pending >= STUCK_SECONDS:
                free = free_bytes(self.directory)
                return self.lose("%s stopped growing while %s received %d packets (%d MiB free): %s"
                                 % (os.path.basename(current[0]) if current else "the pcap", self.iface,
                                    rx - self.rx_at_growth, free >> 20, self.why_stuck(free)), room=free < RESUME_FREE_BYTES)
        if rx != self.last_rx:
            self.last_rx, self.rx_changed = rx, now
        # What tcpdump holds of recent packets, onto the volume (checked at the next tick).
        self.flushed = now - self.rx_changed <= FLUSH_SECONDS and self.tcpdump.flush()

    # -- the watch ---------------------------------------------------------------------
    def take_over(self, rebooted):
        """What the previous run left: a gap it opened, or it stopped (or died, or the host went down)
        writing. `rebooted`: its samples are gone, /run is new (nothing else removes them)."""
        previous = self.record.data
        if previous.get("gap") is None and previous.get("writing") is not None:
            if rebooted:
                reason = "the host restarted"
            elif previous.get("writing"):
                reason = "the capture unit's watcher died (killed, or crashed: journalctl -u mirrorcap-capture@%s)" % self.vni
                self.record.restarted(reason)
            else:
                reason = "capture was stopped (systemctl stop or restart)"
            self.open_gap(reason, None)
        self.repair(None)
        for name in os.listdir(self.directory):
            if fnmatch.fnmatch(name, self.name_glob + "*.tmp"):  # an index a kill cut short
                os.unlink(os.path.join(self.directory, name))
        for name in reversed(self.pcaps()):  # newest first: the likeliest to be asked for
            self.indexer.add(os.path.join(self.directory, name))

    def pcaps(self):
        """This VNI's pcaps, oldest first (their names carry their UTC start time)."""
        return sorted(n for n in os.listdir(self.directory) if fnmatch.fnmatch(n, self.name_glob))

    def repair(self, path):
        """Cut the torn tail of the pcap tcpdump wrote (and of the VNI's newest: it may have rotated)."""
        newest = self.pcaps()[-1:]
        for p in {path} | {os.path.join(self.directory, n) for n in newest}:
            if p and os.path.exists(p):
                cut = host.repair(p)
                if cut:
                    log("%s: cut its torn last record (%d bytes)" % (os.path.basename(p), cut))

    def run(self):
        signal.signal(signal.SIGTERM, self.on_stop)
        signal.signal(signal.SIGINT, self.on_stop)
        signal.signal(signal.SIGHUP, self.on_reload)
        path = os.path.join(self.run_dir, "rx.json")
        rebooted = not os.path.exists(path)
        for name in os.listdir(self.run_dir):
            if name.endswith(".tmp"):  # a write a kill cut short
                os.unlink(os.path.join(self.run_dir, name))
        self.samples = Samples(path, self.iface, 2 * self.rotate_seconds + SAMPLES_SECONDS)
        if volume_error(self.directory) is None:  # else: the loop waits for mirrorcap-recover
            if not host.on_its_own_volume(self.directory):
                die("%s is not a mounted volume: waiting for mirrorcap-storage (refusing to write pcaps to the root "
                    "volume); systemd starts this unit again" % self.directory)
            self.take_over(rebooted)
        while not self.stopping:
            if self.reload_requested:
                self.reload()
            if self.volume_failed():
                self.beat()
                time.sleep(TICK)
                continue
            self.indexer.tick()
            if self.tcpdump is None:
                self.beat()
                if self.need_room and not self.room() or time.monotonic() < self.next_start:
                    time.sleep(TICK)
                    continue
                self.start()
                if self.tcpdump is None:
                    time.sleep(1)  # waiting for the interface
                continue
            time.sleep(TICK)
            if not self.stopping:
                self.tick()
        self.stop()

    def reload(self):
        """SIGHUP (systemctl reload): the env file again; tcpdump restarts only if its command changed."""
        self.reload_requested = False
        old = self.command
        self.load_settings()
        if self.command == old:
            log("reloaded: settings unchanged")
        elif self.tcpdump is not None:
            self.lose("settings changed: %s" % " ".join(self.command))

    def stop(self):
        self.indexer.stop()
        if self.tcpdump is not None:
            tcpdump, self.tcpdump = self.tcpdump, None
            tcpdump.stop()
            self.account(tcpdump)
        self.record.data.update(writing=False, pid=None, stopped=time.time())
        self.record.save()
        log("stopped")

    def on_stop(self, signum, frame):
        self.stopping = True

    def on_reload(self, signum, frame):
        self.reload_requested = True


def main(argv):
    if len(argv) != 2 or not (re.fullmatch(r"[0-9]{1,8}", argv[1]) and host.VNI_MIN <= int(argv[1]) <= host.VNI_MAX):
        print("usage: mirrorcap-capture VNI (run by mirrorcap-capture@VNI.service)", file=sys.stderr)
        return 2
    run_dir = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]  # the unit's first: capture-VNI
    if not run_dir or not os.environ.get("STATE_DIRECTORY"):
        die("RUNTIME_DIRECTORY/STATE_DIRECTORY are not set: start me with systemctl start mirrorcap-capture@%s" % argv[1])
    try:
        Capture(argv[1], run_dir).run()
    except (OSError, KeyError) as e:
        die("cannot capture: %s" % e)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
