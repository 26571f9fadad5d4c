#!/bin/bash
# mirrorcap bake: install the capture tooling on Amazon Linux 2023 (for Packer,
# EC2 Image Builder, or the first boot of an unbaked host). No instance-specific
# values: those come at boot in /etc/mirrorcap/mirrorcap.env.
# Rendered by `mirrorcap render` from scripts/host/bake.sh.j2. Safe to re-run.
set -euo pipefail
umask 022

# termshark is not packaged for AL2023: built from source with the distro's Go at
# a pinned version. Go verifies every module against go.sum and the public
# checksum database (sum.golang.org), so the pinned version is what gets built.
# A convenience: where it cannot be built, the bake goes on without it and says so.
TERMSHARK_VERSION=v2.4.0
termshark=""

if command -v dnf >/dev/null 2>&1; then
  dnf install -y -q tcpdump wireshark-cli xfsprogs iproute curl-minimal python3
  if ! command -v termshark >/dev/null 2>&1; then
    dnf install -y -q golang
    build=$(mktemp -d)
    if ! GOPATH="$build/go" GOCACHE="$build/cache" GOBIN=/usr/local/bin GOFLAGS=-trimpath \
      go install "github.com/gcla/termshark/v2/cmd/termshark@$TERMSHARK_VERSION"; then
      termshark="; termshark skipped (see above)"
      echo "mirrorcap bake: termshark $TERMSHARK_VERSION skipped: its build failed (no route to the Go module proxy?); tshark is installed to read pcaps" >&2
    fi
    rm -rf "$build"
    dnf remove -y -q golang
  fi
fi

# Capture identity: tcpdump drops to mirrorcap; people who may read pcaps
# join pcap (usermod -aG pcap <user>).
getent group pcap >/dev/null || groupadd --system pcap
id -u mirrorcap >/dev/null 2>&1 || useradd --system --gid pcap --no-create-home --home-dir /nonexistent --shell /sbin/nologin mirrorcap

install -d -m 0755 /etc/mirrorcap /etc/systemd/system /usr/local/bin /usr/local/lib/mirrorcap /usr/local/libexec/mirrorcap /usr/local/sbin

cat > '/usr/local/lib/mirrorcap/mirrorcap_host.py.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_LIB_MIRRORCAP_MIRRORCAP_HOST_PY'
"""What the host's Python scripts share: the env file and the pcap names.

Installed as /usr/local/lib/mirrorcap/mirrorcap_host.py; the host's Python
scripts import it from there. Python 3.9 stdlib only.
"""
import datetime as dt
import os
import re

ENV_FILE = "/etc/mirrorcap/mirrorcap.env"


def read_env(path=ENV_FILE):
    """The env file as a dict (KEY=value lines, quotes dropped; not run by a shell)."""
    values = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                values[key] = value.strip().strip('"')
    return values


# MIRRORCAP_PCAP_PATTERN is tcpdump -G's file name (strftime, UTC) with {vni}:
# everything else about pcap names is derived from it (retention does the same in shell).
def pcap_pattern(pattern, vni):
    """The -w pattern of one VNI's capture."""
    return pattern.replace("{vni}", str(vni))


def pcap_glob(pattern, vni="*"):
    """The names of one VNI's pcaps (of every VNI's by default) as a glob."""
    return re.sub("%.", "*", pcap_pattern(pattern, vni))


def pcap_start(pattern, name):
    """(VNI, start time in UTC) of a pcap named by `pattern`, None for any other name."""
    parts = [r"(\d+)" if p == "{vni}" else ".+" if p.startswith("%") else re.escape(p)
             for p in re.split(r"(\{vni\}|%.)", pattern)]
    m = re.fullmatch("".join(parts), name)
    if not m:
        return None
    try:
        start = dt.datetime.strptime(name, pcap_pattern(pattern, m.group(1)))
    except ValueError:
        return None
    return int(m.group(1)), start.replace(tzinfo=dt.timezone.utc)


def on_its_own_volume(directory):
    """True when `directory` is the root of a mounted file system.

    Compared by device number with its parent: in a unit ReadWritePaths=
    bind-mounts the directory, which makes mountpoint(1) and mountinfo say
    "mounted" even when the volume is not; a bind of a directory of the root
    volume still carries the root volume's device number.
    """
    try:
        return os.stat(directory).st_dev != os.stat(os.path.join(directory, "..")).st_dev
    except OSError:
        return False
MIRRORCAP_USR_LOCAL_LIB_MIRRORCAP_MIRRORCAP_HOST_PY
chmod 0644 '/usr/local/lib/mirrorcap/mirrorcap_host.py.mirrorcap-new'
mv -f '/usr/local/lib/mirrorcap/mirrorcap_host.py.mirrorcap-new' '/usr/local/lib/mirrorcap/mirrorcap_host.py'

