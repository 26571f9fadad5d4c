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
TERMSHARK_VERSION=v2.4.0

if command -v dnf >/dev/null 2>&1 && [ "${MIRRORCAP_SKIP_PACKAGES:-0}" != 1 ]; then
  dnf install -y -q tcpdump wireshark-cli xfsprogs iproute curl-minimal
  if ! command -v termshark >/dev/null 2>&1; then
    dnf install -y -q golang
    build=$(mktemp -d)
    GOPATH="$build/go" GOCACHE="$build/cache" GOBIN=/usr/local/bin GOFLAGS=-trimpath \
      go install "github.com/gcla/termshark/v2/cmd/termshark@$TERMSHARK_VERSION"
    rm -rf "$build"
    dnf remove -y -q golang
  fi
fi

# Capture identity: tcpdump drops to mirrorcap; people who may read pcaps
# join pcap (usermod -aG pcap <user>).
getent group pcap >/dev/null || groupadd --system pcap
id -u mirrorcap >/dev/null 2>&1 || useradd --system --gid pcap --no-create-home --home-dir /nonexistent --shell /sbin/nologin mirrorcap

install -d -m 0755 /usr/local/libexec/mirrorcap /etc/mirrorcap

cat > '/usr/local/libexec/mirrorcap/storage.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_STORAGE'
#!/bin/bash
# mirrorcap-storage: mount the pcap EBS volume at /var/log/tcpdump.
# Finds the device from the volume ID (NVMe by-id link on Nitro, the attached
# device name on Xen), creates xfs ONLY on a device with no file system and no
# partition table, mounts it, keeps one fstab line by UUID with nofail.
# Safe to run again and again: a volume that holds pcaps is never formatted.
set -euo pipefail

ENV_FILE=${MIRRORCAP_ENV_FILE:-/etc/mirrorcap/mirrorcap.env}
# shellcheck source=/dev/null
. "$ENV_FILE"
VOLUME_ID=${MIRRORCAP_VOLUME_ID:?MIRRORCAP_VOLUME_ID missing from $ENV_FILE}
DIR=${MIRRORCAP_CAPTURE_DIR:-/var/log/tcpdump}
BY_ID_DIR=${MIRRORCAP_BY_ID_DIR:-/dev/disk/by-id}
FSTAB=${MIRRORCAP_FSTAB:-/etc/fstab}
XEN_DEVICE=${MIRRORCAP_XEN_DEVICE:-/dev/xvdf}
WAIT_SECONDS=${MIRRORCAP_DEVICE_WAIT_SECONDS:-300}
CAPTURE_USER=${MIRRORCAP_USER:-mirrorcap}
CAPTURE_GROUP=${MIRRORCAP_GROUP:-pcap}

die() { echo "mirrorcap-storage: $*" >&2; exit 1; }

[[ $VOLUME_ID =~ ^vol-[0-9a-f]{8}([0-9a-f]{9})?$ ]] || die "MIRRORCAP_VOLUME_ID=$VOLUME_ID is not an EBS volume ID (vol-...)"

# NVMe serials drop the dash: vol-0abc -> nvme-Amazon_Elastic_Block_Store_vol0abc
nvme_link="$BY_ID_DIR/nvme-Amazon_Elastic_Block_Store_${VOLUME_ID/-/}"
device=""
for ((waited = 0; waited <= WAIT_SECONDS; waited++)); do
  if [ -e "$nvme_link" ]; then device=$(readlink -f "$nvme_link"); break; fi
  if [ -b "$XEN_DEVICE" ] && [ ! -d "$BY_ID_DIR" ]; then device=$XEN_DEVICE; break; fi
  sleep 1
done
[ -n "$device" ] || die "volume $VOLUME_ID did not appear as $nvme_link within ${WAIT_SECONDS}s: is it attached to this instance?"
[ -b "$device" ] || die "$device (volume $VOLUME_ID) is not a block device"

# -p probes the device itself, not the blkid cache.
fstype=$(blkid -p -o value -s TYPE "$device" || true)
pttype=$(blkid -p -o value -s PTTYPE "$device" || true)
if [ -z "$fstype" ]; then
  [ -z "$pttype" ] || die "$device has a $pttype partition table and no file system: refusing to format it; wipe it deliberately first"
  echo "mirrorcap-storage: $device is empty: creating xfs"
  # No -f: mkfs.xfs itself refuses to overwrite an existing file system.
  mkfs.xfs -q -L mirrorcap "$device"  # xfs labels: 12 characters at most
  fstype=xfs
