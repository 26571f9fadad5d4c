"""Boot lab: a real systemd 252 as PID 1 of a Debian bookworm root, for tests
that boot a capture host.

No VM and no systemd-nspawn (which does not work on these machines): the lab
runs ``/lib/systemd/systemd --system`` as PID 1 of new pid, mount, uts, ipc and
cgroup namespaces inside a network namespace, on a copy-on-write root
(pivot_root, chroot if that fails), and enters it with ``nsenter``. Needs root,
util-linux (unshare, nsenter, losetup, pivot_root, flock, blkid), mount,
iproute2, overlayfs, and debootstrap for the first build of the root. Boot to
"running": ~0.5 s.

API::

    needs_lab                      # pytest mark: skips (with the reason) when the lab cannot run here
    lab_unavailable() -> str|None  # that reason, or None
    rootfs(extra_packages=()) -> Path
        # tools/bootlab-rootfs.sh: the cached bookworm tree (built once: ~30-60 s;
        # extra packages give another cached tree); pytest.skip when not root,
        # debootstrap is missing or fails.
    reap_stale()                   # what killed test processes left; every Machine.open() runs it

    with Machine(rootfs(), tmp_path, "cap1", eni_id="eni-...", volume_id="vol-...") as m:
        m.install_user_data("#!/bin/bash\\n...")  # cloud-init stand-in: runs once per instance
        m.write_file("/etc/x", "text", 0o644)      # before boot: into the machine's disk; booted: live
        m.chroot_run("useradd", ...)               # before boot: a command chrooted in its disk (image build step)
        state = m.boot(timeout=120)                # "running" or "degraded" (waits for the user data too)
        m.run("systemctl", "status", "x")          # CompletedProcess (text), inside the machine
        m.read_file("/etc/x"); m.path("/etc/x")    # path: /proc/<pid1>/root/etc/x on the host
        m.unit_state("x.service"); m.unit_show("x.service", "Result"); m.wait_unit("x.service")
        m.journal("x.service"); m.failed_units(); m.console_tail()
        m.sender("tcpreplay", "-i", m.sender_iface, "f.pcap")  # host command in the sender netns
        m.attach_volume()                          # the volume arrives after boot (volume_id=None at init)
        m.set_imds_interfaces({mac: eni_id})       # what the IMDS answers, live
        m.set_imds("refuse")                       # an IMDS outage, live: "refuse" (nothing listens), "500", "up"
        m.set_imds_user_data(text)                 # what GET /latest/user-data answers (gzipped), live
        m.reboot()                                 # power cut + boot: same disk, volume, ENI
        m.serve_s3("eu-west-1", ["bucket"])        # S3 (moto) under its real names, TLS with a lab CA the machine trusts
        m.set_s3_reachable(False)                  # an outage (the address is gone), live; True: back, objects kept
        m.s3_objects("bucket")                     # {key: bytes} as the S3 server holds them
    # __exit__: killed, detached, deleted; the workdir stays (disk, volume image, console.log)

Machine(rootfs, workdir, name, *, eni_id, volume_id, volume_mib=400, mirror_mtu=9001, sender_mtu=None,
mirror_mac="0e:6c:61:62:00:06", mirror_ip="10.0.6.10/24", sender_ip="10.0.6.1/24",
hostname=name, sysfs="rw", instance_id=<from name>, ebs_device_name=None): ``ebs_device_name="sdf"``
also links /dev/sdf to the volume's node, as Amazon Linux's udev rules do on Nitro; ``volume_id=None`` boots without the volume (no node,
no link) until ``attach_volume(volume_id)``; ``sysfs="ro"`` gives the classic
container setup instead (no device units at all, fstab device lines ignored).

Attributes: ``name``, ``workdir``, ``rootfs``, ``pid`` (host PID of PID 1,
while booted), ``boots``, ``netns`` (the machine's network namespace),
``mirror_iface`` ("ens6"), ``mirror_mac``, ``mirror_ip``, ``sender_netns``,
``sender_iface`` ("sender0"), ``sender_ip``, ``sender_mac``, ``mirror_mtu``,
``volume_id``, ``volume_image``, ``loop_device`` (host), ``volume_node``
(inside, /dev/loopN), ``by_id_link``, ``imds_interfaces``, ``console_log``,
``cgroup`` (host path, while booted).

The machine, and how it differs from an EC2 host (each deliberately):

* Disk: overlayfs, lower = the cached rootfs (never written), upper/work in
  ``workdir/overlay``, mounted only inside the machine's mount namespace
  (nothing is mounted on the host, so nothing can stay mounted there). What
  the machine writes persists across ``reboot()`` and across Machine objects
  on the same workdir, like a root volume. If overlayfs cannot be mounted there
  (workdir on overlayfs, ...), a one-time copy in ``workdir/copy`` is the disk.
* /proc: its own (pid namespace). /proc/sys read-only but for /proc/sys/net
  (per network namespace, writable: sysctl -w net.* works): the machine cannot
  change the host's kernel.*, vm.*, fs.* sysctls; systemd-sysctl.service runs
  and its non-net keys fail silently. /proc/sys/kernel/random/boot_id is a new
  UUID per boot (the kernel's is the host's), so ``journalctl -b -1`` and
  ``--list-boots`` work across lab reboots.
* /sys: a fresh sysfs, read-write, mounted from inside the machine's network
  namespace (/sys/class/net lists the machine's interfaces). Read-write is
  what makes systemd support device units (with /sys read-only systemd drops
  every dependency on a device and systemd-fstab-generator ignores every fstab
  line whose source is a device). The machine can write host-wide sysfs
  attributes: nothing in a stock bookworm does; don't either.
* udev does not run (not installed; it could not see the machine's devices
  properly). The lab does udev's coldplug at each boot: device nodes, the
  /dev/disk links and the udev database (/run/udev, tagged "systemd") for the
  volume and ens6, from which systemd makes plugged .device units at startup.
  Links: ``/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_volXXXX`` (EC2's
  NVMe name for the volume), ``/dev/disk/by-uuid/<uuid>`` and
  ``/dev/disk/by-label/<label>`` when the volume holds a file system at boot
  (blkid probe from the host), ``/dev/block/MAJ:MIN``. The node is
  ``/dev/loopN`` (the kernel's name, which /proc/partitions lists, so blkid
  and ``mount UUID=`` find it). No uevents after startup: a file system made
  during a boot gets no by-uuid link until the next boot; ``attach_volume()``
  on a booted machine makes the node, links and database entry, but systemd
  gets no event (its .device for the volume appears as "tentative" once
  something mounts it, which mounts and RequiresMountsFor= accept).
* Mounts and devices then behave as on EC2. An fstab line ``UUID=... nofail,
  x-systemd.device-timeout=30s``: the .mount unit Requires/After its .device;
  volume present at boot: fsck.xfs runs, the unit mounts it in local-fs.target;
  volume absent at boot: the device job times out after 30 s (boot() waits that
  long), the mount job ends with result "dependency" (the unit is inactive, not
  failed: "running"). RequiresMountsFor=P adds Requires= and After= on the
  mount units of P's prefixes that exist: from unit files, fstab, or mounts
  seen in /proc/self/mountinfo (also ones made later by a script); a unit
  requiring a mount whose device never came fails with "dependency". A mount
  made by a unit *without* namespacing options is in the machine's mount
  namespace (``findmnt`` via ``m.run`` sees it); with PrivateTmp=,
  ProtectSystem=, ... it stays in that unit's own namespace, as on a host.
* Cgroups: the host is hybrid (v1 controllers, cgroup2 at /sys/fs/cgroup/unified).
  The machine gets its own cgroup2 directory (``<cgroup2>/mirrorcap-bootlab/<id>``),
  the root of its cgroup namespace, mounted rw at /sys/fs/cgroup: systemd runs
  in pure unified mode without controllers (no memory/cpu/io accounting;
  MemoryMax= and the like are accepted and do nothing). Sandboxing options
  (ProtectSystem=, PrivateTmp=, PrivateDevices=, CapabilityBoundingSet=,
  NoNewPrivileges=, seccomp filters, User=, ...) are enforced as on a host.
* Container detection: systemd detects a container anyway (a cgroup
  namespace whose root is not the host's), so PID 1 gets ``container=mirrorcap-bootlab``
  and ``systemd-detect-virt`` says container-other: ConditionVirtualization=!container
  units are skipped and a console getty runs on the console pty. Nothing is masked;
  the stock root boots "running" with no failed unit.
* /dev: a tmpfs with null zero full random urandom tty net/tun, its own devpts
  instance, ptmx, fd/stdin/stdout/stderr, /dev/console = a pty whose output is
  appended to ``console_log`` (systemd's status lines, all boots). /run is a
  tmpfs the lab mounts (for the udev database); /dev/shm, /dev/mqueue,
  /dev/hugepages, debugfs, tracefs are mounted by systemd in the machine only.
* Network: the machine's netns has ``lo`` (with 169.254.169.254/32) and ``ens6``
  (the mirror ENI: veth, ``mirror_mac``, MTU ``mirror_mtu``, up, ``mirror_ip``
  set from outside as DHCP would). Its peer ``sender_iface`` is in
  ``sender_netns`` (same MTU, up, ``sender_ip``, IPv6 off so it sends nothing
  by itself; its MTU ``sender_mtu``, by default the mirror ENI's: AWS's side sends
  up to 9001 whatever the host set, so a test of a small mirror MTU gives the sender
  9001). No management interface and no network manager: network-online.target
  is reached at once. No route out: the machine reaches nothing but the IMDS
  and the sender.
* IMDSv2: a fake (PUT /latest/api/token with a TTL header gives the token
  "test-token"; GETs need it, 401 without; it answers
  .../network/interfaces/macs/ and .../macs/<mac>/interface-id) listening on
  169.254.169.254:80 in the machine's netns, served from outside the machine
  (``nsenter --net``): the machine's scripts need no endpoint override.
  Default answer {mirror_mac: eni_id}; ``set_imds_interfaces`` changes it.
  ``set_imds("500")`` makes it answer 500 to everything, ``set_imds("refuse")``
  stops it (connections refused), ``set_imds("up")`` brings it back.
* S3 (``serve_s3``): a moto server (the test venv's, in server mode) in the
  machine's netns on 198.51.100.3:443, TLS with a certificate for
  s3.<region>.amazonaws.com and *.s3.<region>.amazonaws.com from a lab CA
  that the machine's trust store gets (update-ca-certificates), and those
  names in its /etc/hosts: the AWS CLI reaches "S3" by its real endpoint,
  with credentials from the IMDS's instance role (the IMDS always answers
  iam/security-credentials/ and instance-id). Objects live in the server's
  memory for the machine's lifetime; an outage removes the address.
* Hostname: the machine's name (its UTS namespace; the rootfs has no /etc/hostname).

Shutdown is a power cut for userspace (PID 1 is SIGKILLed by its host PID, the
kernel kills the rest of its pid namespace: no unit is stopped) and a clean
unmount for the file systems (the kernel unmounts the disk and the volume when
the machine's mount namespace dies).

``m.path(p)`` is ``/proc/<pid1>/root/p``: the machine's live view, its mounts
included, but an absolute symlink in it resolves against the host's root: use
``m.read_file``/``m.run`` for such paths.

Long-lived helpers get PR_SET_PDEATHSIG: boot from a thread that outlives the
machine (pytest's main thread). If the test process is killed outright, its
machines die with it and the next ``Machine`` removes what is left (network
namespaces, loop devices, cgroups, processes; recorded in /run/mirrorcap-bootlab).

Set BOOTLAB_REQUIRE=1 (CI) to turn every lab skip into a failure.
"""

