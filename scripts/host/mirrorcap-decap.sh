#!/bin/bash
# mirrorcap-decap: one vxlan interface per configured VNI on the interface that
# receives the mirrored traffic: the mirror ENI, found by its ENI ID through
# IMDSv2 (never by name), or on a fleet host (an NLB target) its primary ENI
# (device-number 0). Waits, without a deadline, for the metadata service and for
# the ENI's attachment (Terraform attaches it after the instance starts), and says
# which in /run/mirrorcap/decap.json for mirrorcap-health.
# Converges, so the same script is the unit's reload: creates what is missing,
# removes the vxlan interfaces it made for VNIs no longer configured (marked with
# an alias: never anyone else's), and raises the NIC's MTU to what mirrored
# traffic needs (a 9001-byte packet plus VXLAN's 50 arrives whole only there).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=mirrorcap-lib.sh
. "$(dirname "$(readlink -f "$0")")/../../lib/mirrorcap/mirrorcap-lib.sh"
VNIS=${MIRRORCAP_VNIS:?MIRRORCAP_VNIS missing from $ENV_FILE}
VXLAN_PORT=${MIRRORCAP_VXLAN_PORT:?MIRRORCAP_VXLAN_PORT missing from $ENV_FILE}
VXLAN_OVERHEAD=${MIRRORCAP_VXLAN_OVERHEAD:?MIRRORCAP_VXLAN_OVERHEAD missing from $ENV_FILE}
MIRROR_MTU=${MIRRORCAP_MIRROR_MTU:?MIRRORCAP_MIRROR_MTU missing from $ENV_FILE}
VXLAN_IFACE=${MIRRORCAP_VXLAN_IFACE:?MIRRORCAP_VXLAN_IFACE missing from $ENV_FILE}  # vxlan{vni}
MARK=mirrorcap  # the alias of every vxlan interface this script made
ENI_ID=${MIRRORCAP_MIRROR_ENI_ID:-}
if [ -n "$ENI_ID" ]; then
  [[ $ENI_ID =~ ^eni-[0-9a-f]{8}([0-9a-f]{9})?$ ]] || die "MIRRORCAP_MIRROR_ENI_ID=$ENI_ID is not an ENI ID: fix the user data"
  wanted="ENI $ENI_ID"
else
  [ "${MIRRORCAP_TARGET_KIND:-}" = nlb ] || die "MIRRORCAP_MIRROR_ENI_ID missing from $ENV_FILE: fix the user data"
  wanted="the primary ENI (device-number 0)"
fi
for vni in $VNIS; do
  if ! [[ $vni =~ ^[1-9][0-9]{0,7}$ ]] || ((vni > 16777215)); then die "VNI $vni in $ENV_FILE is not 1-16777215 (24 bits, never 0): fix the user data"; fi
done

# The MAC of the ENI the traffic reaches, from IMDSv2, as long as it takes.
mac=""
while :; do
  if imds network/interfaces/macs/; then
    for m in $imds_out; do
      m=${m%/}
      if [ -n "$ENI_ID" ]; then key=interface-id want=$ENI_ID; else key=device-number want=0; fi
      if imds "network/interfaces/macs/$m/$key" && [ "$imds_out" = "$want" ]; then mac=$m; break; fi
    done
    [ -z "$mac" ] || break
    waiting waiting-eni "waiting since $(date -u -d "@$since" +%FT%TZ) for $wanted: the instance metadata (IMDS) lists no such interface yet; capture starts by itself once it is attached (the stack's mirror_eni_attachment)"
  else
    waiting waiting-imds "waiting since $(date -u -d "@$since" +%FT%TZ) for the instance metadata service (IMDS, $IMDS) to find $wanted: it does not answer ($imds_error); capture starts by itself once it does (the instance's metadata options must keep http_endpoint enabled)"
  fi
  sleep 2