elif [ "$fstype" != xfs ]; then
  die "$device holds a $fstype file system, not xfs: refusing to touch it"
fi
uuid=$(blkid -p -o value -s UUID "$device")
[ -n "$uuid" ] || die "could not read the file system UUID of $device"

# The mount point exists (and is locked down) even while the volume is absent,
# so tcpdump never fills the root volume instead.
install -d -m 0750 -o root -g "$CAPTURE_GROUP" "$DIR"

# One fstab line, by UUID, with nofail: a missing volume must not stop boot.
if ! grep -Eq "^UUID=${uuid}[[:space:]]" "$FSTAB"; then
  if awk -v d="$DIR" '$0 !~ /^[[:space:]]*#/ && $2 == d { found = 1 } END { exit !found }' "$FSTAB"; then
    die "$FSTAB already mounts something else at $DIR: remove that line, then run again"
  fi
  tmp=$(mktemp "$FSTAB.mirrorcap.XXXXXX")
  cat "$FSTAB" > "$tmp"
  printf 'UUID=%s %s xfs defaults,noatime,nofail,x-systemd.device-timeout=30s 0 2\n' "$uuid" "$DIR" >> "$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$FSTAB"
  echo "mirrorcap-storage: added $DIR (UUID=$uuid) to $FSTAB"
fi

if mountpoint -q "$DIR"; then
  mounted=$(findmnt -n -o SOURCE --target "$DIR")
  [ "$(readlink -f "$mounted")" = "$device" ] || die "$DIR is already a mount of $mounted, not of volume $VOLUME_ID ($device)"
else
  mount -t xfs -o defaults,noatime "UUID=$uuid" "$DIR" 2>/dev/null || mount -t xfs -o defaults,noatime "$device" "$DIR"
fi

# pcaps hold production payloads: only the capture user writes, only the pcap group reads.
# setgid keeps new files in the group; the capture unit's UMask=0027 makes them 0640.
chown "$CAPTURE_USER:$CAPTURE_GROUP" "$DIR"
chmod 2750 "$DIR"
echo "mirrorcap-storage: volume $VOLUME_ID ($device, UUID=$uuid) mounted at $DIR"
MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_STORAGE
chmod 0755 '/usr/local/libexec/mirrorcap/storage.mirrorcap-new'
mv -f '/usr/local/libexec/mirrorcap/storage.mirrorcap-new' '/usr/local/libexec/mirrorcap/storage'

cat > '/usr/local/libexec/mirrorcap/decap.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_DECAP'
#!/bin/bash
# mirrorcap-decap: create one vxlan interface per configured VNI on the mirror
# ENI, found by its ENI ID through IMDSv2 (never by interface name).
# Idempotent: an existing interface with the right settings is left alone.
set -euo pipefail

