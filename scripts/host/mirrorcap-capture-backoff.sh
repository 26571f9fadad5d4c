#!/bin/bash
# mirrorcap-capture-backoff VNI: start a capture unit again, later each time, when
# systemd could not even set up its sandbox. The capture unit restarts for ever,
# two seconds after it stops, except after exit status 226/NAMESPACE
# (RestartPreventExitStatus=): its mount namespace cannot be made on a pcap volume
# whose file system failed, and retrying every two seconds is a hot loop that
# changes nothing. Such a failure starts this (OnFailure=); it waits 2, 4, 8, 16,
# 32, then 60 s by the failures of the last 10 minutes, never past the moment the
# capture directory reads again (the volume was remounted) or the unit was started
# by someone else, then starts the unit. It never gives up: each failure comes back
# here (mirrorcap-health says "flapping", and names the I/O error first).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=mirrorcap-lib.sh
. "$(dirname "$(readlink -f "$0")")/../../lib/mirrorcap/mirrorcap-lib.sh"
vni=${1:?usage: capture-backoff VNI}
[[ $vni =~ ^[1-9][0-9]{0,7}$ ]] || die "not a VNI: $vni"
DIR=${MIRRORCAP_CAPTURE_DIR:?MIRRORCAP_CAPTURE_DIR missing from $ENV_FILE}
unit=mirrorcap-capture@$vni.service
HISTORY=/run/mirrorcap/capture-backoff.$vni  # mirrorcap-health counts these starts as restarts
DELAYS=(2 4 8 16 32 60)

# OnFailure= also fires when the unit never ran (storage or decap failed: "Dependency failed"); those
# units have their own waits and remedies, and starting capture again would only start them again.
if [ "$(systemctl show -p Result --value "$unit")" != exit-code ] ||
   [ "$(systemctl show -p ExecMainStatus --value "$unit")" != 226 ] ||
   ! systemctl is-active --quiet mirrorcap-storage.service || ! systemctl is-active --quiet mirrorcap-decap.service; then
  exit 0
fi
install -d -m 0755 /run/mirrorcap
now=$(date +%s)
kept=()  # the starts of the last 10 minutes: the file never grows past them
if [ -r "$HISTORY" ]; then
  while read -r t; do
    if [[ $t =~ ^[0-9]+$ ]] && ((now - t < 600)); then kept+=("$t"); fi
  done <"$HISTORY"
fi
recent=${#kept[@]}
printf '%s\n' "${kept[@]}" "$now" >"$HISTORY.tmp"
mv -f -- "$HISTORY.tmp" "$HISTORY"
delay=${DELAYS[$((recent < ${#DELAYS[@]} ? recent : ${#DELAYS[@]} - 1))]}
volume_failed=false
stat -- "$DIR" >/dev/null 2>&1 || volume_failed=true
say "$unit could not set up its sandbox ($((recent + 1)) time(s) in 10 minutes$($volume_failed && echo ": $DIR does not read")): starting it again in ${delay}s"
for ((i = 0; i < delay * 4; i++)); do
  systemctl is-enabled --quiet "$unit" || exit 0  # mirrorcap-boot removed this VNI meanwhile
  if $volume_failed && stat -- "$DIR" >/dev/null 2>&1; then break; fi
  case $(systemctl show -p ActiveState --value "$unit") in active | activating | reloading) exit 0 ;; esac
  sleep 0.25
done
systemctl start --no-block "$unit"