from __future__ import annotations

import base64
import ctypes
import gzip
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

try:
    import pytest
except ImportError:  # pragma: no cover - bootlab.py run as a script (the IMDS server)
    pytest = None

ROOT = Path(__file__).resolve().parents[1]
ROOTFS_SCRIPT = ROOT / "tools" / "bootlab-rootfs.sh"
CACHE_DIR = Path(os.environ.get("BOOTLAB_CACHE", "/var/cache/mirrorcap-bootlab"))
STATE_DIR = Path("/run/mirrorcap-bootlab")
IMDS_ADDR = "169.254.169.254"
IMDS_TOKEN = "test-token"
MIRROR_IFACE = "ens6"
DEFAULT_MIRROR_MAC = "0e:6c:61:62:00:06"  # locally administered unicast, like EC2's
DEFAULT_SENDER_MAC = "0e:6c:61:62:00:01"
CONTAINER = "mirrorcap-bootlab"
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MACHINE_ENV = {
    "PATH": SBIN_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb",
    "SYSTEMD_PAGER": "cat", "SYSTEMD_COLORS": "0", "SYSTEMD_LESS": "",
}
USER_DATA_UNIT = "lab-cloud-init.service"
CLOUD_DIR = "/var/lib/cloud/instance"
REQUIRED_TOOLS = {"unshare": "util-linux", "nsenter": "util-linux", "losetup": "mount",
                  "mount": "mount", "pivot_root": "util-linux", "ip": "iproute2", "flock": "util-linux",
                  "blkid": "util-linux"}


# --------------------------------------------------------------------------- checks

def _which(tool: str) -> str | None:
    return shutil.which(tool, path=f"{os.environ.get('PATH', '')}:{SBIN_PATH}")


