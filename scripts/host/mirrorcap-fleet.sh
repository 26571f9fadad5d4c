#!/bin/bash
# mirrorcap-fleet storage|decap: a fleet host's pcap volume and mirror interface,
# handed to the same storage and decap scripts as a single host's (drop-ins in
# mirrorcap-storage.service.d and mirrorcap-decap.service.d run this instead).
#   storage: the volume the launch template attaches as MIRRORCAP_VOLUME_DEVICE
#            (/dev/sdf: on Nitro, Amazon Linux's udev rules link it to the NVMe
#            device); its volume ID is that device's NVMe serial (its by-id name).
#   decap:   the NLB sends VXLAN to the instance's primary ENI (device-number 0).
set -euo pipefail
ENV_FILE=/etc/mirrorcap/mirrorcap.env
# shellcheck source=/dev/null
. "$ENV_FILE"
LIBEXEC=/usr/local/libexec/mirrorcap
IMDS=http://169.254.169.254
WAIT_SECONDS=300
die() { echo "mirrorcap-fleet: $*" >&2; exit 1; }

storage() {
  local dev=${MIRRORCAP_VOLUME_DEVICE:?MIRRORCAP_VOLUME_DEVICE missing from $ENV_FILE} device="" link waited
  [[ $dev =~ ^/dev/[a-z0-9]+$ ]] || die "MIRRORCAP_VOLUME_DEVICE=$dev is not a device name like /dev/sdf"
  for ((waited = 0; waited <= WAIT_SECONDS; waited++)); do
    if [ -e "$dev" ]; then device=$(readlink -f "$dev"); break; fi
    sleep 1
  done
  [ -n "$device" ] || die "$dev did not appear within ${WAIT_SECONDS}s: is the pcap volume in the launch template's block device mappings?"
  local volume=""
  for link in /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol*; do
    if [ -e "$link" ] && [ "$(readlink -f "$link")" = "$device" ]; then volume=vol-${link##*_vol}; break; fi
  done
  [ -n "$volume" ] || die "$dev ($device) is not an EBS volume on NVMe (no /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol* link to it): fleet hosts need a Nitro instance type"
  MIRRORCAP_VOLUME_ID=$volume exec "$LIBEXEC/storage"
}

decap() {
  local token mac waited
  imds() { curl -fsS --max-time 2 -H "X-aws-ec2-metadata-token: $token" "$IMDS/latest/meta-data/$1"; }
  for ((waited = 0; waited <= WAIT_SECONDS; waited += 2)); do
    if token=$(curl -fsS --max-time 2 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 300" "$IMDS/latest/api/token"); then
      for mac in $(imds network/interfaces/macs/ || true); do
        mac=${mac%/}
        if [ "$(imds "network/interfaces/macs/$mac/device-number" || true)" = 0 ]; then
          MIRRORCAP_MIRROR_ENI_ID=$(imds "network/interfaces/macs/$mac/interface-id") exec "$LIBEXEC/decap"
        fi
      done
    fi
    sleep 2
  done
  die "IMDS at $IMDS names no primary ENI (device-number 0) after ${WAIT_SECONDS}s"
}

case ${1:-} in
  storage) storage ;;
  decap) decap ;;
  *) echo "usage: mirrorcap-fleet storage|decap (run by mirrorcap-storage and mirrorcap-decap on a fleet host)" >&2; exit 2 ;;
esac
