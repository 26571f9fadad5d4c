# mirrorcap-lib.sh: what the host's shell scripts share; sourced, never run.
# Installed as /usr/local/lib/mirrorcap/mirrorcap-lib.sh: reads the env file, names
# the script in its messages, and keeps its status for mirrorcap-health.
# shellcheck shell=bash disable=SC2034  # its variables are the sourcing script's
ENV_FILE=/etc/mirrorcap/mirrorcap.env
# shellcheck source=/dev/null
. "$ENV_FILE"
ME=${0##*/}
ME=${ME%.sh}
ME=mirrorcap-${ME#mirrorcap-}
# Every refusal says what to fix, then how to start capturing again: the target
# starts whatever part of the capture is not running.
AGAIN="then: systemctl start mirrorcap.target"
IMDS=http://169.254.169.254
# A pcap's packet index beside it (NAME + INDEX_SUFFIX), or why it could not be written
# (NAME + INDEX_FAILED_SUFFIX): mirrorcap_host's suffixes, spelled here for the shell scripts.
INDEX_SUFFIX=.idx.json.gz
INDEX_FAILED_SUFFIX=.idx-failed
since=$(date +%s)

say() { echo "$ME: $*"; }

# status STATE DETAIL: /run/mirrorcap/<script>.json, what it waits for or why it
# failed, for mirrorcap-health (root's scripts only; quotes dropped from the detail).
status() {
  [ "$(id -u)" = 0 ] || return 0
  local file=/run/mirrorcap/${ME#mirrorcap-}.json
  install -d -m 0755 /run/mirrorcap
  printf '{"state": "%s", "since": %s, "detail": "%s"}\n' "$1" "$since" "${2//[\"\\]/}" >"$file.tmp"
  mv -f "$file.tmp" "$file"
}

die() {
  echo "$ME: $*" >&2
  status failed "$*"
  exit 1
}

# waiting STATE DETAIL: said now, then once a minute while it lasts (and when it changes).
waiting() {
  if [ "$1:$2" != "${last_wait:-}" ] || ((SECONDS >= ${next_wait:-0})); then
    say "$2"
    status "$1" "$2"
    last_wait="$1:$2"
    next_wait=$((SECONDS + 60))
  fi
}

# imds PATH: IMDSv2 into $imds_out (a token taken again before it expires); on
# failure, curl's complaint is in $imds_error. Not in $(...): its variables must stay.
imds() {
  local out
  if [ -z "${imds_token:-}" ] || ((SECONDS >= ${imds_token_until:-0})); then
    out=$(curl -fsS --max-time 2 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 300" "$IMDS/latest/api/token" 2>&1) || {
      imds_error="the token request failed: ${out:0:200}" imds_token=""
      return 1
    }
    imds_token=$out imds_token_until=$((SECONDS + 240))
  fi
  out=$(curl -fsS --max-time 2 -H "X-aws-ec2-metadata-token: $imds_token" "$IMDS/latest/meta-data/$1" 2>&1) || {
    imds_error="GET $1 failed: ${out:0:200}"
    return 1
  }
  imds_out=$out
}