cat > '/usr/local/libexec/mirrorcap/storage.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_STORAGE'
#!/bin/bash
# mirrorcap-storage: mount the pcap EBS volume at the capture directory, on every boot.
# Finds the device from the volume ID (the NVMe by-id link EC2 gives on Nitro),
# creates xfs ONLY on a device with no file system and no partition table, and
# mounts it in the host's mount namespace (the unit has no namespacing options).
# No fstab line: this enabled unit is the one place the volume is mounted, the
# same way on the first boot and every later one, and a missing volume never
# stops boot (the unit fails, capture does not start, mirrorcap-health says why).
# Safe to run again and again: a volume that holds pcaps is never formatted.
set -euo pipefail

ENV_FILE=/etc/mirrorcap/mirrorcap.env
# shellcheck source=/dev/null
. "$ENV_FILE"
VOLUME_ID=${MIRRORCAP_VOLUME_ID:?MIRRORCAP_VOLUME_ID missing from $ENV_FILE}
DIR=${MIRRORCAP_CAPTURE_DIR:?MIRRORCAP_CAPTURE_DIR missing from $ENV_FILE}
# Terraform attaches the volume after the instance starts: wait for it, bounded.
WAIT_SECONDS=300
BY_ID_DIR=/dev/disk/by-id
# Xen (pre-Nitro) types have no NVMe serial: the attachment's device name, as Xen names it.
XEN_DEVICE=/dev/xvdf
CAPTURE_USER=${MIRRORCAP_CAPTURE_USER:?MIRRORCAP_CAPTURE_USER missing from $ENV_FILE}
CAPTURE_GROUP=${MIRRORCAP_CAPTURE_GROUP:?MIRRORCAP_CAPTURE_GROUP missing from $ENV_FILE}

die() { echo "mirrorcap-storage: $*" >&2; exit 1; }

[[ $VOLUME_ID =~ ^vol-[0-9a-f]{8}([0-9a-f]{9})?$ ]] || die "MIRRORCAP_VOLUME_ID=$VOLUME_ID in $ENV_FILE is not an EBS volume ID (vol-...): fix the user data"
# validate refuses anything else; checked again because this script runs as root.
[[ $DIR =~ ^(/[A-Za-z0-9._-]+)+$ && ! $DIR =~ (^|/)\.\.?(/|$) ]] || die "MIRRORCAP_CAPTURE_DIR=$DIR in $ENV_FILE is not a normalized absolute path: fix host.capture_dir"

# NVMe serials drop the dash: vol-0abc -> nvme-Amazon_Elastic_Block_Store_vol0abc
nvme_link="$BY_ID_DIR/nvme-Amazon_Elastic_Block_Store_${VOLUME_ID/-/}"
device=""
for ((waited = 0; waited <= WAIT_SECONDS; waited++)); do
  if [ -e "$nvme_link" ]; then device=$(readlink -f "$nvme_link"); break; fi
  if [ -b "$XEN_DEVICE" ] && [ ! -e /sys/class/nvme ]; then device=$XEN_DEVICE; break; fi
  sleep 1
done
[ -n "$device" ] || die "volume $VOLUME_ID did not appear as $nvme_link within ${WAIT_SECONDS}s: attach it to this instance (the stack's pcap_volume attachment), then: systemctl restart mirrorcap-storage"
[ -b "$device" ] || die "$device (volume $VOLUME_ID) is not a block device"

# -p probes the device itself, not the blkid cache.
fstype=$(blkid -p -o value -s TYPE "$device" || true)
pttype=$(blkid -p -o value -s PTTYPE "$device" || true)
if [ -z "$fstype" ]; then
  [ -z "$pttype" ] || die "$device (volume $VOLUME_ID) has a $pttype partition table and no file system: refusing to format it; wipe it deliberately first (wipefs -a $device)"
  echo "mirrorcap-storage: $device (volume $VOLUME_ID) is blank: creating xfs"
  # No -f: mkfs.xfs itself refuses to overwrite an existing file system.
  mkfs.xfs -q -L mirrorcap "$device"  # xfs labels: 12 characters at most
  fstype=xfs
elif [ "$fstype" != xfs ]; then
  die "$device (volume $VOLUME_ID) holds a $fstype file system, not xfs: refusing to touch it; attach a blank volume or wipe this one deliberately"
fi
uuid=$(blkid -p -o value -s UUID "$device")
[ -n "$uuid" ] || die "could not read the file system UUID of $device"

if ! mountpoint -q "$DIR" && [ -d "$DIR" ] && [ -n "$(ls -A "$DIR")" ]; then
  die "$DIR holds files and is not the volume: mounting over it would hide them; move them away or pick another host.capture_dir"
fi
# The mount point exists (and is locked down) even while the volume is absent:
# nobody else can write into it, and capture refuses a directory that is not a mount.
install -d -m 0750 -o root -g "$CAPTURE_GROUP" "$DIR"

