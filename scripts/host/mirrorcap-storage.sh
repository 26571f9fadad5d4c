#!/bin/bash
# mirrorcap-storage: mount the pcap EBS volume at the capture directory, on every boot.
# Finds the device from the volume ID (the NVMe by-id link EC2 gives on Nitro) or,
# on a fleet host, from the device name its launch template gives it (/dev/sdf:
# Amazon Linux's udev rules link it to the NVMe device, whose by-id name carries the
# volume ID); creates xfs ONLY on a device with no file system and no partition
# table, and mounts it in the host's mount namespace (the unit has no namespacing
# options). No fstab line: this enabled unit is the one place the volume is
# mounted, the same way on every boot, and a missing volume never stops boot: it is
# waited for without a deadline (Terraform attaches it after the instance starts;
# an operator may attach it much later), and capture starts the moment it is
# mounted. What it waits for, or why it refused, goes to /run/mirrorcap/storage.json.
# Safe to run again and again: a volume that holds pcaps is never formatted.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=mirrorcap-lib.sh
. "$(dirname "$(readlink -f "$0")")/../../lib/mirrorcap/mirrorcap-lib.sh"
DIR=${MIRRORCAP_CAPTURE_DIR:?MIRRORCAP_CAPTURE_DIR missing from $ENV_FILE}
CAPTURE_USER=${MIRRORCAP_CAPTURE_USER:?MIRRORCAP_CAPTURE_USER missing from $ENV_FILE}
CAPTURE_GROUP=${MIRRORCAP_CAPTURE_GROUP:?MIRRORCAP_CAPTURE_GROUP missing from $ENV_FILE}
VOLUME_ID=${MIRRORCAP_VOLUME_ID:-}
DEVICE_NAME=${MIRRORCAP_VOLUME_DEVICE:-}
BY_ID=/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_
# Xen (pre-Nitro) types have no NVMe serial: the attachment's device name, as Xen names it.
XEN_DEVICE=/dev/xvdf

# validate refuses anything else; checked again because this script runs as root.
[[ $DIR =~ ^(/[A-Za-z0-9._-]+)+$ && ! $DIR =~ (^|/)\.\.?(/|$) ]] || die "MIRRORCAP_CAPTURE_DIR=$DIR in $ENV_FILE is not a normalized absolute path: fix host.capture_dir"
if [ -n "$VOLUME_ID" ]; then
  [[ $VOLUME_ID =~ ^vol-[0-9a-f]{8}([0-9a-f]{9})?$ ]] || die "MIRRORCAP_VOLUME_ID=$VOLUME_ID in $ENV_FILE is not an EBS volume ID (vol-...): fix the user data"
  # NVMe serials drop the dash: vol-0abc -> nvme-Amazon_Elastic_Block_Store_vol0abc
  link=$BY_ID${VOLUME_ID/-/} wanted="volume $VOLUME_ID ($link)"
else
  [[ $DEVICE_NAME =~ ^/dev/[a-z0-9]+$ ]] || die "neither MIRRORCAP_VOLUME_ID nor a MIRRORCAP_VOLUME_DEVICE like /dev/sdf in $ENV_FILE: fix the user data"
  link=$DEVICE_NAME wanted="the launch template's pcap volume ($DEVICE_NAME)"
fi

device=""
while :; do
  if [ -e "$link" ]; then device=$(readlink -f "$link"); break; fi
  if [ -n "$VOLUME_ID" ] && [ -b "$XEN_DEVICE" ] && [ ! -e /sys/class/nvme ]; then device=$XEN_DEVICE; break; fi
  waiting waiting "waiting since $(date -u -d "@$since" +%FT%TZ) for $wanted: attach it to this instance (the stack attaches it; aws ec2 attach-volume); capture starts by itself once it is mounted"
  sleep 1
done
[ -b "$device" ] || die "$device ($wanted) is not a block device"
if [ -z "$VOLUME_ID" ]; then
  for l in "$BY_ID"vol*; do
    if [ -e "$l" ] && [ "$(readlink -f "$l")" = "$device" ]; then VOLUME_ID=vol-${l##*_vol}; break; fi
  done
  [ -n "$VOLUME_ID" ] || die "$DEVICE_NAME ($device) is not an EBS volume on NVMe (no ${BY_ID}vol* link to it): fleet hosts need a Nitro instance type"
fi

# -p probes the device itself, not the blkid cache.
fstype=$(blkid -p -o value -s TYPE "$device" || true)
pttype=$(blkid -p -o value -s PTTYPE "$device" || true)
if [ -z "$fstype" ]; then
  [ -z "$pttype" ] || die "$device (volume $VOLUME_ID) has a $pttype partition table and no file system: refusing to format it; wipe it deliberately first (wipefs -a $device), $AGAIN"
  say "$device (volume $VOLUME_ID) is blank: creating xfs"
  # No -f: mkfs.xfs itself refuses to overwrite an existing file system.
  mkfs.xfs -q -L mirrorcap "$device"  # xfs labels: 12 characters at most
  fstype=xfs
elif [ "$fstype" != xfs ]; then
  die "$device (volume $VOLUME_ID) holds a $fstype file system, not xfs: refusing to touch it; attach a blank volume or wipe this one deliberately (wipefs -a $device), $AGAIN"
fi
uuid=$(blkid -p -o value -s UUID "$device")
[ -n "$uuid" ] || die "could not read the file system UUID of $device"

if ! mountpoint -q "$DIR" && [ -d "$DIR" ] && [ -n "$(ls -A "$DIR")" ]; then
  die "$DIR holds files and is not the volume: mounting over it would hide them; move them away or pick another host.capture_dir, $AGAIN"
fi
# The mount point exists (and is locked down) even while the volume is absent:
# nobody else can write into it, and capture refuses a directory that is not a mount.
install -d -m 0750 -o root -g "$CAPTURE_GROUP" "$DIR"

if mountpoint -q "$DIR"; then
  mounted=$(findmnt -n -o SOURCE --mountpoint "$DIR")
  [ "$(readlink -f "$mounted")" = "$device" ] || die "$DIR is already a mount of $mounted, not of volume $VOLUME_ID ($device): unmount it (umount $DIR), $AGAIN"
else
  # nodev,nosuid,noexec: the volume holds data only.
  mount -t xfs -o noatime,nodev,nosuid,noexec "$device" "$DIR"
fi

# pcaps hold production payloads: only the capture user writes, only the pcap group reads.
# setgid keeps new files in the group; the capture unit's UMask=0027 makes them 0640.
chown "$CAPTURE_USER:$CAPTURE_GROUP" "$DIR"
chmod 2750 "$DIR"
say "volume $VOLUME_ID ($device, xfs UUID=$uuid) mounted at $DIR"
status mounted "volume $VOLUME_ID ($device) mounted at $DIR"