def _cgroup2_mount() -> Path | None:
    """Where the host mounts cgroup2 (/sys/fs/cgroup/unified when hybrid, /sys/fs/cgroup when unified)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split()[0] == "cgroup2":
                return Path(pre.split()[4].replace("\\040", " "))
    return None


def lab_unavailable() -> str | None:
    """Why the lab cannot run on this machine, or None."""
    if not sys.platform.startswith("linux"):
        return "the boot lab needs Linux"
    if os.geteuid() != 0:
        return "the boot lab needs root (namespaces, loop devices, mounts)"
    for tool, package in REQUIRED_TOOLS.items():
        if not _which(tool):
            return f"{tool} not found (apt-get install {package})"
    for ns in ("pid", "mnt", "net", "uts", "ipc", "cgroup"):
        if not os.path.exists(f"/proc/self/ns/{ns}"):
            return f"the kernel has no {ns} namespaces"
    if "overlay" not in Path("/proc/filesystems").read_text():
        subprocess.run(["modprobe", "overlay"], capture_output=True)
        if "overlay" not in Path("/proc/filesystems").read_text():
            return "overlayfs is not available (modprobe overlay failed)"
    if _cgroup2_mount() is None:
        return "no cgroup2 hierarchy is mounted on the host"
    if not _which("debootstrap"):
        cached = subprocess.run(["bash", str(ROOTFS_SCRIPT), "--check", str(CACHE_DIR)], capture_output=True)
        if cached.returncode != 0:
            return "debootstrap not found (apt-get install debootstrap) and no cached rootfs"
    return None


def _required() -> bool:
    return os.environ.get("BOOTLAB_REQUIRE", "") not in ("", "0")


def _skip(reason: str):
    if _required():
        pytest.fail(f"boot lab required (BOOTLAB_REQUIRE) but: {reason}", pytrace=False)
    pytest.skip(reason)


_UNAVAILABLE = lab_unavailable()
needs_lab = pytest.mark.skipif(_UNAVAILABLE is not None and not _required(),
                               reason=f"boot lab: {_UNAVAILABLE}") if pytest else None


# --------------------------------------------------------------------------- rootfs

_ROOTFS: dict[tuple[str, ...], Path] = {}


def rootfs(extra_packages: tuple[str, ...] | list[str] = ()) -> Path:
    """The cached bookworm tree (tools/bootlab-rootfs.sh builds it once: ~1 min with a fast mirror)."""
    key = tuple(sorted(extra_packages))
    if key in _ROOTFS:
        return _ROOTFS[key]
    reason = lab_unavailable()
    if reason:
        _skip(f"boot lab: {reason}")
    env = dict(os.environ)
    env["BOOTLAB_EXTRA_PACKAGES"] = " ".join(key)
    proc = subprocess.Popen(["bash", str(ROOTFS_SCRIPT), str(CACHE_DIR)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tail: list[str] = []
    for line in proc.stderr:  # progress, live with pytest -s
        sys.stderr.write(line)
        tail = (tail + [line.rstrip()])[-5:]
    out = proc.stdout.read()
    if proc.wait() in (3, 4):  # 3: a tool is missing, 4: debootstrap failed
        _skip(f"boot lab: cannot build the rootfs: {tail[-1] if tail else 'no output'}")
    if proc.returncode != 0:
        raise RuntimeError(f"tools/bootlab-rootfs.sh failed ({proc.returncode}):\n" + "\n".join(tail))
    path = Path(out.strip().splitlines()[-1])
    _ROOTFS[key] = path
    return path


# --------------------------------------------------------------------------- host helpers

def _sh(*cmd: str, check: bool = True, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    p = subprocess.run(list(cmd), input=input, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}")
    return p


def _starttime(pid: int) -> int | None:
    """Start time of a live process (None when gone or a zombie): with the PID, identifies it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in "ZXx" else int(fields[19])


def _alive(pid: int, start: int | None) -> bool:
    return start is not None and _starttime(pid) == start


_libc = ctypes.CDLL(None, use_errno=True)


def _pdeathsig() -> None:  # preexec_fn: die with the test process (PR_SET_PDEATHSIG = 1)
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)


def _kill(pid: int, start: int | None) -> None:
    if _alive(pid, start):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _rmtree_cgroup(path: Path, timeout: float = 10) -> None:
    """Kill what is left in a cgroup subtree and remove its directories, deepest first."""
    if not path.is_dir():
        return
    kill = path / "cgroup.kill"
    if kill.exists():
        try:
            kill.write_text("1")
        except OSError:
            pass
    deadline = time.monotonic() + timeout
    while True:
        dirs = sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [path]
        busy = []
        for d in dirs:
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                busy.append(d)
        if not busy:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"cgroup {path} still busy: {busy}")
        time.sleep(0.05)


def _detach_loop(device: str, image: str) -> None:
    back = _sh("losetup", "-n", "-O", "BACK-FILE", device, check=False).stdout.strip()
    if back and (back == image or back.startswith(image + " ")):  # " (deleted)"
        _sh("losetup", "-d", device, check=False)


def _cleanup(state: dict) -> None:
    """Release everything listed in a machine's state record; idempotent, never raises for 'already gone'."""
    errors = []
    for pid, start in state.get("pids", []):
        _kill(pid, start)
    for pid, start in state.get("pids", []):
        for _ in range(200):
            if not _alive(pid, start):
                break
            time.sleep(0.01)
    if state.get("cgroup"):
        try:
            _rmtree_cgroup(Path(state["cgroup"]))
        except RuntimeError as e:
            errors.append(str(e))
    for ns in state.get("netns", []):
        if Path("/run/netns", ns).exists():
            p = _sh("ip", "netns", "del", ns, check=False)
            if p.returncode != 0:
                errors.append(p.stderr.strip())
    if state.get("loop"):
        _detach_loop(state["loop"], state["image"])
    if errors:
        raise RuntimeError("boot lab cleanup: " + "; ".join(errors))


def reap_stale() -> None:
    """Clean up after machines whose test process died without cleaning (SIGKILL, OOM, power)."""
    if not STATE_DIR.is_dir():
        return
    for f in STATE_DIR.glob("*.json"):
        try:
            state = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        owner = state.get("owner", [0, None])
        if _alive(owner[0], owner[1]):
            continue
        try:
            _cleanup(state)
        except RuntimeError:
            continue
        f.unlink(missing_ok=True)


# --------------------------------------------------------------------------- IMDS