if mountpoint -q "$DIR"; then
  mounted=$(findmnt -n -o SOURCE --mountpoint "$DIR")
  [ "$(readlink -f "$mounted")" = "$device" ] || die "$DIR is already a mount of $mounted, not of volume $VOLUME_ID ($device): unmount it, then: systemctl restart mirrorcap-storage"
else
  # nodev,nosuid,noexec: the volume holds data only.
  mount -t xfs -o noatime,nodev,nosuid,noexec "$device" "$DIR"
fi

# pcaps hold production payloads: only the capture user writes, only the pcap group reads.
# setgid keeps new files in the group; the capture unit's UMask=0027 makes them 0640.
chown "$CAPTURE_USER:$CAPTURE_GROUP" "$DIR"
chmod 2750 "$DIR"
echo "mirrorcap-storage: volume $VOLUME_ID ($device, xfs UUID=$uuid) mounted at $DIR"
MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_STORAGE
chmod 0755 '/usr/local/libexec/mirrorcap/storage.mirrorcap-new'
mv -f '/usr/local/libexec/mirrorcap/storage.mirrorcap-new' '/usr/local/libexec/mirrorcap/storage'

cat > '/usr/local/libexec/mirrorcap/decap.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_DECAP'
#!/bin/bash
# mirrorcap-decap: create one vxlan interface per configured VNI on the mirror
# ENI, found by its ENI ID through IMDSv2 (never by interface name).
# Idempotent: an existing interface with the right settings is left alone.
set -euo pipefail

ENV_FILE=/etc/mirrorcap/mirrorcap.env
# shellcheck source=/dev/null
. "$ENV_FILE"
ENI_ID=${MIRRORCAP_MIRROR_ENI_ID:?MIRRORCAP_MIRROR_ENI_ID missing from $ENV_FILE}
VNIS=${MIRRORCAP_VNIS:?MIRRORCAP_VNIS missing from $ENV_FILE}
IMDS=http://169.254.169.254
# Terraform attaches the mirror ENI after the instance starts: wait for it, bounded.
WAIT_SECONDS=300
VXLAN_PORT=${MIRRORCAP_VXLAN_PORT:?MIRRORCAP_VXLAN_PORT missing from $ENV_FILE}
VXLAN_OVERHEAD=${MIRRORCAP_VXLAN_OVERHEAD:?MIRRORCAP_VXLAN_OVERHEAD missing from $ENV_FILE}

die() { echo "mirrorcap-decap: $*" >&2; exit 1; }
[[ $ENI_ID =~ ^eni-[0-9a-f]{8}([0-9a-f]{9})?$ ]] || die "MIRRORCAP_MIRROR_ENI_ID=$ENI_ID is not an ENI ID"

imds() {
  curl -fsS --max-time 2 -H "X-aws-ec2-metadata-token: $token" "$IMDS/latest/meta-data/$1"
}

# The ENI attachment is created after the instance: wait for it (bounded).
mac=""
for ((waited = 0; waited <= WAIT_SECONDS; waited += 2)); do
  if token=$(curl -fsS --max-time 2 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 300" "$IMDS/latest/api/token"); then
    for m in $(imds network/interfaces/macs/ || true); do
      m=${m%/}
      if [ "$(imds "network/interfaces/macs/$m/interface-id" || true)" = "$ENI_ID" ]; then mac=$m; break; fi
    done
  fi
  [ -z "$mac" ] || break
  sleep 2
done
[ -n "$mac" ] || die "ENI $ENI_ID is not attached to this instance (IMDS at $IMDS lists no interface with that ID after ${WAIT_SECONDS}s)"

iface=""
for d in /sys/class/net/*; do
  if [ "$(cat "$d/address" 2>/dev/null)" = "$mac" ] && [ ! -e "$d/master" ]; then iface=${d##*/}; break; fi
done
[ -n "$iface" ] || die "no network interface has MAC $mac (ENI $ENI_ID)"

# Largest frames first: the NIC at its maximum MTU, vxlan at NIC MTU - overhead,
# so every mirrored frame that fits the ENI is decapsulated whole.
max_mtu=$(ip -d -j link show dev "$iface" | sed -n 's/.*"max_mtu":\([0-9]*\).*/\1/p')
if [ -n "$max_mtu" ] && [ "$max_mtu" -le 9001 ] && [ "$(cat "/sys/class/net/$iface/mtu")" -lt "$max_mtu" ]; then
  ip link set dev "$iface" mtu "$max_mtu" || true
fi
ip link set dev "$iface" up
inner_mtu=$(( $(cat "/sys/class/net/$iface/mtu") - VXLAN_OVERHEAD ))