done
[ -n "$ENI_ID" ] || { imds "network/interfaces/macs/$mac/interface-id" && ENI_ID=$imds_out; } || ENI_ID="the primary ENI"

iface=""
for d in /sys/class/net/*; do
  if [ "$(cat "$d/address" 2>/dev/null)" = "$mac" ] && [ ! -e "$d/master" ]; then iface=${d##*/}; break; fi
done
[ -n "$iface" ] || die "no network interface has MAC $mac ($ENI_ID), which IMDS names: is its driver loaded? $AGAIN"

# The NIC at the MTU mirrored traffic needs, or at its largest when that is less:
# a frame over the NIC's MTU is dropped before it is decapsulated, uncounted.
mtu=$(cat "/sys/class/net/$iface/mtu")
if ((mtu < MIRROR_MTU)); then
  max_mtu=$(ip -d -j link show dev "$iface" | sed -n 's/.*"max_mtu":\([0-9]*\).*/\1/p')
  set_to=$MIRROR_MTU
  if [ -n "$max_mtu" ] && ((max_mtu < set_to)); then set_to=$max_mtu; fi
  ip link set dev "$iface" mtu "$set_to" || true
  say "$iface ($ENI_ID): MTU $mtu raised to $(cat "/sys/class/net/$iface/mtu")"
  mtu=$(cat "/sys/class/net/$iface/mtu")
fi
if ((mtu < MIRROR_MTU)); then
  say "WARNING: $iface ($ENI_ID) has MTU $mtu, under the $MIRROR_MTU mirrored traffic needs: larger mirrored packets are dropped (mirrorcap-health says so)"
fi
ip link set dev "$iface" up
inner_mtu=$((mtu - VXLAN_OVERHEAD))

for vni in $VNIS; do
  name=${VXLAN_IFACE//"{vni}"/$vni}
  if ip link show dev "$name" >/dev/null 2>&1; then
    details=$(ip -d link show dev "$name")
    if grep -q "vxlan id $vni " <<<"$details" && grep -q "dev $iface " <<<"$details" && grep -q "dstport $VXLAN_PORT " <<<"$details"; then
      :
    elif [ "$(cat "/sys/class/net/$name/ifalias")" = "$MARK" ]; then
      say "$name exists with other settings: recreating it"
      ip link del dev "$name"
    else
      die "$name exists with other settings and mirrorcap did not make it: delete it (ip link del $name), $AGAIN"
    fi
  fi
  if ! ip link show dev "$name" >/dev/null 2>&1; then
    ip link add "$name" type vxlan id "$vni" dstport "$VXLAN_PORT" dev "$iface" nolearning
  fi
  ip link set dev "$name" alias "$MARK" mtu "$inner_mtu"
  # Receive-only: no IPv6 autoconf/DAD/MLD, no ARP, so the host's own packets
  # never land in the captures.
  sysctl -q -w "net.ipv6.conf.$name.disable_ipv6=1" 2>/dev/null || true
  ip link set dev "$name" arp off multicast off
  ip link set dev "$name" up
  say "$name (VNI $vni) on $iface ($ENI_ID, $mac), MTU $inner_mtu"
done

# The VNIs no longer configured: mirrorcap-boot has stopped their capture first.
prefix=${VXLAN_IFACE%%"{vni}"*} suffix=${VXLAN_IFACE#*"{vni}"}
for d in /sys/class/net/"$prefix"*"$suffix"; do
  name=${d##*/} vni=${d##*/"$prefix"}
  vni=${vni%"$suffix"}
  [[ $vni =~ ^[0-9]+$ && $(cat "$d/ifalias" 2>/dev/null) = "$MARK" && " $VNIS " != *" $vni "* ]] || continue
  ip link del dev "$name"
  say "$name removed: VNI $vni is no longer configured (its pcaps stay, under retention)"
done
status ready "VNI(s) $VNIS on $iface ($ENI_ID), MTU $mtu"