ENV_FILE=${MIRRORCAP_ENV_FILE:-/etc/mirrorcap/mirrorcap.env}
# shellcheck source=/dev/null
. "$ENV_FILE"
ENI_ID=${MIRRORCAP_MIRROR_ENI_ID:?MIRRORCAP_MIRROR_ENI_ID missing from $ENV_FILE}
VNIS=${MIRRORCAP_VNIS:?MIRRORCAP_VNIS missing from $ENV_FILE}
IMDS=${MIRRORCAP_IMDS_ENDPOINT:-http://169.254.169.254}
WAIT_SECONDS=${MIRRORCAP_ENI_WAIT_SECONDS:-300}
VXLAN_PORT=4789
VXLAN_OVERHEAD=50

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
#!/bin/bash
# mirrorcap-capture VNI: tcpdump on vxlan<VNI> into rotating pcaps.
# Fails (exit 1) when the interface or the volume is missing: systemd's restart
# limit then turns a broken setup into a visible failed unit, not a silent loop.
set -euo pipefail

ENV_FILE=${MIRRORCAP_ENV_FILE:-/etc/mirrorcap/mirrorcap.env}
# shellcheck source=/dev/null
. "$ENV_FILE"
vni=${1:?usage: mirrorcap-capture VNI}
DIR=${MIRRORCAP_CAPTURE_DIR:-/var/log/tcpdump}
CAPTURE_USER=${MIRRORCAP_USER:-mirrorcap}
iface="vxlan$vni"

die() { echo "mirrorcap-capture: $*" >&2; exit 1; }
ip link show dev "$iface" >/dev/null 2>&1 || die "$iface does not exist: check mirrorcap-decap.service"
[ "${MIRRORCAP_SKIP_MOUNT_CHECK:-0}" = 1 ] || mountpoint -q "$DIR" || die "$DIR is not mounted: check mirrorcap-storage.service"

# -Q in: only what arrives from the mirror;
# -U: write each packet as it arrives (no 24-byte files left by an unflushed
#     buffer at rotation); -G: rotate; -Z: drop root after opening the device;
# -B: kernel buffer (KiB); -s 0 = whole packets; -n: no DNS lookups from here.
# File names are UTC (the unit sets TZ=UTC) and sort by time.
exec tcpdump -i "$iface" -Q in -n -U -B "$MIRRORCAP_BUFFER_KIB" -s "$MIRRORCAP_SNAPLEN" -G "$MIRRORCAP_ROTATE_SECONDS" -Z "$CAPTURE_USER" -w "$DIR/vni${vni}_%Y-%m-%dT%H-%M-%SZ.pcap"
MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_CAPTURE
chmod 0755 '/usr/local/libexec/mirrorcap/capture.mirrorcap-new'
mv -f '/usr/local/libexec/mirrorcap/capture.mirrorcap-new' '/usr/local/libexec/mirrorcap/capture'

cat > '/usr/local/libexec/mirrorcap/retention.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_RETENTION'
#!/bin/bash
# mirrorcap-retention: delete pcaps older than MIRRORCAP_RETENTION_DAYS, and the
# oldest pcaps while free space is under the floor. Only regular files named
# like mirrorcap's pcaps, directly in the capture directory; never the newest
# file of each VNI (tcpdump is writing it). Logs every deletion.
set -euo pipefail

ENV_FILE=${MIRRORCAP_ENV_FILE:-/etc/mirrorcap/mirrorcap.env}
# shellcheck source=/dev/null
. "$ENV_FILE"
DIR=${MIRRORCAP_CAPTURE_DIR:-/var/log/tcpdump}
DAYS=${MIRRORCAP_RETENTION_DAYS:?}
MIN_FREE_PERCENT=${MIRRORCAP_MIN_FREE_PERCENT:-0}
MIN_FREE_GIB=${MIRRORCAP_MIN_FREE_GIB:-0}
NOW=${MIRRORCAP_NOW:-$(date +%s)}

log() { echo "mirrorcap-retention: $*"; }
[ -d "$DIR" ] || { log "$DIR does not exist: nothing to do"; exit 0; }

# mtime (integer seconds) and name, oldest first; -maxdepth 1 and -type f keep
# subdirectories, symlinks and anything else out of reach.
mapfile -t files < <(find "$DIR" -maxdepth 1 -type f -name 'vni*_*.pcap' -printf '%T@ %f\n' | sort -n -k1,1 -k2,2)

declare -A newest=()
for entry in "${files[@]}"; do
  name=${entry#* }
  newest[${name%%_*}]=$name
done
protected() { [ "${newest[${1%%_*}]}" = "$1" ]; }

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
  log "WARNING: free space still under the floor after deleting all but the newest pcaps"
fi
log "done: $deleted file(s) deleted, $(( ${#files[@]} - deleted )) kept"
MIRRORCAP_USR_LOCAL_LIBEXEC_MIRRORCAP_RETENTION
chmod 0755 '/usr/local/libexec/mirrorcap/retention.mirrorcap-new'
mv -f '/usr/local/libexec/mirrorcap/retention.mirrorcap-new' '/usr/local/libexec/mirrorcap/retention'

cat > '/usr/local/sbin/mirrorcap-boot.mirrorcap-new' <<'MIRRORCAP_USR_LOCAL_SBIN_MIRRORCAP_BOOT'
#!/bin/bash
# mirrorcap-boot: start capturing with the settings in /etc/mirrorcap/mirrorcap.env.
# Run by the user data on every boot (and safe to run by hand): enables the
# units for the configured VNIs and disables capture units of VNIs no longer configured.
set -euo pipefail
ENV_FILE=${MIRRORCAP_ENV_FILE:-/etc/mirrorcap/mirrorcap.env}
# shellcheck source=/dev/null
. "$ENV_FILE"
VNIS=${MIRRORCAP_VNIS:?MIRRORCAP_VNIS missing from $ENV_FILE}

systemctl daemon-reload
systemctl enable --now mirrorcap-storage.service mirrorcap-decap.service
for unit in $(systemctl list-units --all --plain --no-legend 'mirrorcap-capture@*.service' | awk '{ print $1 }'); do
  vni=${unit#mirrorcap-capture@}; vni=${vni%.service}
  if ! grep -qw -- "$vni" <<<"$VNIS"; then
    echo "mirrorcap-boot: VNI $vni is no longer configured: stopping $unit"
    systemctl disable --now "$unit"
  fi
done
for vni in $VNIS; do
  systemctl enable --now "mirrorcap-capture@$vni.service"
done
systemctl enable --now mirrorcap-retention.timer
echo "mirrorcap-boot: capturing VNI(s) $VNIS"
MIRRORCAP_USR_LOCAL_SBIN_MIRRORCAP_BOOT
chmod 0755 '/usr/local/sbin/mirrorcap-boot.mirrorcap-new'
mv -f '/usr/local/sbin/mirrorcap-boot.mirrorcap-new' '/usr/local/sbin/mirrorcap-boot'

cat > '/etc/systemd/system/mirrorcap-storage.service.mirrorcap-new' <<'MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_STORAGE_SERVICE'
[Unit]
Description=mirrorcap: mount the pcap volume at /var/log/tcpdump
Documentation=file:///usr/local/share/doc/mirrorcap/README
After=local-fs.target
ConditionPathExists=/etc/mirrorcap/mirrorcap.env

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/libexec/mirrorcap/storage
TimeoutStartSec=600
PrivateTmp=yes
ProtectHome=yes

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
Requires=mirrorcap-storage.service mirrorcap-decap.service
After=mirrorcap-storage.service mirrorcap-decap.service
RequiresMountsFor=/var/log/tcpdump
# Five failures in five minutes leave the unit failed, where alarms see it.
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
Type=simple
Environment=TZ=UTC
ExecStart=/usr/local/libexec/mirrorcap/capture %i
Restart=on-failure
RestartSec=5
# New pcaps: 0640 (the directory's setgid gives them the pcap group).
UMask=0027
# tcpdump opens the interface as root (raw socket, promiscuous mode), then -Z
# switches to mirrorcap: that is every privilege it needs.
CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN CAP_SETUID CAP_SETGID
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
RequiresMountsFor=/var/log/tcpdump
ConditionPathExists=/etc/mirrorcap/mirrorcap.env

[Service]
Type=oneshot
ExecStart=/usr/local/libexec/mirrorcap/retention
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=/var/log/tcpdump
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateNetwork=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
CapabilityBoundingSet=CAP_DAC_OVERRIDE CAP_FOWNER
RestrictAddressFamilies=AF_UNIX
MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_RETENTION_SERVICE
chmod 0644 '/etc/systemd/system/mirrorcap-retention.service.mirrorcap-new'
mv -f '/etc/systemd/system/mirrorcap-retention.service.mirrorcap-new' '/etc/systemd/system/mirrorcap-retention.service'

cat > '/etc/systemd/system/mirrorcap-retention.timer.mirrorcap-new' <<'MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_RETENTION_TIMER'
[Unit]
Description=mirrorcap: run pcap retention every 5 minutes (a burst can fill the disk fast)

[Timer]
OnBootSec=2min
OnUnitActiveSec=5min
Persistent=true

[Install]
WantedBy=timers.target
MIRRORCAP_ETC_SYSTEMD_SYSTEM_MIRRORCAP_RETENTION_TIMER
chmod 0644 '/etc/systemd/system/mirrorcap-retention.timer.mirrorcap-new'
mv -f '/etc/systemd/system/mirrorcap-retention.timer.mirrorcap-new' '/etc/systemd/system/mirrorcap-retention.timer'

if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
echo "mirrorcap bake: installed (10 files)"