IMDS_SERVER = r'''
import base64, json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
host, port, conf = sys.argv[1], int(sys.argv[2]), sys.argv[3]
TOKEN = sys.argv[4]

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def reply(self, code, body=""):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def mode(self):
        with open(conf) as f:
            return json.load(f).get("mode", "up")
    def do_PUT(self):
        if self.mode() == "500":
            return self.reply(500)
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return self.reply(200, TOKEN)
        self.reply(400)
    def do_GET(self):
        if self.mode() == "500":
            return self.reply(500)
        if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
            return self.reply(401)  # IMDSv2 only
        with open(conf) as f:
            c = json.load(f)
        interfaces, paths = c["interfaces"], c.get("paths", {})
        if self.path == "/latest/user-data":
            return self.reply(200, base64.b64decode(c["user_data"])) if c.get("user_data") else self.reply(404)
        base = "/latest/meta-data/network/interfaces/macs/"
        if self.path == base:
            return self.reply(200, "\n".join(m + "/" for m in interfaces))
        for mac, eni in interfaces.items():
            if self.path == base + mac + "/interface-id":
                return self.reply(200, eni)
        rel = self.path[len("/latest/meta-data/"):] if self.path.startswith("/latest/meta-data/") else None
        if rel in paths:
            return self.reply(200, paths[rel])
        self.reply(404)

server = ThreadingHTTPServer((host, port), Handler)
print("ready", flush=True)
server.serve_forever()
'''


# --------------------------------------------------------------------------- S3

S3_ADDR = "198.51.100.3"  # TEST-NET-2: never a real address
ROLE = "mirrorcap-bootlab-host"
S3_CLIENT = r'''
import json, sys, boto3, urllib3
from botocore.config import Config
urllib3.disable_warnings()
addr, region, op, kwargs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
s3 = boto3.client("s3", region_name=region, endpoint_url="https://%s" % addr, verify=False,
                  aws_access_key_id="lab", aws_secret_access_key="lab", config=Config(s3={"addressing_style": "path"}))
if op == "dump":
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=kwargs["Bucket"]):
        for o in page.get("Contents", []):
            out[o["Key"]] = s3.get_object(Bucket=kwargs["Bucket"], Key=o["Key"])["Body"].read().hex()
    print(json.dumps(out))
else:
    getattr(s3, op)(**kwargs)
    print("{}")
'''


def _role_paths() -> dict[str, str]:
    """IMDS answers for the instance role's credentials (what the AWS CLI fetches by itself)."""
    creds = {"Code": "Success", "LastUpdated": "2026-01-01T00:00:00Z", "Type": "AWS-HMAC",
             "AccessKeyId": "ASIABOOTLABEXAMPLE00", "SecretAccessKey": "bootlab-secret", "Token": "bootlab-token",
             "Expiration": "2099-01-01T00:00:00Z"}
    return {"iam/security-credentials/": ROLE, f"iam/security-credentials/{ROLE}": json.dumps(creds)}


def _lab_certificate(d: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """(certificate, key, CA certificate) for `names`, signed by a lab CA made for it (openssl)."""
    cert, key, ca = d / "server.crt", d / "server.key", d / "ca.crt"
    if cert.exists():
        return cert, key, ca
    d.mkdir(parents=True, exist_ok=True)
    ca_key = d / "ca.key"
    _sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=mirrorcap bootlab CA",
        "-keyout", str(ca_key), "-out", str(ca))
    _sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={names[0]}", "-keyout", str(key),
        "-out", str(d / "server.csr"))
    (d / "ext.cnf").write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n")
    _sh("openssl", "x509", "-req", "-in", str(d / "server.csr"), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(d / "ext.cnf"), "-out", str(cert))
    return cert, key, ca


# --------------------------------------------------------------------------- launcher (PID 1 until it execs systemd)

LAUNCHER = r'''
set -eu
fail() { echo "bootlab-launch: $*" >&2; exit 1; }
R=$BOOTLAB_ROOT
if [ -n "$BOOTLAB_LOWER" ]; then
  mount -t overlay overlay -o "lowerdir=$BOOTLAB_LOWER,upperdir=$BOOTLAB_UPPER,workdir=$BOOTLAB_WORK" "$R" || fail "overlay mount failed"
else
  mount --bind "$BOOTLAB_COPY" "$R"
fi
# /proc of the machine's pid namespace; /proc/sys read-only but for /proc/sys/net (per netns).
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
mount --bind "$R/proc/sys" "$R/proc/sys"
mount --bind "$R/proc/sys/net" "$R/proc/sys/net"
mount -o remount,bind,ro,nosuid,nodev,noexec "$R/proc/sys"
if [ -e "$R/proc/sysrq-trigger" ]; then
  mount --bind "$R/proc/sysrq-trigger" "$R/proc/sysrq-trigger"
  mount -o remount,bind,ro "$R/proc/sysrq-trigger"
fi
# A boot ID of its own per boot (the kernel's is the host's, shared by every lab boot): journalctl -b -1 works.
mount --bind "$BOOTLAB_BOOT_ID" "$R/proc/sys/kernel/random/boot_id"
mount -o remount,bind,ro "$R/proc/sys/kernel/random/boot_id"
# sysfs of this netns, read-only (no device units, no writes to host devices); own cgroup2 root.
mount -t sysfs -o "$BOOTLAB_SYSFS,nosuid,nodev,noexec" sysfs "$R/sys"
mount -t cgroup2 -o rw,nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"
# /dev
mount -t tmpfs -o mode=0755,nosuid,size=65536k tmpfs "$R/dev"
D=$R/dev
mknod -m 0666 "$D/null" c 1 3; mknod -m 0666 "$D/zero" c 1 5; mknod -m 0666 "$D/full" c 1 7
mknod -m 0666 "$D/random" c 1 8; mknod -m 0666 "$D/urandom" c 1 9; mknod -m 0666 "$D/tty" c 5 0
mkdir -m 0755 "$D/pts" "$D/shm" "$D/net"
mknod -m 0666 "$D/net/tun" c 10 200
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5,nosuid,noexec devpts "$D/pts"
ln -s pts/ptmx "$D/ptmx"
ln -s /proc/self/fd "$D/fd"; ln -s /proc/self/fd/0 "$D/stdin"
ln -s /proc/self/fd/1 "$D/stdout"; ln -s /proc/self/fd/2 "$D/stderr"
ln -s /proc/kcore "$D/core"
touch "$D/console"; chmod 0600 "$D/console"
mount --bind "$(readlink /proc/self/fd/0)" "$D/console"
# udev's coldplug, done by the lab: device nodes, /dev/disk links and (rw /sys) the udev database
# that systemd reads at startup to create its device units. Generated by Machine._device_script().
U=""
if [ "$BOOTLAB_SYSFS" = rw ]; then
  mount -t tmpfs -o mode=0755,nosuid,nodev,size=20%,nr_inodes=800k tmpfs "$R/run"
  U=$R/run/udev
  mkdir -p "$U/data" "$U/tags/systemd"
fi
eval "$BOOTLAB_DEVSCRIPT"
echo "$BOOTLAB_HOSTNAME" > /proc/sys/kernel/hostname  # this UTS namespace's; systemd keeps it (no /etc/hostname)
cd "$R"
if pivot_root . . 2>/dev/null; then
  umount -l .
else
  exec chroot . /usr/bin/env -i container="$CONTAINER" TERM=vt220 /lib/systemd/systemd --system --log-color=no
fi
cd /
exec /usr/bin/env -i container="$CONTAINER" TERM=vt220 /lib/systemd/systemd --system --log-color=no
'''


