"""What the host's Python scripts share: the env file, the pcap names, where
state lives, reading a pcap's end (the last whole record, a torn tail), and
calling the AWS CLI.

Installed as /usr/local/lib/mirrorcap/mirrorcap_host.py; the host's Python
scripts import it from there. Python 3.9 stdlib only.
"""
import datetime as dt
import json
import os
import re
import struct
import subprocess

ENV_FILE = "/etc/mirrorcap/mirrorcap.env"
BOOTSTRAP_LOCK = "/run/mirrorcap-bootstrap.lock"  # the user data and mirrorcap-settings take turns
RUN_DIR = "/run/mirrorcap"  # what a boot forgets: heartbeats, what storage and decap wait for
STATE_DIR = "/var/lib/mirrorcap"  # what survives restarts, failures and reboots: the loss record
# The VXLAN network identifier a capture is named by: 24 bits; 0 is never one (AWS refuses it).
VNI_MIN, VNI_MAX = 1, (1 << 24) - 1
# A pcap's packet index beside it (NAME.pcap + INDEX_SUFFIX, mirrorcap_index writes it), or why
# it could not be written (NAME.pcap + INDEX_FAILED_SUFFIX, which health reports).
INDEX_SUFFIX, INDEX_FAILED_SUFFIX = ".idx.json.gz", ".idx-failed"
# How the failure marker of a damaged pcap begins: it has an index, of what lies around the damage.
INDEX_PARTIAL = "partial index"
# The archive uploader's waits after 1, 2, 3, 4+ failed runs in a row; the laptop's threshold
# for the archive backlog (health, alarms) allows for the longest.
ARCHIVE_BACKOFF_SECONDS = (60, 120, 240, 300)


IMDS = "http://169.254.169.254"  # the instance metadata service, IMDSv2 only (the instances require it)