for vni in $VNIS; do
  if ! [[ $vni =~ ^[0-9]+$ ]] || ((vni > 16777215)); then die "VNI $vni is not a 24-bit number"; fi
  name="vxlan$vni"
  if ip link show dev "$name" >/dev/null 2>&1; then
    details=$(ip -d link show dev "$name")
    if grep -q "vxlan id $vni " <<<"$details" && grep -q "dev $iface " <<<"$details" && grep -q "dstport $VXLAN_PORT " <<<"$details"; then
      :
    else
      echo "mirrorcap-decap: $name exists with other settings: recreating it"
      ip link del dev "$name"
    fi
  fi
  if ! ip link show dev "$name" >/dev/null 2>&1; then
    ip link add "$name" type vxlan id "$vni" dstport "$VXLAN_PORT" dev "$iface" nolearning
  fi
  ip link set dev "$name" mtu "$inner_mtu"
  # Receive-only: no IPv6 autoconf/DAD/MLD, no ARP, so the host's own packets
  # never land in the captures.
  sysctl -q -w "net.ipv6.conf.$name.disable_ipv6=1" 2>/dev/null || true
  ip link set dev "$name" arp off multicast off
  ip link set dev "$name" up
  echo "mirrorcap-decap: $name (VNI $vni) on $iface ($ENI_ID, $mac), MTU $inner_mtu"
done
MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_DECAP
chmod 0755 '/usr/local/libexec/mirrorcap/decap.mirrorcap-new'
mv -f '/usr/local/libexec/mirrorcap/decap.mirrorcap-new' '/usr/local/libexec/mirrorcap/decap'

cat > '/usr/local/libexec/mirrorcap/capture.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_CAPTURE'
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
MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_CAPTURE
chmod 0755 '/usr/local/libexec/mirrorcap/capture.mirrorcap-new'
mv -f '/usr/local/libexec/mirrorcap/capture.mirrorcap-new' '/usr/local/libexec/mirrorcap/capture'

cat > '/usr/local/libexec/mirrorcap/retention.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_RETENTION'
#!/bin/bash
# mirrorcap-retention: delete pcaps older than MIRRORCAP_RETENTION_DAYS, and the
# oldest pcaps while free space is under the floor. Only regular files named
# like mirrorcap's pcaps, directly in the capture directory; never the newest
# file of a VNI that is being captured (tcpdump is writing it: deleting it would
# free nothing and lose what is written next). The newest file of a VNI that is
# no longer configured is not being written, and ages out like any other.
# Logs every deletion. Runs as the capture user, who owns the directory.
set -euo pipefail

ENV_FILE=/etc/mirrorcap/mirrorcap.env
# shellcheck source=/dev/null
. "$ENV_FILE"
DIR=${MIRRORCAP_CAPTURE_DIR:?MIRRORCAP_CAPTURE_DIR missing from $ENV_FILE}
DAYS=${MIRRORCAP_RETENTION_DAYS:?MIRRORCAP_RETENTION_DAYS missing from $ENV_FILE}
VNIS=${MIRRORCAP_VNIS:?MIRRORCAP_VNIS missing from $ENV_FILE}
PATTERN=${MIRRORCAP_PCAP_PATTERN:?MIRRORCAP_PCAP_PATTERN missing from $ENV_FILE}
MIN_FREE_PERCENT=${MIRRORCAP_MIN_FREE_PERCENT:-0}
MIN_FREE_GIB=${MIRRORCAP_MIN_FREE_GIB:-0}
NOW=$(date +%s)

