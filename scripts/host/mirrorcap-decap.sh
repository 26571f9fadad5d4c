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