# --------------------------------------------------------------------------- the machine

class Machine:
    """One lab machine: a root disk (overlay), a mirror ENI, an optional pcap volume, a fake IMDS."""

    _seq = 0

    def __init__(self, rootfs: Path, workdir: Path, name: str, *, eni_id: str, volume_id: str | None,
                 volume_mib: int = 400, mirror_mtu: int = 9001, sender_mtu: int | None = None,
                 mirror_mac: str = DEFAULT_MIRROR_MAC,
                 mirror_ip: str | None = "10.0.6.10/24", sender_ip: str | None = "10.0.6.1/24",
                 hostname: str | None = None, sysfs: str = "rw", instance_id: str | None = None,
                 ebs_device_name: str | None = None):
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,40}", name):
            raise ValueError(f"machine name {name!r}: lowercase letters, digits and dashes")
        Machine._seq += 1
        self.rootfs = Path(rootfs)
        self.workdir = Path(workdir)
        self.name = name
        self.hostname = hostname or name
        self.sysfs = sysfs
        self.eni_id = eni_id
        self.volume_id = volume_id
        self.volume_mib = volume_mib
        self.mirror_mtu = mirror_mtu
        self.sender_mtu = sender_mtu or mirror_mtu
        self.imds_mode = "up"
        self.imds_user_data = ""  # base64 of what GET /latest/user-data answers (install_user_data sets it)
        self.mirror_iface = MIRROR_IFACE
        self.mirror_mac = mirror_mac
        self.mirror_ip = mirror_ip
        self.sender_ip = sender_ip
        self.sender_mac = DEFAULT_SENDER_MAC
        self.sender_iface = "sender0"
        self.imds_interfaces = {mirror_mac: eni_id}
        self.instance_id = instance_id or "i-0" + uuid.uuid5(uuid.NAMESPACE_DNS, name).hex[:16]
        self.ebs_device_name = ebs_device_name
        self.imds_paths: dict[str, str] = {"instance-id": self.instance_id, **_role_paths()}
        self._s3: subprocess.Popen | None = None
        self.s3_region: str | None = None
        tag = f"bootlab-{os.getpid()}-{Machine._seq}-{name}"
        self.id = tag
        self.netns = f"{tag}-m"
        self.sender_netns = f"{tag}-s"
        self.console_log = self.workdir / "console.log"
        self.volume_image = self.workdir / f"volume-{volume_id}.img" if volume_id else None
        self.loop_device: str | None = None
        self.volume_node: str | None = None
        self.by_id_link = f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}" if volume_id else None
        self.pid: int | None = None
        self.boots = 0
        self._upper = self.workdir / "overlay" / "upper"
        self._work = self.workdir / "overlay" / "work"
        self._mnt = self.workdir / "root"
        self._copy = self.workdir / "copy"
        self._overlay: bool | None = None
        self._opened = False
        self._launcher: subprocess.Popen | None = None
        self._console: subprocess.Popen | None = None
        self._imds: subprocess.Popen | None = None
        self._cgroup: Path | None = None  # the machine's cgroup2 root on the host, while booted
        self._state_file = STATE_DIR / f"{tag}.json"
        self._pids: dict[str, tuple[int, int | None]] = {}

    # ---- lifecycle

    def __enter__(self) -> Machine:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        """Create the network namespaces, the IMDS and the volume (boot() calls it if needed)."""
        if self._opened:
            return
        reason = lab_unavailable()
        if reason:
            _skip(f"boot lab: {reason}")
        reap_stale()
        self._opened = True
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            for d in (self._upper, self._work, self._mnt):
                d.mkdir(parents=True, exist_ok=True)
            self._save_state()
            self._make_network()
            self._start_imds()
            if self.volume_id:
                self._attach_volume()
            self._decide_root()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Kill the machine and release everything but the workdir (disk, volume image, console log). Idempotent."""
        try:
            self.shutdown()
        finally:
            state = self._state()
            self._pids.clear()
            self.loop_device = None
            self._opened = False
            try:
                _cleanup(state)
            finally:
                if self._s3 is not None:
                    self._s3.kill()
                    self._s3.wait()
                    self._s3 = None
                if self._imds is not None:
                    self._imds.kill()
                    self._imds.wait()
                    self._imds.stdout.close()
                    self._imds.stderr.close()
                    self._imds = None
            self._state_file.unlink(missing_ok=True)

    def _state(self) -> dict:
        return {
            "owner": [os.getpid(), _starttime(os.getpid())],
            "pids": [list(v) for v in self._pids.values()],
            "netns": [self.netns, self.sender_netns],
            "cgroup": str(self._cgroup) if self._cgroup else None,
            "loop": self.loop_device,
            "image": str(self.volume_image) if self.volume_image else None,
        }

    def _save_state(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state()))
        tmp.replace(self._state_file)

    def _track(self, key: str, pid: int | None) -> None:
        if pid is None:
            self._pids.pop(key, None)
        else:
            self._pids[key] = (pid, _starttime(pid))
        self._save_state()

    # ---- network + IMDS

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

    def _write_imds_conf(self) -> None:
        conf = self.workdir / "imds.json"
        tmp = conf.with_suffix(".tmp")
        tmp.write_text(json.dumps({"interfaces": self.imds_interfaces, "paths": self.imds_paths, "mode": self.imds_mode,
                                   "user_data": self.imds_user_data}))
        tmp.replace(conf)

    def set_imds_interfaces(self, interfaces: dict[str, str], paths: dict[str, str] | None = None) -> None:
        """Change what the IMDS answers ({mac: eni_id}; paths under /latest/meta-data/), live."""
        self.imds_interfaces = dict(interfaces)
        if paths is not None:
            self.imds_paths = dict(paths)
        self._write_imds_conf()

    def set_imds_user_data(self, text: str) -> None:
        """The instance's user data as IMDS gives it, gzipped (the stack's base64gzip), live: what a
        deploy that changed it leaves for the next boot (AWS stops the instance, modifies, starts it)."""
        self.imds_user_data = base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode()
        self._write_imds_conf()

    def set_imds(self, mode: str) -> None:
        """The IMDS's health, live: "up", "500" (every request answered 500) or "refuse" (its
        server stopped: connections to 169.254.169.254:80 are refused)."""
        if mode not in ("up", "500", "refuse"):
            raise ValueError(mode)
        self.imds_mode = mode
        self._write_imds_conf()
        running = self._imds is not None and self._imds.poll() is None
        if mode == "refuse" and running:
            self._imds.kill()
            self._imds.wait()
            self._imds.stdout.close()
            self._imds.stderr.close()
            self._imds = None
            self._track("imds", None)
        elif mode != "refuse" and not running:
            self._start_imds()

    def _start_imds(self) -> None:
        self._write_imds_conf()
        self._imds = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.netns}", sys.executable, "-c", IMDS_SERVER,
             IMDS_ADDR, "80", str(self.workdir / "imds.json"), IMDS_TOKEN],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_pdeathsig)
        self._track("imds", self._imds.pid)
        if self._imds.stdout.readline().strip() != "ready":
            raise RuntimeError(f"fake IMDS did not start: {self._imds.stderr.read()}")

    # ---- S3

    def serve_s3(self, region: str, buckets: list[str] | tuple[str, ...] = ()) -> None:
        """Start S3 (moto server) for this machine under its real endpoint names; create `buckets`.
        Before boot or live: the CA and /etc/hosts go into the machine either way."""
        self.open()
        self.s3_region = region
        names = [f"s3.{region}.amazonaws.com", *(f"{b}.s3.{region}.amazonaws.com" for b in buckets)]
        cert, key, ca = _lab_certificate(self.workdir / "s3-tls", [f"s3.{region}.amazonaws.com", f"*.s3.{region}.amazonaws.com"])
        self.write_file("/usr/local/share/ca-certificates/mirrorcap-bootlab-s3.crt", ca.read_text())
        hosts = self.read_file("/etc/hosts") if (self.pid or self._exists_offline("/etc/hosts")) else ""
        self.write_file("/etc/hosts", hosts + f"{S3_ADDR} {' '.join(names)}\n")
        if self.pid:
            self.run("update-ca-certificates", check=True)
        else:
            self._offline("update-ca-certificates")
        _sh("ip", "-n", self.netns, "addr", "add", f"{S3_ADDR}/32", "dev", "lo")
        log = self.workdir / "s3.log"
        with open(log, "wb") as out:
            self._s3 = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.netns}", str(Path(sys.executable).parent / "moto_server"),
                 "-H", "0.0.0.0", "-p", "443", "-c", str(cert), "-k", str(key)],
                stdout=out, stderr=subprocess.STDOUT, preexec_fn=_pdeathsig)
        self._track("s3", self._s3.pid)
        deadline = time.monotonic() + 30
        while b"Running on" not in log.read_bytes():
            if self._s3.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        for bucket in buckets:
            self._s3_call("create_bucket", Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})

    def set_s3_reachable(self, reachable: bool) -> None:
        """An S3 outage for the machine (its address is gone: connections fail at once), or its end."""
        _sh("ip", "-n", self.netns, "addr", "add" if reachable else "del", f"{S3_ADDR}/32", "dev", "lo")

    def s3_objects(self, bucket: str) -> dict[str, bytes]:
        """Every object of `bucket` as the S3 server holds it."""
        return {k: bytes.fromhex(v) for k, v in self._s3_call("dump", Bucket=bucket).items()}

    def _s3_call(self, op: str, **kwargs):
        """boto3 against the machine's S3, from the host in the machine's netns (its server is only there)."""
        # 127.0.0.1 (the server listens on every address of the netns): reachable during an outage too.
        p = _sh("nsenter", f"--net=/run/netns/{self.netns}", sys.executable, "-c", S3_CLIENT, "127.0.0.1",
                self.s3_region, op, json.dumps(kwargs), check=False, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"S3 {op}: {p.stderr.strip()[-2000:]}")
        return json.loads(p.stdout)

    # ---- volume

    def _attach_volume(self) -> None:
        img = self.volume_image
        if not img.exists():
            with open(img, "wb") as f:
                f.truncate(self.volume_mib * 1024 * 1024)  # sparse
        for _ in range(10):  # another process may grab the same free loop device
            p = _sh("losetup", "--find", "--show", str(img), check=False)
            if p.returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"losetup {img}: {p.stderr.strip()}")
        self.loop_device = p.stdout.strip()
        self._save_state()
        self.volume_node = "/dev/" + Path(self.loop_device).name

    def _device_script(self, probe: bool = True) -> str:
        """Shell commands (on $D = the machine's /dev, $U = its /run/udev or empty) that do what udev
        does on EC2 for the volume and the mirror ENI: the node, /dev/disk/by-id (the NVMe EBS name),
        by-uuid and by-label (from a blkid probe), /dev/block/MAJ:MIN, and the udev database entries
        tagged "systemd" from which systemd makes its .device units."""
        lines = []
        now = time.monotonic_ns() // 1000
        if self.loop_device:
            node = Path(self.loop_device).name
            major, minor = Path(f"/sys/block/{node}/dev").read_text().strip().split(":")
            links = [f"disk/by-id/{Path(self.by_id_link).name}"]
            props = {"DEVTYPE": "disk", "ID_MODEL": "Amazon Elastic Block Store",
                     "ID_SERIAL_SHORT": self.volume_id.replace("-", "")}
            fs = {}
            if probe:
                out = _sh("blkid", "-p", "-o", "export", self.loop_device, check=False).stdout
                fs = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
            if re.fullmatch(r"[0-9a-fA-F-]+", fs.get("UUID", "")):
                links.append(f"disk/by-uuid/{fs['UUID']}")
            if re.fullmatch(r"[A-Za-z0-9._-]+", fs.get("LABEL", "")):
                links.append(f"disk/by-label/{fs['LABEL']}")
            for key in ("UUID", "TYPE", "LABEL", "USAGE", "VERSION"):
                if key in fs:
                    props[f"ID_FS_{key}"] = fs[key]
            lines += [f'[ -b "$D/{node}" ] || mknod -m 0660 "$D/{node}" b {major} {minor}',
                      f'chgrp 6 "$D/{node}"', 'mkdir -p "$D/block"', f'ln -sfn ../{node} "$D/block/{major}:{minor}"']
            for link in links:
                lines += [f'mkdir -p "$D/{Path(link).parent}"', f'ln -sfn ../../{node} "$D/{link}"']
            if self.ebs_device_name:
                lines.append(f'ln -sfn {node} "$D/{self.ebs_device_name}"')
            db = [*(f"S:{link}" for link in links), f"I:{now}", *(f"E:{k}={v}" for k, v in props.items()),
                  "G:systemd", "Q:systemd", "V:1"]
            lines.append(f'if [ -n "$U" ]; then printf "%s\\n" {shlex.join(db)} > "$U/data/b{major}:{minor}"; '
                         f': > "$U/tags/systemd/b{major}:{minor}"; fi')
        ifindex = self._ifindex(self.mirror_iface)
        if ifindex:
            db = [f"I:{now}", "E:ID_NET_DRIVER=veth", "G:systemd", "Q:systemd", "V:1"]
            lines.append(f'if [ -n "$U" ]; then printf "%s\\n" {shlex.join(db)} > "$U/data/n{ifindex}"; '
                         f': > "$U/tags/systemd/n{ifindex}"; fi')
        return "\n".join(lines) + "\n"

    def _ifindex(self, iface: str) -> int | None:
        out = _sh("ip", "-n", self.netns, "-j", "link", "show", "dev", iface, check=False).stdout
        return json.loads(out)[0]["ifindex"] if out.strip() else None

    # ---- the root disk

    def _decide_root(self) -> None:
        """Overlay if the kernel mounts one here, else a one-time copy of the rootfs."""
        if self._copy.exists():
            self._overlay = False
            return
        probe = _sh("unshare", "--mount", "--propagation", "private", "mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={self.rootfs},upperdir={self._upper},workdir={self._work}", str(self._mnt), check=False)
        if probe.returncode == 0:
            self._overlay = True
            return
        sys.stderr.write(f"bootlab: overlay mount failed ({probe.stderr.strip()}): copying the rootfs instead\n")
        tmp = self.workdir / "copy.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        _sh("cp", "-a", "--one-file-system", str(self.rootfs), str(tmp), timeout=600)
        tmp.rename(self._copy)
        self._overlay = False

    def _offline(self, *cmd: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command chrooted in the machine's disk while it is not booted (kernel path resolution)."""
        if self.pid:
            raise RuntimeError("the machine is booted: use run()")
        if self._overlay is None:
            self._decide_root()
        if self._overlay:
            mnt = f"mount -t overlay overlay -o lowerdir={shlex.quote(str(self.rootfs))},upperdir={shlex.quote(str(self._upper))},workdir={shlex.quote(str(self._work))} {shlex.quote(str(self._mnt))}"
        else:
            mnt = f"mount --bind {shlex.quote(str(self._copy))} {shlex.quote(str(self._mnt))}"
        script = f'{mnt} && exec chroot {shlex.quote(str(self._mnt))} "$@"'
        p = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *cmd],
                           input=input, capture_output=True, text=True, env=MACHINE_ENV, timeout=600)
        if check and p.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} in the machine's disk failed ({p.returncode}): {p.stderr.strip()}")
        return p

    def chroot_run(self, *cmd: str, input: str | None = None, check: bool = False) -> subprocess.CompletedProcess:
        """Before boot: run a command chrooted in the machine's disk (no /proc, no systemd), like an image build step."""
        return self._offline(*cmd, input=input, check=check)

    def _exists_offline(self, path: str) -> bool:
        return self._offline("test", "-e", path, check=False).returncode == 0

    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file in the machine (parents created 0755): into its disk before boot, live when booted."""
        script = ('set -e; umask 022; mkdir -p "$(dirname "$1")"; cat > "$1.bootlab-new"; '
                  'chmod "$2" "$1.bootlab-new"; mv -f "$1.bootlab-new" "$1"')
        args = ("sh", "-c", script, "sh", path, f"{mode:o}")
        if self.pid:
            p = self.run(*args, input=text)
            if p.returncode != 0:
                raise RuntimeError(f"write {path} in the machine: {p.stderr.strip()}")
        else:
            self._offline(*args, input=text)

    def read_file(self, path: str) -> str:
        """A file's text in the machine (booted: its live view, mounts included; else its disk)."""
        p = self.run("cat", path) if self.pid else self._offline("cat", path, check=False)
        if p.returncode != 0:
            raise FileNotFoundError(f"{path} in the machine: {p.stderr.strip()}")
        return p.stdout

    def path(self, p: str) -> Path:
        """Host path of a file in the booted machine's view (/proc/<pid1>/root/...; its mounts included).
        Absolute symlinks inside are resolved against the host's root: use run() or read_file() for those."""
        if not self.pid:
            raise RuntimeError("the machine is not booted")
        return Path(f"/proc/{self.pid}/root") / p.lstrip("/")

    def install_user_data(self, text: str) -> None:
        """cloud-init stand-in: the user data runs once per instance, after network-online.target and
        multi-user.target (as cloud-final on Debian), output in the journal and on the console.
        Like cloud-init, the per-instance semaphore is taken before the script runs: a script that
        failed (unit failed, system degraded) is not run again on the next boot either."""
        self.set_imds_user_data(text)
        self.write_file(f"{CLOUD_DIR}/user-data.txt", text, 0o600)
        self.write_file(f"{CLOUD_DIR}/scripts/part-001", text, 0o700)
        self.write_file(f"/etc/systemd/system/{USER_DATA_UNIT}", f"""\
# bootlab: stands in for cloud-init's scripts-user (cloud-final.service)
[Unit]
Description=bootlab: run the user data once per instance (cloud-init stand-in)
Wants=network-online.target
After=network-online.target multi-user.target
ConditionPathExists=!{CLOUD_DIR}/sem/config_scripts_user

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStartPre=/bin/sh -c 'mkdir -p {CLOUD_DIR}/sem && date -u +%%s > {CLOUD_DIR}/sem/config_scripts_user'
ExecStart={CLOUD_DIR}/scripts/part-001
TimeoutSec=0
KillMode=process
TasksMax=infinity
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
""")
        link = f"/etc/systemd/system/multi-user.target.wants/{USER_DATA_UNIT}"
        if self.pid:
            self.run("systemctl", "daemon-reload", check=True)
            self.run("systemctl", "enable", USER_DATA_UNIT, check=True)
        else:
            self._offline("sh", "-c", f'mkdir -p "$(dirname {link})" && ln -sf ../{USER_DATA_UNIT} {link}')

    # ---- boot / shutdown

    def boot(self, timeout: float = 120, until: tuple[str, ...] = ("running", "degraded")) -> str:
        """Start systemd as PID 1 and wait until `systemctl is-system-running` is one of `until`
        (add "starting" for a boot whose start jobs may legitimately wait, e.g. for a volume)."""
        if self.pid:
            raise RuntimeError("already booted")
        self.open()
        cg_root = _cgroup2_mount() / "mirrorcap-bootlab"
        cg_root.mkdir(exist_ok=True)
        self._cgroup = cg_root / self.id
        if self._cgroup.exists():
            _rmtree_cgroup(self._cgroup)
        self._cgroup.mkdir()
        self._save_state()
        self.boots += 1
        with open(self.console_log, "ab") as log:
            log.write(f"\n===== bootlab: boot {self.boots} of {self.name} =====\n".encode())
        boot_id = self.workdir / "boot_id"
        boot_id.write_text(f"{uuid.uuid4()}\n")
        master, slave = os.openpty()
        try:
            with open(self.console_log, "ab") as log:
                self._console = subprocess.Popen(["cat"], stdin=master, stdout=log, stderr=subprocess.DEVNULL,
                                                 preexec_fn=_pdeathsig)
            self._track("console", self._console.pid)
            env = {
                "PATH": SBIN_PATH, "CONTAINER": CONTAINER, "BOOTLAB_ROOT": str(self._mnt),
                "BOOTLAB_LOWER": str(self.rootfs) if self._overlay else "",
                "BOOTLAB_UPPER": str(self._upper), "BOOTLAB_WORK": str(self._work), "BOOTLAB_COPY": str(self._copy),
                "BOOTLAB_HOSTNAME": self.hostname, "BOOTLAB_SYSFS": self.sysfs, "BOOTLAB_CGROUP": str(self._cgroup),
                "BOOTLAB_DEVSCRIPT": self._device_script(), "BOOTLAB_BOOT_ID": str(boot_id),
            }
            argv = ["sh", "-c", 'echo $$ > "$BOOTLAB_CGROUP/cgroup.procs" && exec "$@"', "sh",
                    "nsenter", f"--net=/run/netns/{self.netns}",
                    "unshare", "--pid", "--fork", "--kill-child", "--mount", "--uts", "--ipc", "--cgroup",
                    "--propagation", "private", "sh", "-c", LAUNCHER]
            self._launcher = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                              start_new_session=True, preexec_fn=_pdeathsig)
        finally:
            os.close(slave)
            os.close(master)
        self._track("launcher", self._launcher.pid)
        try:
            return self._wait_booted(timeout, until)
        except BaseException:
            self.shutdown()
            raise

    @property
    def cgroup(self) -> Path | None:
        """Host path of the machine's cgroup (the root of its cgroup namespace), while booted."""
        return self._cgroup

    def _find_pid1(self) -> int | None:
        lp = self._launcher.pid
        try:
            children = Path(f"/proc/{lp}/task/{lp}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def _wait_booted(self, timeout: float, until: tuple[str, ...] = ("running", "degraded")) -> str:
        deadline = time.monotonic() + timeout
        state = "no PID 1 yet"
        while time.monotonic() < deadline:
            if self._launcher.poll() is not None:
                raise RuntimeError(f"{self.name}: PID 1 exited ({self._launcher.returncode}) during boot:\n"
                                   + self.console_tail())
            if not self.pid:
                pid = self._find_pid1()
                try:
                    exe = os.readlink(f"/proc/{pid}/exe") if pid else ""
                except OSError:
                    exe = ""
                if exe.endswith("/systemd/systemd"):
                    self.pid = pid
                    self._track("pid1", pid)
            if self.pid:
                try:
                    state = self.run("systemctl", "is-system-running", timeout=10).stdout.strip() or "offline"
                except subprocess.TimeoutExpired:
                    state = "not answering"
                if state in until:
                    return state
                if state in ("maintenance", "stopping"):
                    break
            time.sleep(0.2)
        jobs = warnings = ""
        if self.pid:
            jobs = self.run("systemctl", "list-jobs", "--no-legend", timeout=10).stdout
            warnings = self.run("journalctl", "-b", "-p", "warning", "-n", "30", "--no-pager", timeout=10).stdout
        raise TimeoutError(f"{self.name}: not booted after {timeout:.0f} s (state {state}); jobs:\n{jobs}\n"
                           f"warnings in the journal:\n{warnings}\nconsole:\n{self.console_tail()}")

    def shutdown(self) -> None:
        """Power cut: SIGKILL PID 1 (the kernel kills the rest of the machine), keep disk and volume."""
        if self._launcher is not None:
            # PID 1 is the launcher's (unshare's) only child; before the fork, kill the launcher itself.
            target = self._find_pid1() if self._launcher.poll() is None else None
            try:
                os.kill(target or self._launcher.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self._launcher.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._launcher.kill()
                self._launcher.wait(timeout=30)
            self._launcher = None
        self.pid = None
        self._pids.pop("pid1", None)
        self._pids.pop("launcher", None)
        if self._console is not None:
            try:
                self._console.wait(timeout=10)  # EOF once every holder of the console pty is gone
            except subprocess.TimeoutExpired:
                self._console.kill()
                self._console.wait()
            self._console = None
            self._pids.pop("console", None)
        if self._cgroup is not None:
            _rmtree_cgroup(self._cgroup)
            self._cgroup = None
        if self._opened:
            self._save_state()

    def reboot(self, timeout: float = 120) -> str:
        self.shutdown()
        return self.boot(timeout=timeout)

    # ---- inside the machine

    def run(self, *cmd: str, check: bool = False, timeout: float = 60, input: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a command in the booted machine (all its namespaces, its root), text output."""
        if not self.pid:
            raise RuntimeError("the machine is not booted")
        argv = ["nsenter", "-t", str(self.pid), "-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w", "--", *cmd]
        p = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout,
                           env={**MACHINE_ENV, **(env or {})})
        if check and p.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} in {self.name} failed ({p.returncode}):\n{p.stdout}{p.stderr}")
        return p

    def sender(self, *cmd: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a host command in the sender's network namespace (tcpreplay -i m.sender_iface ...)."""
        return _sh("ip", "netns", "exec", self.sender_netns, *cmd, check=check, timeout=timeout)

    def unit_state(self, unit: str) -> str:
        """ActiveState of a unit: active, inactive, failed, activating, ..."""
        return self.run("systemctl", "show", "-P", "ActiveState", unit).stdout.strip()

    def unit_show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, *(f"-p{p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_unit(self, unit: str, states: tuple[str, ...] = ("active",), timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = self.unit_state(unit)
            if state in states or time.monotonic() > deadline:
                return state
            time.sleep(0.2)

    def journal(self, unit: str | None = None, *args: str, boot: str | None = None) -> str:
        """Journal messages (-o cat) of a unit (or all), of every boot unless boot= ("0": this one, "-1": the one before)."""
        cmd = ["journalctl", "--no-pager", "-q", "-o", "cat"]
        if unit:
            cmd += ["-u", unit]
        if boot is not None:
            cmd += ["-b", boot]
        return self.run(*cmd, *args).stdout

    def failed_units(self) -> list[str]:
        out = self.run("systemctl", "list-units", "--failed", "--plain", "--no-legend").stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def console_tail(self, lines: int = 40) -> str:
        try:
            text = self.console_log.read_bytes().decode(errors="replace").replace("\r", "")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def attach_volume(self, volume_id: str | None = None) -> None:
        """Attach the pcap volume, also to a running machine (an EBS attachment arriving after boot).
        volume_id: for a machine made with volume_id=None (its image: workdir/volume-<id>.img, volume_mib)."""
        if volume_id and volume_id != self.volume_id:
            if self.loop_device:
                raise ValueError(f"volume {self.volume_id} is already attached")
            self.volume_id = volume_id
            self.volume_image = self.workdir / f"volume-{volume_id}.img"
            self.by_id_link = f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}"
        if not self.volume_id:
            raise ValueError("no volume_id")
        self.open()
        if not self.loop_device:
            self._attach_volume()
        if self.pid:
            script = 'D=/dev; U=""; [ -w /sys ] && U=/run/udev && mkdir -p $U/data $U/tags/systemd\n'
            self.run("sh", "-ec", script + self._device_script(), check=True)

if __name__ == "__main__":  # pragma: no cover
    print(__doc__)