log() { echo "mirrorcap-retention: $*"; }
# The names of VNI $1's pcaps (* = every VNI's): the capture's strftime pattern
# with each %X as * (as mirrorcap_host.pcap_glob derives it for the Python scripts).
pcap_glob() { local g=${PATTERN//"{vni}"/$1}; echo "${g//%?/*}"; }
[ -d "$DIR" ] || { log "$DIR does not exist (mirrorcap-storage has not run): nothing to do"; exit 0; }
# Device numbers, not mountpoint(1): ReadWritePaths= bind-mounts the directory in
# this unit, which mountpoint would take for the volume.
if [ "$(stat -c %d "$DIR")" = "$(stat -c %d "$DIR/..")" ]; then
  log "$DIR is not a mounted volume (check mirrorcap-storage): nothing to do"
  exit 0
fi

# mtime (integer seconds) and name, oldest first; -maxdepth 1 and -type f keep
# subdirectories, symlinks and anything else out of reach.
mapfile -t files < <(find "$DIR" -maxdepth 1 -type f -name "$(pcap_glob '*')" -printf '%T@ %f\n' | sort -n -k1,1 -k2,2)

declare -A glob=() newest=()
for vni in $VNIS; do glob[$vni]=$(pcap_glob "$vni"); done
for entry in "${files[@]}"; do
  name=${entry#* }
  for vni in "${!glob[@]}"; do
    # shellcheck disable=SC2053  # the right side is a glob
    if [[ $name == ${glob[$vni]} ]]; then newest[$vni]=$name; fi
  done
done
protected() {
  local vni
  for vni in "${!newest[@]}"; do [ "${newest[$vni]}" != "$1" ] || return 0; done
  return 1
}

deleted=0
remaining=()
cutoff=$((NOW - DAYS * 86400))
for entry in "${files[@]}"; do
  mtime=${entry%% *}
  mtime=${mtime%%.*}
  name=${entry#* }
  if ((mtime < cutoff)) && ! protected "$name"; then
    rm -f -- "$DIR/$name"
    log "deleted $name (older than $DAYS days)"
    deleted=$((deleted + 1))
  else
    remaining+=("$name")
  fi
done

below_floor() {
  local size avail
  read -r size avail < <(df -P -B1 "$DIR" | awk 'NR == 2 { print $2, $4 }')
  ((avail * 100 < size * MIN_FREE_PERCENT)) || ((avail < MIN_FREE_GIB * 1073741824))
}
for name in "${remaining[@]}"; do
  below_floor || break
  protected "$name" && continue
  rm -f -- "$DIR/$name"
  log "deleted $name (free space under ${MIN_FREE_PERCENT}% / ${MIN_FREE_GIB} GiB)"
  deleted=$((deleted + 1))
done
if below_floor; then
  log "WARNING: free space still under the floor after deleting all but the pcaps being written"
fi
log "done: $deleted file(s) deleted, $(( ${#files[@]} - deleted )) kept"
MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_RETENTION
chmod 0755 '/usr/local/libexec/mirrorcap/retention.mirrorcap-new'
mv -f '/usr/local/libexec/mirrorcap/retention.mirrorcap-new' '/usr/local/libexec/mirrorcap/retention'

cat > '/usr/local/sbin/mirrorcap-boot.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_SBIN_MIRRORCAP_BOOT'
#!/bin/bash
# mirrorcap-boot: start capturing with the settings in /etc/mirrorcap/mirrorcap.env.
# Run by the user data on the first boot (the units it enables start by
# themselves on every later boot) and safe to run by hand after changing the
# env file: enables the units for the configured VNIs, and disables capture
# units of VNIs no longer configured.
set -euo pipefail
ENV_FILE=/etc/mirrorcap/mirrorcap.env
# shellcheck source=/dev/null
. "$ENV_FILE"
VNIS=${MIRRORCAP_VNIS:?MIRRORCAP_VNIS missing from $ENV_FILE}

units=(mirrorcap-storage.service mirrorcap-decap.service mirrorcap-retention.timer)
for vni in $VNIS; do units+=("mirrorcap-capture@$vni.service"); done

systemctl daemon-reload
for unit in $(systemctl list-units --all --plain --no-legend 'mirrorcap-capture@*.service' | awk '{ print $1 }'); do
  vni=${unit#mirrorcap-capture@}; vni=${vni%.service}
  if ! grep -qw -- "$vni" <<<"$VNIS"; then
    echo "mirrorcap-boot: VNI $vni is no longer configured: stopping $unit"
    systemctl disable --now "$unit"
  fi
done
# Enabled before anything starts: whatever fails now, the next boot starts them all.
systemctl enable "${units[@]}"
# --no-block: storage waits (up to 5 minutes) for the volume Terraform attaches
# after the instance starts; each capture unit starts once storage and decap
# have succeeded (its Requires= and After=), or fails with them.
systemctl start --no-block "${units[@]}"
echo "mirrorcap-boot: starting capture of VNI(s) $VNIS: mirrorcap-health tells when it runs"
MIRRORCAP_USR_LOCAL_SBIN_MIRRORCAP_BOOT
chmod 0755 '/usr/local/sbin/mirrorcap-boot.mirrorcap-new'
mv -f '/usr/local/sbin/mirrorcap-boot.mirrorcap-new' '/usr/local/sbin/mirrorcap-boot'

cat > '/usr/local/sbin/mirrorcap-health.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_SBIN_MIRRORCAP_HEALTH'
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
MIRRORCAP_USR_LOCAL_SBIN_MIRRORCAP_HEALTH
chmod 0755 '/usr/local/sbin/mirrorcap-health.mirrorcap-new'
mv -f '/usr/local/sbin/mirrorcap-health.mirrorcap-new' '/usr/local/sbin/mirrorcap-health'

cat > '/usr/local/bin/mirrorcap-window.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_BIN_MIRRORCAP_WINDOW'
#!/usr/bin/python3
"""mirrorcap-window: the packets around a moment, from the rotated pcaps.

  mirrorcap-window --at 2026-11-25T10:15:00+09:00 --window 5m          # list the pcaps covering it
  mirrorcap-window --at ... --window 2m --port 443 --out err.pcap      # merge, cut to the window, filter
  mirrorcap-window --at ... --host 10.0.3.7 --open                     # ... and open it in termshark

A pcap covers [the time in its name - 5 s, its last write]; the merged result is cut
to exactly the window (frame times) and filtered with a capture filter (BPF:
--host/--port/--bpf, via tcpdump) and/or a display filter (--filter, via
tshark). Writes nothing unless --out or --open; never overwrites a file.
Exit 0 = found, 1 = no pcap covers the window, 2 = bad usage.
Python 3.9 stdlib only (Amazon Linux 2023's system Python).
"""
import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

# The shared module: /usr/local/lib/mirrorcap, from /usr/local/bin.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "lib", "mirrorcap"))
import mirrorcap_host as host  # noqa: E402

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# tcpdump -G names a file by the wall clock when it opens it, but the kernel
# hands packets over in blocks (TPACKET_V3, up to ~1 s late on a quiet link):
# a file can hold packets stamped a little before its name. Its last write
# (mtime) is always after its last packet. Reading one file too many is free
# (the cut below is by packet time); missing one is not.
EARLY_SLACK = dt.timedelta(seconds=5)


class Usage(Exception):
    pass


def settings(path):
    """(capture directory, pcap name pattern) from the host's env file."""
    try:
        env = host.read_env(path)
        return env["MIRRORCAP_CAPTURE_DIR"], env["MIRRORCAP_PCAP_PATTERN"]
    except OSError as exc:
        raise Usage("cannot read %s: %s (--env-file)" % (path, exc.strerror))
    except KeyError as exc:
        raise Usage("%s sets no %s" % (path, exc))


def parse_time(text):
    if text == "now":
        return dt.datetime.now(dt.timezone.utc)
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        raise Usage("--at %r is not a date and time: write e.g. 2026-11-25T10:15:00+09:00" % text)
    if t.tzinfo is None:
        raise Usage("--at %r has no time zone: pcaps are named in UTC, so add one, e.g. %s+09:00 or %sZ" % (text, text, text))
    return t


def parse_span(text, flag):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text or "")
    if not m:
        raise Usage("%s %r is not a duration: write e.g. 90s, 5m, 1h" % (flag, text))
    return dt.timedelta(seconds=float(m.group(1)) * UNITS[m.group(2) or "s"])


def pcaps(directory, pattern, vni=None):
    found = []
    try:
        names = os.listdir(directory)
    except OSError as exc:
        raise Usage("cannot read %s: %s (are you in the pcap group?)" % (directory, exc.strerror))
    for name in names:
        named = host.pcap_start(pattern, name)
        if not named or (vni is not None and named[0] != vni):
            continue
        path = os.path.join(directory, name)
        st = os.stat(path)
        start = named[1]
        end = dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc)
        found.append({"path": path, "vni": named[0], "start": start, "end": max(start, end), "bytes": st.st_size})
    return sorted(found, key=lambda p: (p["start"], p["path"]))


def covering(files, begin, end):
    return [f for f in files if f["start"] - EARLY_SLACK <= end and f["end"] >= begin]


def bpf_for(args):
    parts = []
    if args.host:
        parts.append("host %s" % args.host)
    if args.port:
        parts.append("port %d" % args.port)
    if args.bpf:
        parts.append("(%s)" % args.bpf)
    return " and ".join(parts)


def run(cmd):
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    if result.returncode != 0:
        raise Usage("%s failed: %s" % (cmd[0], result.stderr.strip()[:400]))


def extract(files, begin, end, bpf, display, out):
    """mergecap (time order) -> tcpdump BPF -> tshark window + display filter -> out (pcap)."""
    tmp = tempfile.mkdtemp(prefix="mirrorcap-window-")
    try:
        merged = os.path.join(tmp, "merged.pcap")
        run(["mergecap", "-F", "pcap", "-w", merged] + [f["path"] for f in files])
        if bpf:
            narrowed = os.path.join(tmp, "bpf.pcap")
            run(["tcpdump", "-r", merged, "-w", narrowed, bpf])
            merged = narrowed
        window = "frame.time_epoch >= %.6f && frame.time_epoch <= %.6f" % (begin.timestamp(), end.timestamp())
        expr = "(%s) && (%s)" % (window, display) if display else window
        # Created exclusively (unpredictable name, O_EXCL) beside `out`, with the
        # pcaps' own mode: the result is as sensitive as they are, whatever the umask.
        fd, partial = tempfile.mkstemp(prefix=".mirrorcap-window-", suffix=".partial", dir=os.path.dirname(os.path.abspath(out)))
        try:
            os.fchmod(fd, 0o640)
            os.close(fd)
            run(["tshark", "-n", "-r", merged, "-Y", expr, "-F", "pcap", "-w", partial])
            try:
                os.link(partial, out)  # fails if `out` exists: never replaces a file
            except FileExistsError:
                raise Usage("%s appeared while extracting: not replaced; pick another --out" % out)
        finally:
            os.unlink(partial)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(prog="mirrorcap-window", description=__doc__.split("\n")[0])
    p.add_argument("--at", required=True, help="the moment, with a time zone (2026-11-25T10:15:00+09:00, ...Z, or now)")
    p.add_argument("--window", default="5m", help="either side of --at (default 5m)")
    p.add_argument("--before", help="before --at (overrides --window)")
    p.add_argument("--after", help="after --at (overrides --window)")
    p.add_argument("--vni", type=int, help="only this VNI's pcaps")
    p.add_argument("--dir", default=None, help="capture directory (default: the env file's)")
    p.add_argument("--env-file", default=host.ENV_FILE, help="the host's settings: capture directory, pcap names (default %(default)s)")
    p.add_argument("--host", help="capture filter: this IP address")
    p.add_argument("--port", type=int, help="capture filter: this TCP/UDP port")
    p.add_argument("--bpf", help="capture filter (tcpdump syntax)")
    p.add_argument("--filter", dest="display", help="display filter (Wireshark syntax), e.g. 'http.response.code >= 500'")
    p.add_argument("--out", help="write the merged, cut, filtered packets here (pcap)")
    p.add_argument("--open", action="store_true", help="open the result in termshark")
    p.add_argument("--json", action="store_true", help="list as JSON")
    args = p.parse_args(argv)
    try:
        at = parse_time(args.at)
        before = parse_span(args.before or args.window, "--before" if args.before else "--window")
        after = parse_span(args.after or args.window, "--after" if args.after else "--window")
        begin, end = at - before, at + after
        default_dir, pattern = settings(args.env_file)
        directory = args.dir or default_dir
        files = covering(pcaps(directory, pattern, args.vni), begin, end)
        out = args.out
        if args.open and not out:
            out = "mirrorcap-%s.pcap" % at.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        if out and os.path.exists(out):
            raise Usage("%s exists: pick another --out (mirrorcap-window never overwrites a file)" % out)
        if (args.host or args.port or args.bpf or args.display) and not out:
            raise Usage("filters apply to the extracted packets: add --out FILE or --open")
    except Usage as exc:
        print("mirrorcap-window: %s" % exc, file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"begin": begin.isoformat(), "end": end.isoformat(), "directory": directory,
                          "pcaps": [dict(f, start=f["start"].isoformat(), end=f["end"].isoformat()) for f in files]}, indent=2))
    else:
        print("window %s .. %s (UTC), %d pcap(s) in %s" % (begin.astimezone(dt.timezone.utc).isoformat(),
                                                        end.astimezone(dt.timezone.utc).isoformat(), len(files), directory))
        for f in files:
            print("  %s  %s .. %s  %d bytes" % (f["path"], f["start"].strftime("%H:%M:%S"), f["end"].strftime("%H:%M:%S"), f["bytes"]))
    if not files:
        return 1
    if out:
        try:
            extract(files, begin, end, bpf_for(args), args.display, out)
        except Usage as exc:
            print("mirrorcap-window: %s" % exc, file=sys.stderr)
            return 2
        print("wrote %s" % out, file=sys.stderr)
    if args.open:
        if not shutil.which("termshark"):
            print("mirrorcap-window: termshark not found (the bake skips it when it cannot build it): "
                  "the packets are in %s (tshark -r %s)" % (out, out), file=sys.stderr)
            return 2
        os.execvp("termshark", ["termshark", "-r", out])
    return 0


if __name__ == "__main__":
    sys.exit(main())
MIRRORCAP_USR_LOCAL_BIN_MIRRORCAP_WINDOW
chmod 0755 '/usr/local/bin/mirrorcap-window.mirrorcap-new'
mv -f '/usr/local/bin/mirrorcap-window.mirrorcap-new' '/usr/local/bin/mirrorcap-window'

cat > '/etc/systemd/system/mirrorcap-storage.service.mirrorcap-new' <<'MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_STORAGE_SERVICE'
[Unit]
Description=mirrorcap: mount the pcap volume at the capture directory
Documentation=file:///usr/local/share/doc/mirrorcap/README
After=local-fs.target
ConditionPathExists=/etc/mirrorcap/mirrorcap.env

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/libexec/mirrorcap/storage
TimeoutStartSec=600
# No PrivateTmp=, ProtectHome=, ProtectSystem=, ReadWritePaths= or any other
# option that gives the unit its own mount namespace: the mount this unit makes
# must be the host's, seen by every other unit and by people. It runs as root to
# read the block device, format a blank one and mount it.

[Install]
WantedBy=multi-user.target
MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_STORAGE_SERVICE
chmod 0644 '/etc/systemd/system/mirrorcap-storage.service.mirrorcap-new'
mv -f '/etc/systemd/system/mirrorcap-storage.service.mirrorcap-new' '/etc/systemd/system/mirrorcap-storage.service'

cat > '/etc/systemd/system/mirrorcap-decap.service.mirrorcap-new' <<'MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_DECAP_SERVICE'
[Unit]
Description=mirrorcap: VXLAN decapsulation on the mirror ENI
Documentation=file:///usr/local/share/doc/mirrorcap/README
Wants=network-online.target
After=network-online.target
ConditionPathExists=/etc/mirrorcap/mirrorcap.env

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/libexec/mirrorcap/decap
TimeoutStartSec=600
PrivateTmp=yes
ProtectHome=yes
ProtectSystem=full

[Install]
WantedBy=multi-user.target
MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_DECAP_SERVICE
chmod 0644 '/etc/systemd/system/mirrorcap-decap.service.mirrorcap-new'
mv -f '/etc/systemd/system/mirrorcap-decap.service.mirrorcap-new' '/etc/systemd/system/mirrorcap-decap.service'

cat > '/etc/systemd/system/mirrorcap-capture@.service.mirrorcap-new' <<'MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_CAPTURE__SERVICE'
[Unit]
Description=mirrorcap: capture VXLAN VNI %i into /var/log/tcpdump
Documentation=file:///usr/local/share/doc/mirrorcap/README
# Storage mounts the volume in the host's namespace and decap creates vxlan%i;
# both are oneshot units that stay active, so capture starts after they succeed.
Requires=mirrorcap-storage.service mirrorcap-decap.service
After=mirrorcap-storage.service mirrorcap-decap.service
# Stopping the volume's mount unit (systemctl stop) stops capture first.
RequiresMountsFor=/var/log/tcpdump
# Five failures in five minutes leave the unit failed, where alarms see it.
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
Type=simple
# tcpdump never runs as root: the capture user opens the packet socket with
# CAP_NET_RAW, the only capability it has (ambient, so it passes to tcpdump;
# bounded, so nothing can gain more). It creates its pcaps itself in the
# directory it owns: no -Z, so no CAP_SETUID/CAP_SETGID to drop privileges and
# no CAP_CHOWN/CAP_DAC_OVERRIDE to create a file as root and hand it over.
# Promiscuous mode is a packet-socket option that CAP_NET_RAW covers, and -B
# sizes a memory-mapped ring, which needs no CAP_NET_ADMIN.
User=mirrorcap
Group=pcap
AmbientCapabilities=CAP_NET_RAW
CapabilityBoundingSet=CAP_NET_RAW
Environment=TZ=UTC
ExecStart=/usr/local/libexec/mirrorcap/capture %i
Restart=on-failure
RestartSec=5
# SIGTERM to the watcher only: it stops tcpdump, which flushes and prints its counters.
KillMode=mixed
TimeoutStopSec=20
# tcpdump.log (drop counters) and state.json (gaps) for mirrorcap-health;
# kept across restarts of the unit so a gap is not forgotten.
RuntimeDirectory=mirrorcap/capture-%i
RuntimeDirectoryMode=0750
RuntimeDirectoryPreserve=restart
# New pcaps: 0640 (the directory's setgid gives them the pcap group).
UMask=0027
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=/var/log/tcpdump
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_PACKET AF_NETLINK AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_CAPTURE__SERVICE
chmod 0644 '/etc/systemd/system/mirrorcap-capture@.service.mirrorcap-new'
mv -f '/etc/systemd/system/mirrorcap-capture@.service.mirrorcap-new' '/etc/systemd/system/mirrorcap-capture@.service'

cat > '/etc/systemd/system/mirrorcap-retention.service.mirrorcap-new' <<'MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_RETENTION_SERVICE'
[Unit]
Description=mirrorcap: delete old pcaps and keep a free-space floor
Documentation=file:///usr/local/share/doc/mirrorcap/README
After=mirrorcap-storage.service
ConditionPathExists=/etc/mirrorcap/mirrorcap.env

[Service]
Type=oneshot
ExecStart=/usr/local/libexec/mirrorcap/retention
# The capture user owns the capture directory, so it may delete in it: no capability at all.
User=mirrorcap
Group=pcap
CapabilityBoundingSet=
NoNewPrivileges=yes
ProtectSystem=strict
# "-": a missing directory (storage never ran) is not a namespace error; the script says so.
ReadWritePaths=-/var/log/tcpdump
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateNetwork=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_UNIX
MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_RETENTION_SERVICE
chmod 0644 '/etc/systemd/system/mirrorcap-retention.service.mirrorcap-new'
mv -f '/etc/systemd/system/mirrorcap-retention.service.mirrorcap-new' '/etc/systemd/system/mirrorcap-retention.service'

cat > '/etc/systemd/system/mirrorcap-retention.timer.mirrorcap-new' <<'MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_RETENTION_TIMER'
[Unit]
Description=mirrorcap: run pcap retention every minute (a burst can fill the disk fast)

[Timer]
# Cheap (one directory listing): every minute keeps the free-space floor close
# behind a burst, and bounds how long a capture that hit a full disk waits.
OnBootSec=1min
OnUnitActiveSec=1min
AccuracySec=5s

[Install]
WantedBy=timers.target
MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_RETENTION_TIMER
chmod 0644 '/etc/systemd/system/mirrorcap-retention.timer.mirrorcap-new'
mv -f '/etc/systemd/system/mirrorcap-retention.timer.mirrorcap-new' '/etc/systemd/system/mirrorcap-retention.timer'

if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
echo "mirrorcap bake: installed (13 files)$termshark"
