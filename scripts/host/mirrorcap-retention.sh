#!/bin/bash
# mirrorcap-retention: delete pcaps older than MIRRORCAP_RETENTION_DAYS, and the
# oldest pcaps while free space is under the floor. Only regular files named
# like mirrorcap's pcaps, directly in the capture directory; never the newest
# file of a VNI that is being captured (tcpdump is writing it: deleting it would
# free nothing and lose what is written next). The newest file of a VNI that is
# no longer configured is not being written, and ages out like any other.
# Logs every deletion. Runs as the capture user, who owns the directory.
set -euo pipefail

ENV_FILE=/etc/mirrorcap/mirrorcap.env
# shellcheck source=/dev/null
. "$ENV_FILE"
DIR=${MIRRORCAP_CAPTURE_DIR:?MIRRORCAP_CAPTURE_DIR missing from $ENV_FILE}
DAYS=${MIRRORCAP_RETENTION_DAYS:?MIRRORCAP_RETENTION_DAYS missing from $ENV_FILE}
VNIS=${MIRRORCAP_VNIS:?MIRRORCAP_VNIS missing from $ENV_FILE}
PATTERN=${MIRRORCAP_PCAP_PATTERN:?MIRRORCAP_PCAP_PATTERN missing from $ENV_FILE}
MIN_FREE_PERCENT=${MIRRORCAP_MIN_FREE_PERCENT:-0}
MIN_FREE_GIB=${MIRRORCAP_MIN_FREE_GIB:-0}
NOW=$(date +%s)

log() { echo "mirrorcap-retention: $*"; }
# The names of VNI $1's pcaps (* = every VNI's): the capture's strftime pattern
# with each %X as * (as mirrorcap_host.pcap_glob derives it for the Python scripts).
pcap_glob() { local g=${PATTERN//"{vni}"/$1}; echo "${g//%?/*}"; }
[ -d "$DIR" ] || { log "$DIR does not exist (mirrorcap-storage has not run): nothing to do"; exit 0; }
# Device numbers, not mountpoint(1): ReadWritePaths= bind-mounts the directory in
# this unit, which mountpoint would take for the volume.
if [ "$(stat -c %d "$DIR")" = "$(stat -c %d "$DIR/..")" ]; then
  log "$DIR is not a mounted volume (check mirrorcap-storage): nothing to do"
  exit 0
fi

# mtime (integer seconds) and name, oldest first; -maxdepth 1 and -type f keep
# subdirectories, symlinks and anything else out of reach.
mapfile -t files < <(find "$DIR" -maxdepth 1 -type f -name "$(pcap_glob '*')" -printf '%T@ %f\n' | sort -n -k1,1 -k2,2)

declare -A glob=() newest=()
for vni in $VNIS; do glob[$vni]=$(pcap_glob "$vni"); done
for entry in "${files[@]}"; do
  name=${entry#* }
  for vni in "${!glob[@]}"; do
    # shellcheck disable=SC2053  # the right side is a glob
    if [[ $name == ${glob[$vni]} ]]; then newest[$vni]=$name; fi
  done
done
protected() {
  local vni
  for vni in "${!newest[@]}"; do [ "${newest[$vni]}" != "$1" ] || return 0; done
  return 1
}

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
  log "WARNING: free space still under the floor after deleting all but the pcaps being written"
fi
log "done: $deleted file(s) deleted, $(( ${#files[@]} - deleted )) kept"
