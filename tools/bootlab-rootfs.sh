#!/usr/bin/env bash
# bootlab-rootfs: build (once) the Debian bookworm root file system that
# tests/bootlab/ boots with systemd as PID 1.
#
#   tools/bootlab-rootfs.sh [CACHE_DIR]           build if needed, print the rootfs path
#   tools/bootlab-rootfs.sh --check [CACHE_DIR]   print the path and exit 0 if already built, else exit 1
#
# The tree is cached in CACHE_DIR/<key> (default /var/cache/mirrorcap-bootlab):
# the key is derived from the suite, the variant, the package list (with
# $BOOTLAB_EXTRA_PACKAGES) and LAYOUT (bump it when the customization below
# changes), so changing any of them builds a new tree beside the old one.
# A build goes to a temporary directory that is renamed to <key> only once
# complete: an interrupted build never leaves a half cache (its leftovers are
# deleted by the next run). Concurrent runs wait for each other (flock).
# Progress goes to stderr; stdout gets the rootfs path only. Downloaded .debs
# stay in CACHE_DIR/debs (a rebuild downloads only what changed); trees of
# other keys are never deleted: rm -rf CACHE_DIR reclaims the space.
#
# Exit status: 0 ok; 1 --check and not built; 3 a tool or privilege is missing
# (the one-line message names it); 4 debootstrap failed (network, mirror, ...).
set -euo pipefail

SUITE=bookworm
VARIANT=minbase   # required + apt only, then exactly the packages below (no Recommends)
LAYOUT=2          # bump when the tree changes other than by the package list (customization below)
MIRROR=${BOOTLAB_MIRROR:-http://deb.debian.org/debian}
# What a mirrorcap capture host runs (tcpdump, iproute2, xfsprogs, curl, python3, ...),
# systemd as init (systemd-sysv: /sbin/init, reboot, ...) with dbus as on a stock host,
# passwd for groupadd/useradd (the bake creates the capture user), and the AWS CLI
# (awscli: v2, as on Amazon Linux 2023) with the CA store for the archive's uploads.
PACKAGES=(systemd systemd-sysv dbus tcpdump iproute2 xfsprogs util-linux mount curl python3 procps passwd)
# Installed with apt in the finished tree: debootstrap cannot configure awscli's
# Python dependencies (python3-cryptography) in its own pass.
# python3-certifi: Debian's returns the system store, which the AWS CLI then trusts.
# tshark (with mergecap): Wireshark's command-line tools, as the bake installs them on
# Amazon Linux 2023 (wireshark-cli): mirrorcap-window runs them on the host.
# python3-numpy: the packet indexer's fast walk, as the bake installs it (python3-numpy).
APT_PACKAGES=(awscli ca-certificates python3-certifi tshark python3-numpy)
# shellcheck disable=SC2206
EXTRA=(${BOOTLAB_EXTRA_PACKAGES:-})

msg() { echo "bootlab-rootfs: $*" >&2; }
die() { local rc=$1; shift; echo "bootlab-rootfs: $*" >&2; exit "$rc"; }

check_only=0
if [ "${1:-}" = --check ]; then check_only=1; shift; fi
CACHE=${1:-/var/cache/mirrorcap-bootlab}

mapfile -t all < <(printf '%s\n' "${PACKAGES[@]}" "${EXTRA[@]}" | sort -u)
key_src="suite=$SUITE variant=$VARIANT layout=$LAYOUT packages=${all[*]} apt=${APT_PACKAGES[*]}"
key="$SUITE-$VARIANT-$(printf '%s' "$key_src" | sha256sum | cut -c1-12)"
final="$CACHE/$key"

if [ -d "$final" ]; then
  [ "$check_only" = 1 ] || msg "cached: $final"
  echo "$final"
  exit 0
fi
[ "$check_only" = 0 ] || exit 1

[ "$(id -u)" -eq 0 ] || die 3 "must run as root (debootstrap, chroot)"
PATH=$PATH:/usr/sbin:/sbin
command -v debootstrap >/dev/null 2>&1 || die 3 "debootstrap not found: apt-get install debootstrap"
command -v flock >/dev/null 2>&1 || die 3 "flock not found: apt-get install util-linux"

mkdir -p "$CACHE/debs"
exec 9>"$CACHE/.lock-$key"
if ! flock -n 9; then
  msg "another build of $key is running: waiting for it"
  flock 9
fi
if [ -d "$final" ]; then  # built by the run we waited for
  msg "cached: $final"
  echo "$final"
  exit 0
fi

# Unmount whatever debootstrap left mounted under a directory (proc, sys, a
# /dev bind in some setups), deepest first, then delete it without ever
# leaving that file system: never recurse into a host /dev or /proc.
discard() {
  local dir=$1 m
  [ -e "$dir" ] || return 0
  while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done < <(awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts | sort -r)
  rm -rf --one-file-system -- "$dir"
}

# Leftovers of interrupted builds (we hold the lock: nobody else is building this key).
for old in "$CACHE"/.build-"$key".*; do
  [ -d "$old" ] || continue  # not the log
  msg "removing the leftovers of an interrupted build: $old"
  discard "$old"
done

tmp=$(mktemp -d "$CACHE/.build-$key.XXXXXX")
chmod 0755 "$tmp"  # the root directory of the tree (mktemp makes it 0700)
trap 'discard "$tmp"' EXIT
trap 'exit 130' INT TERM HUP

start=$(date +%s)
msg "building $SUITE ($VARIANT) into $tmp: ${all[*]}"
msg "this takes a minute or two; the result is cached in $final"
include=$(IFS=,; echo "${all[*]}")
log="$CACHE/.build-$key.log"
if ! debootstrap --variant="$VARIANT" --components=main --include="$include" \
      --cache-dir="$CACHE/debs" "$SUITE" "$tmp" "$MIRROR" 2>&1 |
    tee "$log" | while IFS= read -r line; do
      case $line in I:\ Retrieving* | I:\ Validating*) ;; *) msg "debootstrap: $line" ;; esac
    done; then
  die 4 "debootstrap failed (see $log): $(grep -E '^(E|W):' "$log" | tail -1)"