def imds(path, token_timeout=5, timeout=5):
    """The bytes at `path` (e.g. /latest/meta-data/instance-id) of the instance metadata service,
    asked with a session token (IMDSv2). OSError (URLError, a timeout) when it does not answer."""
    import urllib.request  # here: the scripts that never ask IMDS (the capture...) do not load it
    token = urllib.request.urlopen(urllib.request.Request(
        IMDS + "/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}),
        timeout=token_timeout).read()
    return urllib.request.urlopen(urllib.request.Request(
        IMDS + path, headers={"X-aws-ec2-metadata-token": token.decode()}), timeout=timeout).read()


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


def vxlan_iface(env, vni):
    """The decapsulating interface of a VNI (decap makes it)."""
    return env["MIRRORCAP_VXLAN_IFACE"].replace("{vni}", str(vni))


def capture_run_dir(vni):
    """The capture unit's RuntimeDirectory=mirrorcap/capture-%i."""
    return os.path.join(RUN_DIR, "capture-%s" % vni)


def capture_state_file(vni):
    """The capture's loss record, in its StateDirectory=mirrorcap/capture-%i."""
    return os.path.join(STATE_DIR, "capture-%s" % vni, "state.json")


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def write_json(path, data):
    """Replaced whole (a reader never sees half of it)."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def not_writing(vnis):
    """(the VNIs whose capture stopped on a full volume, the most room one of them needs to write
    again): the not-writing flags the capture leaves in its RuntimeDirectory for retention."""
    stopped, need = set(), 0
    for vni in vnis:
        try:
            with open(os.path.join(capture_run_dir(vni), "not-writing")) as f:
                need = max(need, int(f.read().split()[0]))
            stopped.add(vni)
        except (OSError, ValueError, IndexError):
            pass
    return stopped, need


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


# --- The end of a pcap -----------------------------------------------------------
# A pcap can end in a torn record: the write that hit a full disk, a tcpdump
# killed in the middle of one, a file read while tcpdump writes it. Readers stop
# at its last whole record, and the capture cuts a torn tail off (repair).
PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1": ("<", 10 ** 6), b"\xa1\xb2\xc3\xd4": (">", 10 ** 6),
              b"\x4d\x3c\xb2\xa1": ("<", 10 ** 9), b"\xa1\xb2\x3c\x4d": (">", 10 ** 9)}
MAX_LEN = 1 << 24  # no frame's original length is larger


def pcap_end(path):
    """(offset just past the last whole record, that record's time in seconds or None).

    (0, None): not even a whole file header. A small file is walked record by
    record from its start. In a large one the records of its last stretch are
    found by their chain: headers whose time lies between the first record's
    (-1 h) and now (+1 h), whose fraction and lengths are possible, each followed
    by the next up to the end of the file, the last one whole or torn. Random
    bytes pass one such header about once in 3e7 tries, and never a chain of
    them; where no chain is found the whole file is walked instead.
    """
    with open(path, "rb") as f:
        head = f.read(40)
        size = os.fstat(f.fileno()).st_size
        if len(head) < 24 or head[:4] not in PCAP_MAGIC:
            return 0, None
        endian, per_second = PCAP_MAGIC[head[:4]]
        snaplen = min(struct.unpack(endian + "I", head[16:20])[0] or MAX_LEN, MAX_LEN)
        if len(head) < 40:
            return 24, None
        record = struct.Struct(endian + "IIII")
        first = record.unpack_from(head, 24)[0]
        latest = max(first, int(dt.datetime.now(dt.timezone.utc).timestamp())) + 3600

        def walk(data, o, exact):
            """(end of the last whole record, its header's offset) from the record at o; None
            when a header is impossible (unless exact: then the walk stops before it)."""
            end, last = o, None
            while o + 16 <= len(data):
                ts, frac, caplen, length = record.unpack_from(data, o)
                if not (first - 3600 <= ts <= latest and frac < per_second and 0 < caplen <= snaplen
                        and caplen <= length < MAX_LEN):
                    if exact:
                        break
                    return None
                if o + 16 + caplen > len(data):
                    break  # torn: the chain holds up to here
                end, last, o = o + 16 + caplen, o, o + 16 + caplen
            return end, last

        span = 2 * (16 + snaplen)
        found, base = None, max(24, size - span)
        if base > 24:
            f.seek(base)
            data = f.read(size - base)
            for o in range(min(len(data) - 16, span // 2 + 16)):
                found = walk(data, o, False)
                if found and found[1] is not None:
                    break
                found = None
        if found is None:  # small file, or no chain: every record from the first
            f.seek(0)
            data, base = f.read(), 0
            found = walk(data, 24, True)
    end, last = found
    if last is None:
        return base + end, None
    ts, frac = record.unpack_from(data, last)[:2]
    return base + end, ts + frac / per_second


def repair(path):
    """Cut a torn tail off a pcap nobody writes any more; a file without a whole
    header holds no packet and goes. Returns the bytes removed (0: it was whole)."""
    end, _ = pcap_end(path)
    size = os.path.getsize(path)
    if end == 0:
        os.unlink(path)
        return size
    if end < size:
        os.truncate(path, end)
    return size - end


def aws_cli(args, *, attempts, connect_timeout, read_timeout, timeout):
    """Run `aws ARGS...` (the instance role, through IMDSv2): (its result, None), or
    (None, why not) in one line when it could not run, timed out or failed."""
    cmd = ["aws", *args, "--no-cli-pager", "--cli-connect-timeout", str(connect_timeout),
           "--cli-read-timeout", str(read_timeout)]
    env = dict(os.environ, AWS_RETRY_MODE="standard", AWS_MAX_ATTEMPTS=str(attempts))
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, "aws %s: %s" % (" ".join(args[:2]), e)
    if r.returncode != 0:
        return None, (r.stderr.strip() or "aws exited with %d" % r.returncode).splitlines()[-1][:400]
    return r, None
