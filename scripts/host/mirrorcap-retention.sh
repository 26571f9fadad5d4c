#!/bin/bash
# mirrorcap-retention: delete pcaps older than MIRRORCAP_RETENTION_DAYS, and the
# oldest pcaps while free space is under the floor. Only regular files named
# like mirrorcap's pcaps, directly in the capture directory; never the newest
# file of a VNI that is being captured (tcpdump is writing it: deleting it would
# free nothing and lose what is written next). The newest file of a VNI that is
# no longer configured, or whose capture has stopped writing on a full volume
# (its not-writing flag), is not being written and goes like any other; such a
# capture also needs room to start again: the floor is then at least that.
# Deleting for space happens only when it can reach its goal: when files
# mirrorcap did not write fill the volume, deleting pcaps would lose them and
# free too little; retention then deletes none and says what fills the volume.
# Logs every deletion. Runs as the capture user, who owns the directory: every
# minute (its timer), and from a capture that found the volume full; one at a time.
# A pcap's packet index (or the note that it failed) goes with it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=mirrorcap-lib.sh
. "$(dirname "$(readlink -f "$0")")/../../lib/mirrorcap/mirrorcap-lib.sh"
DIR=${MIRRORCAP_CAPTURE_DIR:?MIRRORCAP_CAPTURE_DIR missing from $ENV_FILE}
DAYS=${MIRRORCAP_RETENTION_DAYS:?MIRRORCAP_RETENTION_DAYS missing from $ENV_FILE}
VNIS=${MIRRORCAP_VNIS:?MIRRORCAP_VNIS missing from $ENV_FILE}
PATTERN=${MIRRORCAP_PCAP_PATTERN:?MIRRORCAP_PCAP_PATTERN missing from $ENV_FILE}
MIN_FREE_PERCENT=${MIRRORCAP_MIN_FREE_PERCENT:-0}
MIN_FREE_GIB=${MIRRORCAP_MIN_FREE_GIB:-0}
NOW=$(date +%s)
RUN=/run/mirrorcap

log() { say "$@"; }
# delete NAME: a pcap and its index.
delete() { rm -f -- "$DIR/$1" "$DIR/$1$INDEX_SUFFIX" "$DIR/$1$INDEX_FAILED_SUFFIX"; }
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

exec 9<"$DIR"
flock 9  # the timer's run and a capture's run, one after the other

# mtime (integer seconds), size and name, oldest first; -maxdepth 1 and -type f
# keep subdirectories, symlinks and anything else out of reach.
mapfile -t files < <(find "$DIR" -maxdepth 1 -type f -name "$(pcap_glob '*')" -printf '%T@ %s %f\n' | sort -n -k1,1 -k3,3)

declare -A glob=() newest=()
need=0
for vni in $VNIS; do
  flag=$RUN/capture-$vni/not-writing
  if [ -r "$flag" ]; then
    read -r bytes <"$flag" || true
    [[ ${bytes:-} =~ ^[0-9]+$ ]] && ((bytes > need)) && need=$bytes
    continue  # not writing: its newest pcap is not protected
  fi
  glob[$vni]=$(pcap_glob "$vni")
done
for entry in "${files[@]}"; do
  name=${entry#* * }
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
deletable=0
cutoff=$((NOW - DAYS * 86400))
for entry in "${files[@]}"; do
  read -r mtime bytes name <<<"$entry"
  mtime=${mtime%%.*}
  if ((mtime < cutoff)) && ! protected "$name"; then
    delete "$name"
    log "deleted $name (older than $DAYS days)"
    deleted=$((deleted + 1))
  else
    remaining+=("$name")
    protected "$name" || deletable=$((deletable + bytes))
  fi
done

read -r size avail < <(df -P -B1 "$DIR" | awk 'NR == 2 { print $2, $4 }')
floor=$((size * MIN_FREE_PERCENT / 100))
((floor >= MIN_FREE_GIB * 1073741824)) || floor=$((MIN_FREE_GIB * 1073741824))
((floor >= need)) || floor=$need
why="free space under ${MIN_FREE_PERCENT}% / ${MIN_FREE_GIB} GiB"
if ((need)); then why+=", or the $((need >> 20)) MiB a capture needs to write again"; fi
if ((avail + deletable < floor)) && ((need)) && ((avail + deletable >= need)); then
  floor=$need  # the floor is out of reach, the room a capture needs is not
fi
if ((avail < floor)) && ((avail + deletable < floor)); then
  log "WARNING: $why, and deleting every pcap it may would leave $(((avail + deletable) >> 20)) MiB: nothing deleted; files mirrorcap did not write fill $DIR (du -sh $DIR/* shows them): delete them"
else
  for name in "${remaining[@]}"; do
    read -r size avail < <(df -P -B1 "$DIR" | awk 'NR == 2 { print $2, $4 }')
    ((avail < floor)) || break
    protected "$name" && continue
    delete "$name"
    log "deleted $name ($why)"
    deleted=$((deleted + 1))
  done
fi
# An index whose pcap is gone (written while its pcap was being deleted) goes too.
shopt -s nullglob
for suffix in "$INDEX_SUFFIX" "$INDEX_FAILED_SUFFIX"; do
  for idx in "$DIR"/*"$suffix"; do
    [ -e "${idx%"$suffix"}" ] || rm -f -- "$idx"
  done
done
log "done: $deleted file(s) deleted, $(( ${#files[@]} - deleted )) kept"