fi
[ -x "$tmp/lib/systemd/systemd" ] || die 4 "debootstrap finished but $tmp/lib/systemd/systemd is missing (see $log)"
msg "apt-get install ${APT_PACKAGES[*]}"
mount -t proc proc "$tmp/proc"
if ! chroot "$tmp" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
      sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@"' sh "${APT_PACKAGES[@]}" >>"$log" 2>&1; then
  umount "$tmp/proc"
  die 4 "apt-get install ${APT_PACKAGES[*]} in the tree failed (see $log): $(tail -1 "$log")"
fi
umount "$tmp/proc"
rm -rf "$tmp/var/lib/apt/lists/"*

# --- Customization: every change to the stock debootstrap result is here. ---
msg "customizing"
# 1. Downloaded .debs are not part of an installed system (apt-get clean).
find "$tmp/var/cache/apt/archives" -maxdepth 1 -type f -name '*.deb' -delete
# 2. debootstrap copies the build host's /etc/hostname and /etc/resolv.conf; an
#    image does not carry them. Without /etc/hostname systemd keeps the hostname
#    the lab gives each machine (its UTS namespace); no DNS is reachable anyway.
rm -f "$tmp/etc/hostname" "$tmp/etc/resolv.conf"
# 3. An empty machine ID, as in a cloud image: each lab machine generates its own
#    on its first boot and keeps it (its own journal directory), instead of all
#    machines sharing the one made at build time. (An empty file is not "first
#    boot" to systemd 252: ConditionFirstBoot= units such as systemd-firstboot,
#    which would prompt on the console, do not run.)
: > "$tmp/etc/machine-id"
rm -f "$tmp/var/lib/dbus/machine-id"
# Nothing is masked and no password is set: the lab enters the machine with
# nsenter, and units that make no sense in a container skip themselves there.
# --- end of customization ---

printf '%s\n' "${all[@]}" "${APT_PACKAGES[@]}" > "$CACHE/$key.packages"
mv -T "$tmp" "$final"
trap - EXIT
msg "done in $(($(date +%s) - start)) s: $final ($(du -sh --one-file-system "$final" | cut -f1))"
echo "$final"
