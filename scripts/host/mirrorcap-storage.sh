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
