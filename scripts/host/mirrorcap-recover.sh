#!/bin/bash
# mirrorcap-recover: remount the pcap volume when its file system shut down.
# Started by mirrorcap-recover.timer every minute, and at once by
# mirrorcap-recover.path when a capture's watcher finds the capture directory unreadable (EIO: an impaired EBS volume, or an XFS forced shutdown
# after an I/O error) and asks for it in /run/mirrorcap/recover. It trusts no
# request: it acts only when the directory fails to read here too. A shut-down
# file system stays shut down until it is unmounted; mounting it again replays
# its log. Every unit whose mount namespace holds the capture directory is
# stopped first (a mount that lingers in one would hand the dead file system
# back to the new mount), then storage mounts the volume and the target starts
# capture again; each capture counts its gap from the last packet the volume
# kept. Repeated recoveries back off (a volume that fails again and again is
# not remounted in a loop); what it does goes to /run/mirrorcap/recover.json.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=mirrorcap-lib.sh
. "$(dirname "$(readlink -f "$0")")/../../lib/mirrorcap/mirrorcap-lib.sh"
DIR=${MIRRORCAP_CAPTURE_DIR:?MIRRORCAP_CAPTURE_DIR missing from $ENV_FILE}
REQUESTS=/run/mirrorcap/recover
HISTORY=/run/mirrorcap/recover.history
BACKOFF=(0 5 20 60 300)  # seconds before the 1st, 2nd... remount within 10 minutes

if error=$(LC_ALL=C stat -- "$DIR" 2>&1 >/dev/null); then
  if [ -n "$(ls -A "$REQUESTS" 2>/dev/null)" ]; then  # (the timer's runs find nothing, silently)
    rm -f -- "$REQUESTS"/*
    say "$DIR reads: nothing to recover"
  fi
  exit 0
fi
error=${error##*: }
case $error in
  "No such file or directory" | "Not a directory")
    rm -f -- "$REQUESTS"/*
    say "$DIR is missing ($error): mirrorcap-storage makes it, $AGAIN"
    exit 0 ;;
esac

now=$(date +%s)
recent=0
if [ -r "$HISTORY" ]; then
  while read -r t; do
    if [[ $t =~ ^[0-9]+$ ]] && ((now - t < 600)); then recent=$((recent + 1)); fi
  done <"$HISTORY"
fi
delay=${BACKOFF[$((recent < ${#BACKOFF[@]} ? recent : ${#BACKOFF[@]} - 1))]}
what="the file system of the pcap volume at $DIR failed ($error: shut down, or the volume is impaired)"
if ((delay)); then
  status backing-off "$what; remount $((recent + 1)) in 10 minutes, in ${delay}s"
  say "$what; remounted $recent time(s) in 10 minutes: waiting ${delay}s first"
  sleep "$delay"
fi
echo "$now" >>"$HISTORY"
status recovering "$what: remounting it"
say "$what: stopping what holds it, unmounting it, mounting it again (the mount replays its log)"

mapfile -t holders < <(systemctl list-units --plain --no-legend --state=active,activating,deactivating,reloading \
  'mirrorcap-capture@*.service' mirrorcap-retention.service mirrorcap-archive.service | awk '{ print $1 }')
if ((${#holders[@]})); then systemctl stop "${holders[@]}"; fi
if ! umount "$DIR"; then
  say "umount $DIR failed (a process still uses it: fuser -vm $DIR): detaching it lazily"
  umount -l "$DIR"
fi
rm -f -- "$REQUESTS"/*
systemctl restart mirrorcap-storage.service
systemctl start --no-block mirrorcap.target
say "$DIR mounted again; capture is starting (each capture's gap runs from the last packet the volume kept)"
status recovered "$what; remounted at $(date -u +%FT%TZ)"
