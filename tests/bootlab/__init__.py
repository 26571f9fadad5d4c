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
        m.cloudwatch("get_metric_statistics", ...) # what the machine published to CloudWatch (the same moto server)
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
  memory for the machine's lifetime; an outage removes the address. The same
  server answers CloudWatch at monitoring.<region>.amazonaws.com (in the
  certificate and /etc/hosts too); ``m.cloudwatch(op, **kwargs)`` reads it.
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

The package: lab.py (checks, the cached root, the host's processes, namespaces, loop
devices and cgroups, cleaned up), machine.py (boot, shutdown, enter), network.py, imds.py,
s3.py, volume.py (each a part of Machine), traffic.py (AWS-shaped VXLAN, replayed).
"""

from .lab import CACHE_DIR, CONTAINER, STATE_DIR, USER_DATA_UNIT, lab_unavailable, needs_lab, reap_stale, rootfs
from .machine import Machine

__all__ = ["CACHE_DIR", "CONTAINER", "STATE_DIR", "USER_DATA_UNIT", "Machine", "lab_unavailable", "needs_lab", "reap_stale",
           "rootfs"]
